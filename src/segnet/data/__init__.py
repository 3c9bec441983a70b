"""Datasets: CamVid (authors' layout), SUN RGB-D, your own folders, and procedurally generated
road scenes."""

from __future__ import annotations

from pathlib import Path

from ..errors import SegNetError
from .base import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, SegmentationDataset, normalize
from .camvid import CAMVID_INFO, CamVid
from .folder import FolderDataset, folder_info
from .sunrgbd import SUNRGBD, SUNRGBD_INFO

__all__ = [
    "CAMVID_INFO",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SUNRGBD",
    "SUNRGBD_INFO",
    "CamVid",
    "DatasetInfo",
    "FolderDataset",
    "SegmentationDataset",
    "normalize",
    "open_dataset",
]  # fmt: skip


def open_dataset(
    kind: str,
    *,
    root: str | Path | None,
    split: str,
    num_classes: int | None = None,
    palette: str | Path | None = None,
    synthetic_images: int = 96,
    synthetic_size: tuple[int, int] = (96, 128),
    seed: int = 0,
) -> SegmentationDataset:
    """One split of a dataset by kind: ``camvid``, ``sunrgbd``, ``folder`` or ``synthetic``."""
    if kind == "camvid":
        return CamVid(root, split=split)
    if kind == "sunrgbd":
        return SUNRGBD(root, split=split)
    if kind == "folder":
        root = Path(root)
        if not root.is_dir():
            raise SegNetError(f"--data {root}: folder not found")
        info = folder_info(
            root, num_classes=num_classes, palette_file=Path(palette) if palette else None
        )
        return FolderDataset(root, split=split, info=info)
    if kind == "synthetic":
        from .synthetic import SyntheticRoadScenes

        # val/test scenes come from other seeds than train: never the same images.
        offset = {"train": 0, "val": 1, "test": 2}[split]
        count = synthetic_images if split == "train" else max(8, synthetic_images // 4)
        height, width = synthetic_size
        return SyntheticRoadScenes(
            num_images=count, height=height, width=width, seed=seed * 10 + offset
        )
    raise SegNetError(f"--dataset must be camvid, sunrgbd, folder or synthetic, got {kind!r}")
