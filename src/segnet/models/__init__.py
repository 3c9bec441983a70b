"""Model registry: ``build_model(name, *, num_classes, in_channels=3, **options)``.

Every registered builder is keyword-only and returns an ``nn.Module`` mapping images
(N, in_channels, H, W) to logits (N, num_classes, H, W) for any H, W >= 32. What else is known
of a model (its paper learning rate, its ImageNet encoder, its plain-SegNet twin) is its
:class:`ModelEntry`, declared next to the builder.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

from ..errors import ArgumentError
from .comparison import COMPARISON_MODELS
from .registry import ModelEntry
from .segnet import SEGNET_MODELS
from .variants import VARIANT_MODELS

__all__ = [
    "MODELS",
    "ModelEntry",
    "build_model",
    "count_parameters",
    "has_dropout",
    "list_models",
    "model_entry",
    "set_mc_dropout",
]

MODELS: dict[str, ModelEntry] = {
    **SEGNET_MODELS,  # SegNet, SegNet-Basic and their Bayesian versions
    **VARIANT_MODELS,  # paper Table 1 decoder variants
    **COMPARISON_MODELS,  # paper Tables 3 and 6: FCN, DeepLab, DeconvNet; U-Net, ResNet-50
}


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. ``list_models("segnet*")``."""
    return sorted(name for name in MODELS if fnmatch.fnmatch(name, pattern))


def model_entry(name: str) -> ModelEntry:
    """The registry's facts about ``name``; an unknown name lists the valid ones."""
    if name not in MODELS:
        raise ArgumentError(
            "model", f"{name!r} is not registered; choose one of: {', '.join(list_models())}"
        )
    return MODELS[name]


def build_model(name: str, *, num_classes: int, in_channels: int = 3, **options: Any) -> nn.Module:
    """Builds a registered model; unknown names and options raise :class:`SegNetError`."""
    entry = model_entry(name)
    if num_classes < 1 or in_channels < 1:
        raise ArgumentError(
            "num_classes", f"and in_channels must be >= 1, got {num_classes}, {in_channels}"
        )
    try:
        return entry.builder(num_classes=num_classes, in_channels=in_channels, **options)
    except TypeError as error:  # an option the builder does not take
        raise ArgumentError("model", f"{name!r}: {error}") from None


def count_parameters(name: str, *, num_classes: int, in_channels: int = 3, **options: Any) -> int:
    """Parameters of a model without allocating them: built on the meta device, in milliseconds
    even for DeconvNet's 252M."""
    with torch.device("meta"):
        model = build_model(name, num_classes=num_classes, in_channels=in_channels, **options)
    return sum(p.numel() for p in model.parameters())


def set_mc_dropout(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Keeps dropout sampling at test time (Monte-Carlo dropout) while BN stays in eval mode."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train(enabled)
    return model


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
