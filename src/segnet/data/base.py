"""Dataset contract shared by every source (CamVid, folders, the synthetic demo scenes).

A dataset yields ``(image, mask)``: after its ``transform`` these are ``image`` float32
(3, H, W), normalised with :data:`IMAGENET_MEAN`/:data:`IMAGENET_STD`, and ``mask`` int64
(H, W) with values 0..K-1 or ``ignore_index`` (void). ``load(i)`` gives the raw sample --
uint8 RGB (H, W, 3) and uint8 labels (H, W) -- already checked (sizes match, labels valid).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ArgumentError

# Inputs are normalised as the ImageNet-trained VGG/ResNet encoders expect; every checkpoint
# records these so predict/export normalise the same way.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SPLITS = ("train", "val", "test")  # every dataset's split names (SUN RGB-D's val may be test)

Transform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model trained on a dataset needs to know about it (stored in checkpoints)."""

    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class SegmentationDataset(Dataset):
    """Base class: subclasses set ``info`` and ``names`` and implement ``load``."""

    info: DatasetInfo
    names: Sequence[str]  # one per sample (file stem), used for output file names

    def __init__(self, *, transform: Transform | None = None) -> None:
        self.transform = transform

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (H, W, 3) uint8 image and (H, W) uint8 labels of sample ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.load(index)
        transform = self.transform or to_tensors
        return transform(image, mask)


class PairedFileDataset(SegmentationDataset):
    """A dataset of (image file, label file) pairs found under ``root`` for a split."""

    def __init__(
        self, root: str | Path | None, *, split: str, transform: Transform | None = None
    ) -> None:
        super().__init__(transform=transform)
        if root is None:
            raise ArgumentError(
                "data", f"ROOT is required for this dataset ({type(self).__name__})"
            )
        self.root = Path(root)
        if not self.root.is_dir():
            raise ArgumentError("data", f"{self.root}: folder not found")
        self.pairs = self.find_pairs(self.root, split)
        self.names = [image.stem for image, _ in self.pairs]

    def find_pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:
        raise NotImplementedError


def to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (H, W, 3), (H, W) -> normalised float32 (3, H, W) and int64 (H, W)."""
    # np.array copies: inputs may be read-only views (PIL buffers, flipped slices).
    return normalize(torch.from_numpy(np.array(image))), torch.from_numpy(np.array(mask)).long()


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, 3) or (N, H, W, 3) -> float32 channels-first, ImageNet-normalised."""
    return standardize(image.float().div_(255.0).movedim(-1, -3))


def standardize(image: torch.Tensor) -> torch.Tensor:
    """Float channels-first (..., 3, H, W) in [0, 1] -> ImageNet-normalised, on its device."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return (image - mean) / std
