"""SUN RGB-D (Song et al., CVPR 2015) for 37-class segmentation, RGB only (paper Sec. 4.2).

    ROOT/{train,test}/image/NAME.{jpg,png}   RGB images (sizes vary across sensors)
    ROOT/{train,test}/label/NAME.png         uint8/uint16 labels: 0 = void, 1..37 = classes
    ROOT/{split}.txt (optional)              "IMAGE LABEL" per line, as CamVid's list files

Images and labels are matched by file stem. A list file's paths may be absolute (the authors'
machine) or relative; each is resolved against ROOT by its longest tail that exists there
(``train/image/X.jpg``, then ``image/X.jpg``, then ``X.jpg``).

Raw label 0 (unlabelled) becomes void (255) and classes 1..37 become 0..36 -- the usual
convention, so a model's K = 37 outputs are the 37 classes. Raw 255 is also read as void.

SUN RGB-D has no validation split (5,285 train / 5,050 test): ``split="val"`` uses ROOT/val/
or val.txt when present, otherwise the test split (with a warning) -- model selection on test,
as was common practice for this dataset, but say so when you report numbers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, SegNetError
from .base import SPLITS, DatasetInfo, PairedFileDataset
from .classes import SUNRGBD_CLASSES
from .folder import DEFAULT_VOID, default_palette
from .io import check_pair, list_images, read_image, read_mask
from .lists import read_list_file

SUNRGBD_INFO = DatasetInfo(
    class_names=SUNRGBD_CLASSES,
    palette=default_palette(len(SUNRGBD_CLASSES)),
    ignore_index=DEFAULT_VOID,
)
RAW_VOID = 0
NUM_RAW = len(SUNRGBD_CLASSES) + 1  # raw values 0..37

# raw label -> training label: 0 -> void, c -> c - 1, 255 (padding some converters use) -> void
_LOOKUP = np.full(256, DEFAULT_VOID, dtype=np.uint8)
_LOOKUP[1:NUM_RAW] = np.arange(NUM_RAW - 1, dtype=np.uint8)


def _folder_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    images_dir, labels_dir = root / split / "image", root / split / "label"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise ArgumentError(
                "data", f"{root}: no {split}.txt and no folder {folder} (SUN RGB-D layout)"
            )
    labels = {p.stem: p for p in list_images(labels_dir)}
    pairs = []
    for image in list_images(images_dir):
        if image.stem not in labels:
            raise SegNetError(f"{image}: no label named {image.stem}.png in {labels_dir}")
        pairs.append((image, labels[image.stem]))
    return pairs


def sunrgbd_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, label) paths of a split: list file first, then the folders; val falls back to test."""
    if split not in SPLITS:
        raise ArgumentError("split", f"must be one of {', '.join(SPLITS)}, got {split!r}")
    has_split = (root / f"{split}.txt").is_file() or (root / split).is_dir()
    if split == "val" and not has_split:
        warnings.warn(
            f"{root}: SUN RGB-D has no val split; using test for validation", stacklevel=3
        )
        split = "test"
    listing = root / f"{split}.txt"
    pairs = read_list_file(listing, root) if listing.is_file() else _folder_pairs(root, split)
    if not pairs:
        raise ArgumentError("data", f"{root}: the {split} split is empty")
    return pairs


class SUNRGBD(PairedFileDataset):
    info = SUNRGBD_INFO

    def find_pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:
        return sunrgbd_pairs(root, split)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        image, raw = read_image(image_path), read_mask(label_path)
        bad = np.unique(raw[(raw >= NUM_RAW) & (raw != 255)])
        if bad.size:
            raise SegNetError(
                f"{label_path}: raw label values {bad[:5].tolist()} outside 0..{NUM_RAW - 1} "
                "(SUN RGB-D 37-class labels: 0 = void, 1..37 = classes)"
            )
        mask = _LOOKUP[raw]
        check_pair(image, mask, num_classes=self.info.num_classes, ignore_index=self.info.ignore_index,
                   mask_path=label_path)  # fmt: skip
        return image, mask
