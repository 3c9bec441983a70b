"""SegNet with a ResNet-50 encoder (He et al., CVPR 2016; torchvision's v1.5 bottlenecks).

Contract: images (N, C_in, H, W), any H, W >= 1 -> logits (N, K, H, W).

Encoder (``model.encoder``, :class:`ResNetEncoder`): torchvision's module names -- ``conv1``,
``bn1``, ``layer1`` .. ``layer4`` of ``Bottleneck`` blocks (``conv1/bn1`` 1x1, ``conv2/bn2`` 3x3
carrying the stride, ``conv3/bn3`` 1x1, ``downsample.0/1`` projection) -- so a torchvision
``resnet50`` state dict loads by key (minus ``fc.*``). It returns ``(x, stages)``: x is
layer4's output (N, 2048, H/32, W/32) and ``stages`` lists, shallow to deep, one
:class:`ResNetStage` per stage -- conv1, maxpool, layer1, layer2, layer3, layer4 -- with the
(H_i, W_i) of the map the stage received and, for the max-pool only, its uint8 indices.
Strides at 360x480: conv1 /2 (64 ch), maxpool /4, layer1 /4 (256), layer2 /8 (512),
layer3 /16 (1024), layer4 /32 (2048); every stride rounds up (ceil), so odd sizes work.

Design choices:

* The stem max-pool is SegNet's 2x2/2 index-remembering pool (:func:`max_pool_2x2`, ceil mode)
  instead of ResNet's 3x3/2 pad-1 pool: the 2x2 windows do not overlap, so every output has
  exactly one source and unpooling is the exact, deterministic inverse (overlapping 3x3 windows
  could send two outputs to one position). Pooling has no parameters, so ImageNet weights still
  load; the pretrained layers see a slightly different (same-stride) pooled map, which
  fine-tuning absorbs.
* The decoder mirrors every encoder stage, deepest first, and keeps SegNet's rule of no learnt
  upsampling and no copied encoder features: where the encoder max-pooled it unpools with the
  pooling indices (the one place ResNet has them); where a strided conv downsampled (conv1,
  layer2-4) it upsamples bilinearly to the exact pre-stage size; layer1 (stride 1) needs none.
  Each upsampling is followed by 3x3 conv-BN-ReLUs whose widths are data
  (``RESNET50_DECODER``): the first conv of a block narrows the width (2048 -> 512 after
  layer4) so the decoder stays light (14.2M parameters against the encoder's 23.5M).
* Classifier: 3x3 conv 64 -> K, no BN/ReLU, as SegNet's.

Parameters for K=11: 37,713,163 (encoder 23,508,032 = torchvision resnet50 without fc).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvBNReLU, MaxPool2x2, MaxUnpool2x2, init_msra, stack_blocks

EXPANSION = 4  # a bottleneck's output is 4x its inner width


class LayerSpec(NamedTuple):
    planes: int  # inner width of each bottleneck; output width is 4x
    blocks: int
    stride: int  # of the first block's 3x3 conv


RESNET50_LAYERS = (
    LayerSpec(64, 3, 1),
    LayerSpec(128, 4, 2),
    LayerSpec(256, 6, 2),
    LayerSpec(512, 3, 2),
)
STEM_WIDTH = 64

# Decoder blocks, deepest first, mirroring layer4, layer3, layer2, layer1, maxpool, conv1.
RESNET50_DECODER: tuple[tuple[int, ...], ...] = (
    (512, 512),  # bilinear /32 -> /16; 2048 -> 512
    (256, 256),  # bilinear /16 -> /8
    (128, 128),  # bilinear /8 -> /4
    (64, 64),  # layer1 kept the size: convs only; 64 = the max-pool's channels, for unpooling
    (64,),  # unpool /4 -> /2 with the stem pool's indices
    (64,),  # bilinear /2 -> /1, then the classifier
)


class ResNetStage(NamedTuple):
    size: tuple[int, int]  # (H_i, W_i) of the map the stage received
    indices: Tensor | None  # uint8 max-pool codes for the pool stage; None for conv stages


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand; identity or 1x1 projection added."""

    def __init__(self, in_channels: int, planes: int, *, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))  # (N, planes, ceil(H/s), ceil(W/s))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """ResNet stem + bottleneck layers; returns the deepest map and each stage's input size."""

    def __init__(
        self, *, in_channels: int = 3, layers: Sequence[LayerSpec] = RESNET50_LAYERS
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, STEM_WIDTH, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = MaxPool2x2()  # 2x2/2 with indices, not 3x3/2: see the module docstring
        channels = STEM_WIDTH
        for number, spec in enumerate(layers, start=1):
            blocks = []
            for i in range(spec.blocks):
                blocks.append(
                    Bottleneck(channels, spec.planes, stride=spec.stride if i == 0 else 1)
                )
                channels = spec.planes * EXPANSION
            self.add_module(f"layer{number}", nn.Sequential(*blocks))
        self.num_layers = len(layers)
        self.out_channels = channels

    def forward(self, x: Tensor) -> tuple[Tensor, list[ResNetStage]]:
        stages = [ResNetStage((x.shape[-2], x.shape[-1]), None)]
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 64, ceil(H/2), ceil(W/2))
        x, indices, size = self.maxpool(x)  # (N, 64, ceil(H/4), ceil(W/4))
        stages.append(ResNetStage(size, indices))
        for number in range(1, self.num_layers + 1):
            stages.append(ResNetStage((x.shape[-2], x.shape[-1]), None))
            x = getattr(self, f"layer{number}")(x)  # layer4: (N, 2048, ceil(H/32), ceil(W/32))
        return x, stages


class MirrorDecoder(nn.Module):
    """Per encoder stage, deepest first: upsample to the stage's input size, then convolve.

    Unpools where the stage max-pooled (it has indices), interpolates bilinearly where a strided
    conv shrank the map, and only convolves where the size did not change.
    """

    def __init__(self, *, in_channels: int, blocks: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.unpool = MaxUnpool2x2()
        self.blocks, self.out_channels = stack_blocks(in_channels, blocks, ConvBNReLU)

    def forward(self, x: Tensor, stages: Sequence[ResNetStage]) -> Tensor:
        for block, stage in zip(self.blocks, reversed(stages)):
            if stage.indices is not None:
                x = self.unpool(x, stage.indices, stage.size)  # sparse (N, 64, H_i, W_i)
            elif tuple(x.shape[-2:]) != stage.size:
                x = F.interpolate(x, size=stage.size, mode="bilinear", align_corners=False)
            x = block(x)  # (N, C_i, H_i, W_i)
        return x


class SegNetResNet(nn.Module):
    """ResNet encoder -> mirrored unpool/bilinear decoder -> 3x3 classifier."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        layers: Sequence[LayerSpec] = RESNET50_LAYERS,
        decoder_blocks: Sequence[Sequence[int]] = RESNET50_DECODER,
    ) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(in_channels=in_channels, layers=layers)
        if len(decoder_blocks) != len(layers) + 2:  # + conv1 and maxpool
            raise ValueError(f"need {len(layers) + 2} decoder blocks, got {len(decoder_blocks)}")
        self.decoder = MirrorDecoder(in_channels=self.encoder.out_channels, blocks=decoder_blocks)
        self.classifier = nn.Conv2d(self.decoder.out_channels, num_classes, 3, padding=1)
        init_msra(self)

    def forward(self, images: Tensor) -> Tensor:
        x, stages = self.encoder(images)  # (N, 2048, H/32, W/32)
        return self.classifier(self.decoder(x, stages))  # (N, K, H, W)


def segnet_resnet50(*, num_classes: int, in_channels: int = 3) -> SegNetResNet:
    """SegNet-style decoder on a ResNet-50 encoder with torchvision key names (see module doc)."""
    return SegNetResNet(num_classes=num_classes, in_channels=in_channels)
