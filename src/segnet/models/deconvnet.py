"""DeconvNet (Noh, Hong, Han, "Learning Deconvolution Network for Semantic Segmentation",
ICCV 2015): a comparison network of SegNet paper Sec. 4, Tables 3 and 6.

Contract: images (N, C_in, H, W), any H, W >= 1 -> logits (N, K, H, W).

* Encoder: SegNet's VGG16 encoder (13 conv-BN-ReLU, 2x2/2 ceil-mode pools remembering indices),
  so ``vgg16_bn`` / ``vgg16`` ImageNet weights load into ``model.encoder`` by the same mapping.
* fc6: 7x7 conv 512 -> 4096, fc7: 1x1 conv 4096 -> 4096, fc6-deconv: 7x7 transposed conv
  4096 -> 512, each + BN + ReLU, as Noh et al. (no dropout). Noh's fc6 has no padding and
  maps a 7x7 pool5 (224x224 input) to 1x1, which fc6-deconv maps back to 7x7; here both pad 3
  ("same"), so pool5 keeps its size and any input size works.
* Decoder: the encoder mirrored, deepest first; each block unpools with its encoder pool's
  indices, then 3x3 transposed convs (stride 1, pad 1) + BN + ReLU. Widths as Noh et al.:
  deconv5 512,512,512; deconv4 512,512,256; deconv3 256,256,128; deconv2 128,64; deconv1 64,64;
  then seg-score, a 1x1 conv 64 -> K (no BN/ReLU). The 3x3 stride-1 transposed convs have the
  same shapes and cost as convs; they are kept for fidelity (and the torch module names).

The difference to SegNet: the 4096-wide fc6/fc7/fc6-deconv bottleneck (~222M of its 252M
parameters) and a 1x1 classifier.

Parameters for K=11: 251,805,003.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .encoders import Stage, vgg16_encoder
from .layers import (
    ConvBNReLU,
    MaxUnpool2x2,
    SameConv2d,
    SameConvTranspose2d,
    init_msra,
    stack_blocks,
)

FC_WIDTH = 4096
# deconv5 .. deconv1 (deepest first): widths of each block's 3x3 transposed convs.
DECONVNET_DECODER = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64, 64))


class DeconvBNReLU(nn.Sequential):
    """Transposed conv ('same' padding, stride 1) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3) -> None:
        # skip_init: the weights are initialised once, by init_msra (fc6-deconv has 103M).
        deconv = nn.utils.skip_init(
            SameConvTranspose2d,
            in_channels,
            out_channels,
            kernel_size,
            device=torch.get_default_device(),
        )
        super().__init__(deconv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DeconvDecoder(nn.Module):
    """Unpool with the encoder's indices, then transposed convs; one block per encoder block."""

    def __init__(self, *, in_channels: int, blocks: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.unpool = MaxUnpool2x2()
        self.blocks, self.out_channels = stack_blocks(in_channels, blocks, DeconvBNReLU)

    def forward(self, x: Tensor, stages: Sequence[Stage]) -> Tensor:
        for block, stage in zip(self.blocks, reversed(stages)):
            x = block(self.unpool(x, stage.indices, stage.size))  # (N, C_i, H_i, W_i)
        return x


class DeconvNet(nn.Module):
    """VGG16 encoder -> fc6/fc7 -> fc6-deconv -> mirrored unpool + deconv decoder -> 1x1 score."""

    def __init__(self, *, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.encoder = vgg16_encoder(in_channels=in_channels)
        width = self.encoder.out_channels  # 512
        # fc6 is ConvBNReLU(width, 4096, kernel_size=7) (pad 3, 'same') with a SameConv2d,
        # fast on tiny maps, built with skip_init: its 103M weights are initialised once.
        self.fc6 = nn.Sequential(
            nn.utils.skip_init(SameConv2d, width, FC_WIDTH, 7, device=torch.get_default_device()),
            nn.BatchNorm2d(FC_WIDTH),
            nn.ReLU(inplace=True),
        )
        self.fc7 = ConvBNReLU(FC_WIDTH, FC_WIDTH, kernel_size=1)
        self.fc6_deconv = DeconvBNReLU(FC_WIDTH, width, kernel_size=7)
        self.decoder = DeconvDecoder(in_channels=width, blocks=DECONVNET_DECODER)
        self.classifier = nn.Conv2d(self.decoder.out_channels, num_classes, 1)  # seg-score
        init_msra(self)

    def forward(self, images: Tensor) -> Tensor:
        x, stages = self.encoder(images)  # (N, 512, H/32, W/32)
        x = self.fc6_deconv(self.fc7(self.fc6(x)))  # (N, 4096, ...) -> (N, 512, H/32, W/32)
        return self.classifier(self.decoder(x, stages))  # (N, K, H, W)


def deconvnet(*, num_classes: int, in_channels: int = 3) -> DeconvNet:
    """DeconvNet (Noh et al.) on SegNet's VGG16 encoder; fc6/fc7 padded for any input size."""
    return DeconvNet(num_classes=num_classes, in_channels=in_channels)
