"""U-Net (Ronneberger, Fischer, Brox, MICCAI 2015), with BN: the encoder-decoder that copies whole
encoder feature maps to the decoder (SegNet paper Sec. 2 contrasts it with index unpooling).

Contract: images (N, C_in, H, W), any H, W >= 1 -> logits (N, K, H, W).

* Widths as data: ``UNET_WIDTHS = (64, 128, 256, 512, 1024)``. Each level is a double conv
  (3x3 conv-BN-ReLU twice, 'same' padding -- the original used valid convs and cropped, so its
  output was smaller than its input); 4 x (2x2/2 ceil-mode max-pool + double conv) go down.
* Going up, 4 x: 2x2/2 transposed conv halving the width ("up-convolution"), cropped to the
  skip's size (ceil-mode pooling makes the up-sampled map at most one pixel larger), concatenated
  with the encoder map of that level (C + C channels), then a double conv back to C.
* A 1x1 conv to K logits.

Parameters for K=11: 31,044,171.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvBNReLU, init_msra

UNET_WIDTHS = (64, 128, 256, 512, 1024)  # level 0 (full size) .. level 4 (1/16)


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels)
    )


class UNet(nn.Module):
    """Contracting path, expanding path, concatenation skips at every level."""

    def __init__(
        self, *, num_classes: int, in_channels: int = 3, widths: Sequence[int] = UNET_WIDTHS
    ) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.down.append(double_conv(channels, width))
            channels = width
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):  # 512, 256, 128, 64
            self.upsample.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.up.append(double_conv(2 * width, width))
            channels = width
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_msra(self)

    def forward(self, images: Tensor) -> Tensor:
        skips = []
        x = images
        for depth, block in enumerate(self.down):
            if depth > 0:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)  # (N, C, ceil(h/2), ceil(w/2))
            x = block(x)
            skips.append(x)  # level i: (N, widths[i], H_i, W_i)
        skips.pop()  # the bottom level is x itself
        for upsample, block in zip(self.upsample, self.up):
            skip = skips.pop()  # (N, C, H_i, W_i)
            x = upsample(x)[:, :, : skip.shape[-2], : skip.shape[-1]]  # (N, C, H_i, W_i)
            x = block(torch.cat([skip, x], dim=1))  # (N, 2C, H_i, W_i) -> (N, C, H_i, W_i)
        return self.classifier(x)  # (N, K, H, W)


def unet(*, num_classes: int, in_channels: int = 3) -> UNet:
    """U-Net: 4 down, 4 up, widths 64..1024, BN, transposed-conv up, concatenation skips."""
    return UNet(num_classes=num_classes, in_channels=in_channels)
