"""Joint image/mask augmentation for training. Labels are only ever resampled by nearest
neighbour (never interpolated), and padding uses the void label so it is never scored."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .base import SegmentationDataset, to_tensors


@dataclass(frozen=True)
class Augment:
    """Random horizontal flip, scale jitter and crop (all optional)."""

    crop_size: tuple[int, int] | None = None  # (H, W); None keeps the whole (scaled) image
    scale_range: tuple[float, float] = (1.0, 1.0)
    hflip: bool = True
    ignore_index: int = 255

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.hflip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        low, high = self.scale_range
        if (low, high) != (1.0, 1.0):
            scale = rng.uniform(low, high)
            h, w = mask.shape
            size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL wants (W, H)
            image = np.asarray(
                Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.BILINEAR)
            )
            mask = np.asarray(
                Image.fromarray(np.ascontiguousarray(mask)).resize(size, Image.NEAREST)
            )
        if self.crop_size is not None:
            image, mask = self._crop(image, mask, rng)
        return image, mask

    def _crop(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        ch, cw = self.crop_size
        h, w = mask.shape
        if h < ch or w < cw:  # pad bottom/right: black image, void labels
            ph, pw = max(ch - h, 0), max(cw - w, 0)
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
            mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=self.ignore_index)
            h, w = mask.shape
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        return image[top : top + ch, left : left + cw], mask[top : top + ch, left : left + cw]


class AugmentedDataset(Dataset):
    """Applies :class:`Augment` with randomness fixed by (seed, epoch, index): an epoch is
    reproducible whatever the worker count, which is what makes ``--resume`` exact."""

    def __init__(self, dataset: SegmentationDataset, augment: Augment, *, seed: int) -> None:
        self.dataset, self.augment, self.seed, self.epoch = dataset, augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, mask = self.augment(*self.dataset.load(index), rng)
        return to_tensors(image, mask)
