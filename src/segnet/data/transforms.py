"""Joint image/mask augmentation for training. Labels are only ever resampled by nearest
neighbour (never interpolated), and padding uses the void label so it is never scored.

Photometric jitter (brightness, contrast, saturation, hue, gamma) changes the image alone: road
scenes are filmed at other times of day and by other cameras (CamVid's test split holds dusk
frames of one drive and a drive not in training), and a model that keys on exact colours does
not carry over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .base import SegmentationDataset, to_tensors

# ITU-R BT.601 luma, and the YIQ chroma plane in which a hue shift is a rotation.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


@dataclass(frozen=True)
class Photometric:
    """Random colour changes of the image; each strength 0 turns that change off.

    ``brightness``, ``contrast``, ``saturation``: factors drawn from [1 - s, 1 + s] (contrast
    about the image's mean luma, saturation about each pixel's luma); ``hue``: a rotation of the
    chroma plane by up to ``hue`` turns (0.5 = 180 degrees); ``gamma``: exponent drawn from
    [1 / (1 + g), 1 + g] on [0, 1] intensities (g = 0.5: 0.67..1.5, darker or brighter
    mid-tones, as dusk).
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    gamma: float = 0.0

    @property
    def active(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation, self.hue, self.gamma))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W, 3) uint8; the draws happen in a fixed order."""
        x = image.astype(np.float32) / 255.0
        factors = rng.uniform(-1, 1, size=5)  # one draw each, whether used or not
        x = x * (1 + self.brightness * factors[0])
        mean = float((x @ _LUMA).mean())
        x = (x - mean) * (1 + self.contrast * factors[1]) + mean
        gray = (x @ _LUMA)[..., None]
        x = (x - gray) * (1 + self.saturation * factors[2]) + gray
        if self.hue:
            angle = 2 * np.pi * self.hue * factors[3]
            c, s = np.cos(angle), np.sin(angle)
            rotate = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float32)
            x = x @ (_YIQ_TO_RGB @ rotate @ _RGB_TO_YIQ).T
        if self.gamma:
            low = 1 / (1 + self.gamma)
            exponent = low + (1 + self.gamma - low) * (factors[4] + 1) / 2
            x = np.clip(x, 0, 1) ** exponent
        return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Augment:
    """Random horizontal flip, scale jitter, crop and photometric jitter (all optional)."""

    crop_size: tuple[int, int] | None = None  # (H, W); None keeps the whole (scaled) image
    scale_range: tuple[float, float] = (1.0, 1.0)
    hflip: bool = True
    ignore_index: int = 255
    photometric: Photometric = Photometric()

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
        if self.photometric.active:  # after the crop: fewer pixels to recolour
            image = self.photometric(image, rng)
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


class PadCollate:
    """Batches samples of different sizes by padding each to the batch's largest height and
    width at the bottom/right: images with 0 (the mean colour, after normalisation), masks with
    the void label, so padding is never scored or learned from. Same-size batches are stacked
    as they are."""

    def __init__(self, *, ignore_index: int) -> None:
        self.ignore_index = ignore_index

    def __call__(
        self, samples: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        height = max(image.shape[-2] for image, _ in samples)
        width = max(image.shape[-1] for image, _ in samples)
        images = torch.zeros(len(samples), samples[0][0].shape[0], height, width)  # (N, 3, H, W)
        masks = torch.full((len(samples), height, width), self.ignore_index, dtype=torch.long)
        for i, (image, mask) in enumerate(samples):
            images[i, :, : image.shape[-2], : image.shape[-1]] = image
            masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
        return images, masks
