"""Model registry: ``build_model(name, *, num_classes, in_channels=3, **options)``.

Every registered builder is keyword-only and returns an ``nn.Module`` mapping images
(N, in_channels, H, W) to logits (N, num_classes, H, W) for any H, W >= 32.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import SegNetError
from .comparison import COMPARISON_MODELS
from .segnet import bayesian_segnet, bayesian_segnet_basic, segnet, segnet_basic
from .variants import VARIANT_MODELS

MODELS: dict[str, Callable[..., nn.Module]] = {
    "segnet": segnet,
    "segnet_basic": segnet_basic,
    "bayesian_segnet": bayesian_segnet,
    "bayesian_segnet_basic": bayesian_segnet_basic,
    **VARIANT_MODELS,  # paper Table 1 decoder variants
    **COMPARISON_MODELS,  # paper Tables 3 and 6: FCN, DeepLab, DeconvNet; U-Net, ResNet-50
}


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. ``list_models("segnet*")``."""
    return sorted(name for name in MODELS if fnmatch.fnmatch(name, pattern))


def build_model(name: str, *, num_classes: int, in_channels: int = 3, **options: Any) -> nn.Module:
    """Builds a registered model; unknown names and options raise :class:`SegNetError`."""
    if name not in MODELS:
        raise SegNetError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    if num_classes < 1 or in_channels < 1:
        raise SegNetError(
            f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}"
        )
    try:
        return MODELS[name](num_classes=num_classes, in_channels=in_channels, **options)
    except TypeError as error:  # an option the builder does not take
        raise SegNetError(f"model {name!r}: {error}") from None


def set_mc_dropout(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Keeps dropout sampling at test time (Monte-Carlo dropout) while BN stays in eval mode."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train(enabled)
    return model


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
