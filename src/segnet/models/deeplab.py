"""DeepLab-LargeFOV (Chen et al., "Semantic Image Segmentation with Deep Convolutional Nets and
Fully Connected CRFs", ICLR 2015), without the CRF: a comparison network of SegNet paper Sec. 4,
Tables 3 and 6.

Contract: images (N, C_in, H, W), any H, W >= 1 -> logits (N, K, H, W).

VGG16's 13 convs (with BN here, as SegNet's encoder, so ``vgg16_bn`` / ``vgg16`` ImageNet
weights load into ``model.encoder.blocks`` by the same mapping) with DeepLab's changes to keep
output stride 8 and a large field of view:

* pool1-3: 3x3 max-pool, stride 2, pad 1, ceil mode (Caffe): H -> floor(H/2) + 1, so
  321 -> 161 -> 81 -> 41 (DeepLab's sizes) and 32 -> 17 -> 9 -> 5;
  pool4, pool5: 3x3, stride 1, pad 1 (size kept), then pool5a, a 3x3/1 average pool;
* conv5_1-3 dilated by 2 (the receptive field conv5 had before pool4 lost its stride);
* fc6: 3x3 conv 512 -> 1024, dilation 12 ("LargeFOV"); fc7: 1x1 conv 1024 -> 1024; each ReLU +
  Dropout(0.5), no BN; fc8: 1x1 conv 1024 -> K;
* logits upsampled to (H, W) by fixed bilinear interpolation (DeepLab upsamples its stride-8
  scores x8; we interpolate straight to the input size so any H, W comes back exactly).

Parameters for K=11: 20,503,627.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from .encoders import VGG16_BLOCKS
from .layers import ConvBNReLU, init_msra


class PoolSpec(NamedTuple):
    kernel_size: int
    stride: int
    padding: int


# One entry per VGG16 block: the pool after it and the dilation of its convs.
DEEPLAB_POOLS = (PoolSpec(3, 2, 1),) * 3 + (PoolSpec(3, 1, 1),) * 2
DEEPLAB_DILATIONS = (1, 1, 1, 1, 2)
FC6_DILATION = 12
FC_WIDTH = 1024


class DilatedVGGEncoder(nn.Module):
    """VGG16 conv blocks with per-block pooling and dilation; ``blocks`` named as PoolingEncoder's.

    (N, C_in, H, W) -> (N, 512, H_8, W_8), H_8 = H after three times H -> floor(H/2) + 1.
    """

    def __init__(self, *, in_channels: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        channels = in_channels
        for widths, dilation in zip(VGG16_BLOCKS, DEEPLAB_DILATIONS):
            layers = []
            for width in widths:
                layers.append(ConvBNReLU(channels, width, dilation=dilation))
                channels = width
            self.blocks.append(nn.Sequential(*layers))
        self.pools = DEEPLAB_POOLS
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        for block, pool in zip(self.blocks, self.pools):
            x = F.max_pool2d(block(x), pool.kernel_size, pool.stride, pool.padding, ceil_mode=True)
        return x


class DeepLabLargeFOV(nn.Module):
    """Dilated VGG16 (output stride 8) -> dilated fc6 -> fc7 -> fc8 -> bilinear to input size."""

    def __init__(self, *, num_classes: int, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder = DilatedVGGEncoder(in_channels=in_channels)
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1)
        self.fc6 = nn.Conv2d(
            self.encoder.out_channels, FC_WIDTH, 3, padding=FC6_DILATION, dilation=FC6_DILATION
        )
        self.fc7 = nn.Conv2d(FC_WIDTH, FC_WIDTH, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)
        self.fc8 = nn.Conv2d(FC_WIDTH, num_classes, 1)
        init_msra(self)

    def forward(self, images: Tensor) -> Tensor:
        x = self.pool5a(self.encoder(images))  # (N, 512, H_8, W_8)
        x = self.drop6(self.relu(self.fc6(x)))  # (N, 1024, H_8, W_8)
        x = self.drop7(self.relu(self.fc7(x)))
        scores = self.fc8(x)  # (N, K, H_8, W_8)
        return F.interpolate(scores, size=images.shape[-2:], mode="bilinear", align_corners=False)


def deeplab_largefov(*, num_classes: int, in_channels: int = 3) -> DeepLabLargeFOV:
    """DeepLab-LargeFOV (v1, no CRF) on a BN VGG16: stride 8, fc6 3x3 dilation 12, 1024 wide."""
    return DeepLabLargeFOV(num_classes=num_classes, in_channels=in_channels)
