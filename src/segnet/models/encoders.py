"""Encoders: a stack of conv blocks, each followed by a 2x2/2 max-pool that remembers indices.

Contract: ``encoder(images)`` with images (N, C_in, H, W) returns ``(x, stages)`` where
``x`` is the last pooled map (N, C_last, ceil(H / 2**D), ceil(W / 2**D)) for D blocks, and
``stages`` lists one :class:`Stage` per block, shallow to deep:

* ``features`` -- the block's output *before* pooling (N, C_i, H_i, W_i); the EncoderAddition /
  FCN / U-Net decoders read it. SegNet's decoder reads only the indices, so SegNet builds its
  encoder with ``keep_features=False`` and ``features`` is None: holding every pre-pool map until
  the decoder ends would cost 80 MiB at 360x480 in inference (more than the int64 indices);
* ``indices`` -- uint8 window codes of the pool (N, C_i, ceil(H_i/2), ceil(W_i/2));
* ``size`` -- (H_i, W_i), so unpooling restores the exact pre-pool size at any input size.

Example, VGG16 at 360x480: stage sizes 360x480, 180x240, 90x120, 45x60, 23x30; x is 12x15.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from .layers import ConvBNReLU, MaxPool2x2, stack_blocks

# VGG16's 13 convolutions as 5 blocks of output widths (Simonyan & Zisserman, config "D").
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


class Stage(NamedTuple):
    features: Tensor | None
    indices: Tensor
    size: tuple[int, int]


class PoolingEncoder(nn.Module):
    """Blocks of ConvBNReLU, each followed by an index-remembering max-pool (paper Sec. 3)."""

    def __init__(
        self,
        *,
        in_channels: int,
        blocks: Sequence[Sequence[int]],
        kernel_size: int = 3,
        dropout: float = 0.0,
        dropout_depth: int = 0,
        keep_features: bool = True,
    ) -> None:
        super().__init__()
        self.keep_features = keep_features
        self.blocks, channels = stack_blocks(
            in_channels,
            blocks,
            lambda c_in, c_out: ConvBNReLU(c_in, c_out, kernel_size=kernel_size),
        )
        # Bayesian SegNet: dropout after the pools of the deepest `dropout_depth` blocks.
        self.dropouts = nn.ModuleList(
            nn.Dropout(dropout)
            if dropout > 0 and depth >= len(blocks) - dropout_depth
            else nn.Identity()
            for depth in range(len(blocks))
        )
        self.pool = MaxPool2x2()
        self.out_channels = channels
        self.widths = [widths[-1] for widths in blocks]

    def forward(self, x: Tensor) -> tuple[Tensor, list[Stage]]:
        stages: list[Stage] = []
        for block, dropout in zip(self.blocks, self.dropouts):
            features = block(x)  # (N, C_i, H_i, W_i)
            x, indices, size = self.pool(features)  # (N, C_i, ceil(H_i/2), ceil(W_i/2))
            stages.append(Stage(features if self.keep_features else None, indices, size))
            del features  # else the map lives on through the next block's convolutions
            x = dropout(x)
        return x, stages


def vgg16_encoder(
    *, in_channels: int = 3, dropout: float = 0.0, dropout_depth: int = 0
) -> PoolingEncoder:
    """VGG16's 13 convs (with BN, as SegNet) as a pooling encoder; torchvision keys load by name."""
    return PoolingEncoder(
        in_channels=in_channels,
        blocks=VGG16_BLOCKS,
        kernel_size=3,
        dropout=dropout,
        dropout_depth=dropout_depth,
    )
