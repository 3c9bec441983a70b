"""Class probabilities for a batch of images: one deterministic pass, or Monte-Carlo dropout
samples (Bayesian SegNet, Kendall et al. 2015), optionally averaged over test-time views
(mirror, scales) -- the one place any of these is computed, for ``evaluate``, ``predict`` and
the demo alike."""

from __future__ import annotations

import contextlib
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
) -> Probabilities:
    """(N, 3, H, W) normalised images -> softmax probabilities (and, with ``mc_samples`` > 0,
    the Bayesian SegNet uncertainty: the variance of the sampled softmax per class, averaged
    over classes; the prediction is the argmax of the mean, as in the paper). With ``tta``,
    both are the mean over its views."""
    images = images.to(device)  # views are resized and mirrored where the model runs
    size = images.shape[-2:]
    mean = uncertainty = None
    for scale, flip in tta.views():
        view = images.flip(-1) if flip else images
        if scale != 1.0:
            view = F.interpolate(view, scale_factor=scale, mode="bilinear", align_corners=False)
        probs = _sampled(model, view, device=device, precision=precision, mc_samples=mc_samples)
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
    model: nn.Module, images: Tensor, *, device: torch.device, precision: str, mc_samples: int
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
                p = model(images).float().softmax(dim=1)  # (N, K, H, W)
            total = p if total is None else total + p
            if mc_samples:
                squares = p.square() if squares is None else squares + p.square()
    mean = total / samples
    if not mc_samples:
        return Probabilities(mean, None)
    variance = (squares / samples - mean.square()).clamp_(min=0)  # E[p^2] - E[p]^2
    return Probabilities(mean, variance.mean(dim=1))
