"""Joint image/mask augmentation for training, in torch on whatever device holds the sample.
Labels are only ever resampled by nearest neighbour (never interpolated), and padding uses the
void label so it is never scored.

Photometric jitter (brightness, contrast, saturation, hue, gamma) changes the image alone: road
scenes are filmed at other times of day and by other cameras (CamVid's test split holds dusk
frames of one drive and a drive not in training), and a model that keys on exact colours does
not carry over.

Where it runs: :class:`AugmentedDataset` decodes and augments each sample in the DataLoader's
worker processes (CPU); :class:`ResidentDataset` decodes the split once, keeps it on the
training device and augments there -- the same code on the same random draws, so a GPU run is
not held back by the CPU cores that feed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ArgumentError
from .base import DatasetInfo, SegmentationDataset, standardize

# ITU-R BT.601 luma, and the YIQ chroma plane in which a hue shift is a rotation.
_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float64
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


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

    def __call__(self, image: Tensor, rng: np.random.Generator) -> Tensor:
        """(3, H, W) float in [0, 1] -> the same, recoloured; the draws happen in a fixed order."""
        factors = rng.uniform(-1, 1, size=5)  # one draw each, whether used or not
        luma = image.new_tensor(_LUMA).view(3, 1, 1)
        x = image * (1 + self.brightness * factors[0])
        mean = (x * luma).sum(0).mean()
        x = (x - mean) * (1 + self.contrast * factors[1]) + mean
        gray = (x * luma).sum(0, keepdim=True)  # (1, H, W)
        x = (x - gray) * (1 + self.saturation * factors[2]) + gray
        if self.hue:
            angle = 2 * math.pi * self.hue * factors[3]
            c, s = math.cos(angle), math.sin(angle)
            rotate = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
            matrix = image.new_tensor(_YIQ_TO_RGB @ rotate @ _RGB_TO_YIQ)  # (3, 3)
            x = torch.einsum("ij,jhw->ihw", matrix, x)
        if self.gamma:
            low = 1 / (1 + self.gamma)
            exponent = low + (1 + self.gamma - low) * (factors[4] + 1) / 2
            x = x.clamp(0, 1) ** exponent
        return x.clamp(0, 1)


@dataclass(frozen=True)
class Augment:
    """Random horizontal flip, scale jitter, crop and photometric jitter (all optional).

    Takes a raw sample -- uint8 image (3, H, W) and uint8 labels (H, W), on any device -- and
    gives the training pair: the ImageNet-normalised float32 image and int64 labels.
    """

    crop_size: tuple[int, int] | None = None  # (H, W); None keeps the whole (scaled) image
    scale_range: tuple[float, float] = (1.0, 1.0)
    hflip: bool = True
    ignore_index: int = 255
    photometric: Photometric = Photometric()

    def __call__(
        self, image: Tensor, mask: Tensor, rng: np.random.Generator
    ) -> tuple[Tensor, Tensor]:
        x = image.float().div_(255.0)  # (3, H, W) in [0, 1]
        if self.hflip and rng.random() < 0.5:
            x, mask = x.flip(-1), mask.flip(-1)
        low, high = self.scale_range
        if (low, high) != (1.0, 1.0):
            scale = rng.uniform(low, high)
            h, w = mask.shape
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            # antialiased when shrinking, as PIL's bilinear resize
            x = F.interpolate(
                x[None], size=size, mode="bilinear", align_corners=False, antialias=True
            )[0].clamp_(0, 1)
            mask = _nearest(mask, size)
        if self.crop_size is not None:
            x, mask = self._crop(x, mask, rng)
        if self.photometric.active:  # after the crop: fewer pixels to recolour
            x = self.photometric(x, rng)
        return standardize(x), mask.long()

    def describe(self) -> str:
        """In words, e.g. "flips, 0.75-1.25x scale, 224x288 crops, colour jitter (brightness 0.3)"."""
        parts = []
        if self.hflip:
            parts.append("flips")
        if self.scale_range != (1.0, 1.0):
            parts.append("{:g}-{:g}x scale".format(*self.scale_range))
        if self.crop_size:
            parts.append("{}x{} crops".format(*self.crop_size))
        strengths = {f.name: getattr(self.photometric, f.name) for f in fields(Photometric)}
        jitter = ", ".join(f"{name} {value:g}" for name, value in strengths.items() if value)
        if jitter:
            parts.append(f"colour jitter ({jitter})")
        return ", ".join(parts) or "none"

    def _crop(self, image: Tensor, mask: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        ch, cw = self.crop_size
        h, w = mask.shape
        if h < ch or w < cw:  # pad bottom/right: black image, void labels
            ph, pw = max(ch - h, 0), max(cw - w, 0)
            image = F.pad(image, (0, pw, 0, ph))
            mask = F.pad(mask, (0, pw, 0, ph), value=self.ignore_index)
            h, w = mask.shape
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return image[:, top : top + ch, left : left + cw], mask[top : top + ch, left : left + cw]


def _nearest(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) labels resampled to ``size`` by nearest neighbour: output pixel i reads source
    floor((i + 0.5) * H / h), the centre rule of PIL's NEAREST resize. Never a new label."""
    rows, cols = (
        torch.arange(new, dtype=torch.float64, device=mask.device)
        .add_(0.5)
        .mul_(old / new)
        .long()
        .clamp_(max=old - 1)
        for old, new in zip(mask.shape, size)
    )
    return mask[rows][:, cols]


class AugmentedDataset(Dataset):
    """Applies :class:`Augment` with randomness fixed by (seed, epoch, index): an epoch is
    reproducible whatever the worker count, which is what makes ``--resume`` exact."""

    def __init__(self, dataset: SegmentationDataset, augment: Augment, *, seed: int) -> None:
        self.dataset, self.augment, self.seed, self.epoch = dataset, augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def info(self) -> DatasetInfo:  # the wrapped dataset's classes
        return self.dataset.info

    def __len__(self) -> int:
        return len(self.dataset)

    def raw(self, index: int) -> tuple[Tensor, Tensor]:
        """Sample ``index`` as decoded, before augmentation: uint8 image (3, H, W), uint8 labels (H, W)."""
        image, mask = self.dataset.load(index)
        image = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
        return image, torch.from_numpy(np.array(mask))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.augment(*self.raw(index), rng)


class ResidentDataset(AugmentedDataset):
    """:class:`AugmentedDataset` whose samples are decoded once and kept on ``device``, where
    each one is augmented: no decoding or recolouring on the CPU after the first read. Serve it
    from the main process (``num_workers=0``): the samples live on the training device."""

    def __init__(
        self, dataset: SegmentationDataset, augment: Augment, *, seed: int, device: torch.device
    ) -> None:
        super().__init__(dataset, augment, seed=seed)
        first = super().raw(0)
        need = sum(t.numel() for t in first) * len(dataset)  # bytes, uint8
        free = _free_bytes(device)
        if free is not None and need > 0.8 * free:
            raise ArgumentError(
                "device_augment",
                f"the {len(dataset)} training images need about {need / 1e6:,.0f} MB on {device}, "
                f"which has {free / 1e6:,.0f} MB free: train without it",
            )
        self.samples = []
        for index in range(len(dataset)):
            image, mask = first if index == 0 else super().raw(index)
            self.samples.append((image.to(device), mask.to(device)))

    def raw(self, index: int) -> tuple[Tensor, Tensor]:
        return self.samples[index]


def _free_bytes(device: torch.device) -> int | None:
    """Free memory where the samples would live: the GPU's, or the machine's available RAM
    (MemAvailable: free pages plus the page cache the kernel can reclaim); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:  # not Linux: no cheap answer
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # kB
    return None


class PadCollate:
    """Batches samples of different sizes by padding each to the batch's largest height and
    width at the bottom/right: images with 0 (the mean colour, after normalisation), masks with
    the void label, so padding is never scored or learned from. Same-size batches are stacked
    as they are. The batch is made where the samples are."""

    def __init__(self, *, ignore_index: int) -> None:
        self.ignore_index = ignore_index

    def __call__(self, samples: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        height = max(image.shape[-2] for image, _ in samples)
        width = max(image.shape[-1] for image, _ in samples)
        first_image, first_mask = samples[0]
        images = first_image.new_zeros(len(samples), first_image.shape[0], height, width)
        masks = first_mask.new_full((len(samples), height, width), self.ignore_index)
        for i, (image, mask) in enumerate(samples):
            images[i, :, : image.shape[-2], : image.shape[-1]] = image  # (N, 3, H, W)
            masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
        return images, masks
