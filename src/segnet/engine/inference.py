"""Class probabilities for a batch of images: one deterministic pass, or Monte-Carlo dropout
samples (Bayesian SegNet, Kendall et al. 2015) -- the one place either is computed, for
``evaluate``, ``predict`` and the demo alike."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..deploy.optimize import InferenceModel
from ..deploy.runtime import autocast
from ..models import set_mc_dropout


class Probabilities(NamedTuple):
    mean: Tensor  # (N, K, H, W) softmax, averaged over the samples
    uncertainty: Tensor | None  # (N, H, W) per-class variance of the samples, mean over classes


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
) -> Probabilities:
    """(N, 3, H, W) normalised images -> softmax probabilities (and, with ``mc_samples`` > 0,
    the Bayesian SegNet uncertainty: the variance of the sampled softmax per class, averaged
    over classes; the prediction is the argmax of the mean, as in the paper)."""
    images = images.to(device)
    if device.type == "cpu" or precision != "fp32":
        images = images.contiguous(memory_format=torch.channels_last)
    # An optimized model already runs in its own precision: no autocast around it.
    optimized = isinstance(model, InferenceModel)
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
