"""The baseline every speed and memory figure is compared with: SegNet as it is commonly written
in PyTorch -- eager fp32, NCHW, ``F.max_pool2d(return_indices=True)`` keeping int64 indices,
``F.max_unpool2d``, BatchNorm as separate layers.

Same architectures as :mod:`segnet.models.segnet` (built from the same :class:`SegNetSpec`) and
the same parameter names, so ``reference.load_state_dict(ours.state_dict())`` works and the two
can be compared output for output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SegNetError
from ..models import MODELS, model_entry
from ..models.segnet import SegNetSpec


def _blocks(
    in_channels: int, widths_per_block: Sequence[Sequence[int]], kernel_size: int, relu: bool
) -> tuple[nn.ModuleList, int]:
    blocks = nn.ModuleList()
    channels = in_channels
    for widths in widths_per_block:
        layers = []
        for width in widths:
            # nn.Sequential(conv, bn[, relu]) keeps the parameter names of segnet's ConvBNReLU.
            unit = [
                nn.Conv2d(channels, width, kernel_size, padding=kernel_size // 2),
                nn.BatchNorm2d(width),
            ]
            layers.append(nn.Sequential(*unit, *([nn.ReLU(inplace=True)] if relu else [])))
            channels = width
        blocks.append(nn.Sequential(*layers))
    return blocks, channels


class _Part(nn.Module):
    """Holds ``blocks`` so that state_dict keys read ``encoder.blocks.i...`` as in our models."""

    def __init__(self, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.blocks = blocks


class ReferenceSegNet(nn.Module):
    """Plain eager SegNet: int64 pooling indices, ``F.max_unpool2d``, separate BN layers."""

    def __init__(
        self, *, spec: SegNetSpec, num_classes: int, in_channels: int = 3, input_lrn: bool = False
    ) -> None:
        super().__init__()
        self.input_norm = (
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if input_lrn else nn.Identity()
        )
        encoder, channels = _blocks(in_channels, spec.encoder_blocks, spec.kernel_size, True)
        decoder, channels = _blocks(
            channels, spec.decoder_blocks, spec.kernel_size, spec.decoder_relu
        )
        self.encoder, self.decoder = _Part(encoder), _Part(decoder)
        k = spec.classifier_kernel_size
        self.classifier = nn.Conv2d(channels, num_classes, k, padding=k // 2)

    def forward(self, images: Tensor) -> Tensor:
        x = self.input_norm(images)
        switches = []
        for block in self.encoder.blocks:
            x = block(x)
            size = x.shape[-2:]
            x, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)  # int64
            switches.append((indices, size))
        for block, (indices, size) in zip(self.decoder.blocks, reversed(switches)):
            x = block(F.max_unpool2d(x, indices, 2, 2, output_size=size))
        return self.classifier(x)  # (N, K, H, W)


def reference_model(
    name: str, *, num_classes: int, in_channels: int = 3, **options: Any
) -> ReferenceSegNet:
    """The reference twin of a registered SegNet model; loads that model's ``state_dict``."""
    spec = model_entry(name).spec
    if spec is None:
        raise SegNetError(
            f"no reference implementation of {name!r}; choose one of: {', '.join(reference_names())}"
        )
    return ReferenceSegNet(
        spec=spec, num_classes=num_classes, in_channels=in_channels,
        input_lrn=bool(options.get("input_lrn", False)),
    )  # fmt: skip


def reference_names() -> list[str]:
    """Registered models with a plain-PyTorch twin (those whose registry entry has a spec)."""
    return [name for name, entry in MODELS.items() if entry.spec is not None]
