"""Class probabilities for a batch of images: one deterministic pass, or Monte-Carlo dropout
samples (Bayesian SegNet, Kendall et al. 2015), optionally averaged over test-time views
(mirror, scales) and optionally computed tile by tile (sliding windows for large images) --
the one place any of these is computed, for ``evaluate``, ``predict`` and the demo alike."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..deploy.optimize import OptimizedModel
from ..deploy.runtime import autocast
from ..errors import ArgumentError
from ..models import set_mc_dropout


class Probabilities(NamedTuple):
    mean: Tensor  # (N, K, H, W) softmax, averaged over the samples
    uncertainty: Tensor | None  # (N, H, W) per-class variance of the samples, mean over classes


@dataclass(frozen=True)
class TestTimeAugmentation:
    """Views whose softmax is averaged: each scale (the image resized by it, the probabilities
    resized back), and with ``flip`` each also mirrored left-right. The default is the single
    forward pass the paper evaluates; views cost one forward pass each."""

    __test__ = False  # a library class, not a pytest test class
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if not self.scales or any(not 0.25 <= s <= 4.0 for s in self.scales):
            raise ArgumentError("tta_scales", f"must be between 0.25 and 4, got {self.scales}")

    @property
    def num_views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def views(self) -> Iterator[tuple[float, bool]]:
        for scale in self.scales:
            yield scale, False
            if self.flip:
                yield scale, True


SINGLE_PASS = TestTimeAugmentation()


TILE_OVERLAP = 32  # default pixels neighbouring tiles share (CLI --tile-overlap)


@dataclass(frozen=True)
class Tiling:
    """Sliding-window inference: each image (each test-time view) is cut into overlapping
    ``size`` = (height, width) tiles, neighbours sharing at least ``overlap`` pixels; every
    tile runs on its own and the class probabilities are blended back. Across an overlap each
    tile's weight falls linearly towards its edge, so the tile that saw more context around a
    pixel counts more. Peak memory follows the tile, not the image; all tiles share one shape
    (engines compile it once). ``size=None``: the whole image in one pass (the default)."""

    size: tuple[int, int] | None = None
    overlap: int = TILE_OVERLAP

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ArgumentError("tile", f"must be HxW with positive integers, got {self.size}")
        if self.overlap < 0:
            raise ArgumentError("tile_overlap", f"must be >= 0, got {self.overlap}")
        if self.size is not None and self.overlap >= min(self.size):
            raise ArgumentError(
                "tile_overlap", f"must be smaller than the tile {self.size}, got {self.overlap}"
            )

    def describe(self) -> dict:
        """How images are run, for metrics files and the server's info: tile (H, W) and
        overlap, both None for the whole image."""
        whole = self.size is None
        return {
            "tile": None if whole else list(self.size),
            "tile_overlap": None if whole else self.overlap,
        }

    def windows(self, height: int, width: int) -> list[tuple[slice, slice]]:
        """(rows, columns) of every tile of an image of this size, row-major."""
        assert self.size is not None
        rows = tile_starts(height, self.size[0], self.overlap)
        columns = tile_starts(width, self.size[1], self.overlap)
        th, tw = min(self.size[0], height), min(self.size[1], width)
        return [(slice(r, r + th), slice(c, c + tw)) for r in rows for c in columns]


WHOLE_IMAGE = Tiling()


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of the tiles along one axis: spread evenly from 0 to ``length - tile`` (the last
    tile ends at the image's edge, so every tile has the full size), no two neighbours more
    than ``tile - overlap`` apart. One tile when the image fits in it."""
    if length <= tile:
        return [0]
    gaps = math.ceil((length - tile) / (tile - overlap))
    return [i * (length - tile) // gaps for i in range(gaps + 1)]


def _edge_ramp(start: int, size: int, length: int, overlap: int) -> Tensor:
    """(size,) blend weights of one tile along one axis: 1 inside, falling linearly over
    ``overlap`` pixels at each side that borders another tile (never 0: the image's own edges
    and an overlap of 0 keep weight 1)."""
    weights = torch.ones(size)
    ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
    if overlap and start > 0:
        weights[:overlap] = ramp
    if overlap and start + size < length:
        weights[-overlap:] = torch.minimum(weights[-overlap:], ramp.flip(0))
    return weights


@contextlib.contextmanager
def monte_carlo_dropout(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Dropout sampling on (BN stays in eval mode) for the block, off again after it."""
    if enabled:
        set_mc_dropout(model, True)
    try:
        yield
    finally:
        if enabled:
            set_mc_dropout(model, False)


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    images: Tensor,
    *,
    device: torch.device,
    precision: str = "fp32",
    mc_samples: int = 0,
    tta: TestTimeAugmentation = SINGLE_PASS,
    tiling: Tiling = WHOLE_IMAGE,
) -> Probabilities:
    """(N, 3, H, W) normalised images -> softmax probabilities (and, with ``mc_samples`` > 0,
    the Bayesian SegNet uncertainty: the variance of the sampled softmax per class, averaged
    over classes; the prediction is the argmax of the mean, as in the paper). With ``tta``,
    both are the mean over its views; with ``tiling``, each view is run tile by tile."""
    images = images.to(device)  # views are resized and mirrored where the model runs
    size = images.shape[-2:]
    mean = uncertainty = None
    for scale, flip in tta.views():
        view = images.flip(-1) if flip else images
        if scale != 1.0:
            view = F.interpolate(view, scale_factor=scale, mode="bilinear", align_corners=False)
        probs = _sampled(
            model, view, device=device, precision=precision, mc_samples=mc_samples, tiling=tiling
        )
        p, u = probs.mean, probs.uncertainty  # (N, K, h, w), (N, h, w)
        if scale != 1.0:  # back to the input's (H, W)
            p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            u = None if u is None else F.interpolate(u[:, None], size=size, mode="bilinear")[:, 0]
        if flip:
            p, u = p.flip(-1), None if u is None else u.flip(-1)
        mean = p if mean is None else mean + p
        if u is not None:
            uncertainty = u if uncertainty is None else uncertainty + u
    views = tta.num_views
    return Probabilities(mean / views, None if uncertainty is None else uncertainty / views)


def _sampled(
    model: nn.Module,
    images: Tensor,
    *,
    device: torch.device,
    precision: str,
    mc_samples: int,
    tiling: Tiling = WHOLE_IMAGE,
) -> Probabilities:
    """One view: a deterministic pass, or the mean and variance of ``mc_samples`` passes."""
    images = images.to(device)
    if device.type == "cpu" or precision != "fp32":
        images = images.contiguous(memory_format=torch.channels_last)
    # An optimized model already runs in its own precision: no autocast around it.
    optimized = isinstance(model, OptimizedModel)
    samples = max(1, mc_samples)
    total = squares = None
    with monte_carlo_dropout(model, mc_samples > 0):
        for _ in range(samples):
            with contextlib.nullcontext() if optimized else autocast(device, precision):
                p = _softmax(model, images, tiling)  # (N, K, H, W)
            total = p if total is None else total + p
            if mc_samples:
                squares = p.square() if squares is None else squares + p.square()
    mean = total / samples
    if not mc_samples:
        return Probabilities(mean, None)
    variance = (squares / samples - mean.square()).clamp_(min=0)  # E[p^2] - E[p]^2
    return Probabilities(mean, variance.mean(dim=1))


def _softmax(model: nn.Module, images: Tensor, tiling: Tiling) -> Tensor:
    """(N, 3, H, W) -> (N, K, H, W) softmax, in one pass or blended from tiles."""
    if tiling.size is None:
        return model(images).float().softmax(dim=1)
    height, width = images.shape[-2:]
    total = weight = None
    for rows, columns in tiling.windows(height, width):
        tile = images[:, :, rows, columns].contiguous(memory_format=_format(images))
        p = model(tile).float().softmax(dim=1)  # (N, K, h, w)
        w = torch.outer(
            _edge_ramp(rows.start, rows.stop - rows.start, height, tiling.overlap),
            _edge_ramp(columns.start, columns.stop - columns.start, width, tiling.overlap),
        ).to(p.device)  # (h, w)
        if total is None:
            total = p.new_zeros(*p.shape[:2], height, width)
            weight = p.new_zeros(height, width)
        total[:, :, rows, columns] += p * w
        weight[rows, columns] += w
    return total / weight  # every pixel is covered by at least one tile: weight > 0


def _format(images: Tensor) -> torch.memory_format:
    channels_last = images.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format
