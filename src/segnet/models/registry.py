"""What the registry knows of each model, declared next to its builder (``segnet.py``,
``variants.py``, ``comparison.py``) and read by every other layer from here.

The training defaults, the ImageNet loader and the benchmark read these facts; none of them
guesses from a model's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from .segnet import SegNetSpec

# The authors' solver files: lr 0.1 for SegNet-Basic and its Table 1 variants (shallow, 7x7,
# BN everywhere); 0.001 for SegNet (VGG16) and the other deep networks, which diverge at 0.1.
BASIC_LR = 0.1
DEEP_LR = 0.001


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its keyword-only builder and the facts other layers need."""

    builder: Callable[..., nn.Module]
    default_lr: float  # SGD rate of the paper's recipe for this model
    imagenet_encoder: str | None = None  # torchvision file `encoder_weights="imagenet"` loads
    spec: SegNetSpec | None = None  # plain SegNet architecture: the benchmark's reference twin
