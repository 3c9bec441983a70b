"""FCN-32s, FCN-16s, FCN-8s (Long, Shelhamer, Darrell, CVPR 2015) on SegNet's VGG16 encoder.

The comparison network of SegNet paper Sec. 4 / Tables 3 and 6 ("FCN (learnt deconv)").

Contract: images (N, C_in, H, W), any H, W >= 1 -> logits (N, K, H, W).

* Encoder: the same VGG16 encoder as SegNet (13 conv-BN-ReLU, 2x2/2 ceil-mode pools), so the
  torchvision ``vgg16_bn`` / ``vgg16`` weights load into ``model.encoder`` by the same mapping.
  FCN needs the *pooled* maps pool3 (256, H/8) and pool4 (512, H/16) and no pooling indices,
  so it runs the encoder's blocks with a plain max-pool.
* fc6 / fc7 as convolutions, as the original FCN: fc6 7x7 conv 512 -> 4096, fc7 1x1 conv
  4096 -> 4096, each ReLU + Dropout(0.5), no BN (VGG's fully connected layers, convolutionalised;
  ImageNet's classifier.0 / classifier.3 reshape into them). fc6 pads by 3 ("same") instead of
  FCN's 100-pixel padding of conv1_1 + offset crops: the score map stays aligned with the
  input, any H, W works, and no compute goes to the padded margin.
* score_fr: 1x1 conv 4096 -> K. FCN-16s adds score_pool4 (1x1, 512 -> K) after a learnt x2
  upsampling; FCN-8s also adds score_pool3 (1x1, 256 -> K) after a second x2.
* Every upsampling is a *learnt* transposed conv (K -> K, kernel 2f, stride f, padding f/2,
  no bias, full K x K weights as FCN's Caffe Deconvolution layers) initialised to bilinear
  interpolation (weight[i, i] = 2-D tent, off-diagonal 0) and marked ``_keep_init`` so
  :func:`init_msra` leaves it. Padding f/2 puts the kernel centre of input cell i on output
  pixel f*i + (f-1)/2, the centre of the f x f window that cell summarises (same-padded convs,
  2x2 pools), and the output is f * h >= the target size; each sum and the final map are
  cropped top-left to the exact size.

Parameters for K=11 (fcn32s / fcn16s / fcn8s): 134,809,675 / 134,445,542 / 134,357,377
(the final deconv shrinks from 64x64 to 32x32 to 16x16 kernels as the skips are added).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoders import vgg16_encoder
from .layers import BilinearDeconv, SameConv2d, init_msra

FC_WIDTH = 4096  # VGG16's fully connected width


def _crop(x: Tensor, size: Sequence[int]) -> Tensor:
    return x[:, :, : size[0], : size[1]]


class FCN(nn.Module):
    """VGG16 encoder -> fc6/fc7 convs -> scores, fused with scores of shallower pools.

    ``skips`` lists the pools (1-based, deepest first) whose 1x1 scores are added after each
    learnt x2 upsampling: () is FCN-32s, (4,) FCN-16s, (4, 3) FCN-8s. The final upsampling
    factor is the stride of the last map fused: 32, 16 or 8.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        skips: Sequence[int] = (),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if list(skips) != list(range(4, 4 - len(skips), -1)):
            raise ValueError(f"skips must be (), (4,), (4, 3), ...; got {tuple(skips)}")
        self.encoder = vgg16_encoder(in_channels=in_channels)
        widths = self.encoder.widths  # [64, 128, 256, 512, 512]
        # skip_init: the 103M-weight fc6 is initialised once, by init_msra below.
        self.fc6 = nn.utils.skip_init(  # pad 3; on the default device, so meta builds stay meta
            SameConv2d, widths[-1], FC_WIDTH, 7, device=torch.get_default_device()
        )
        self.fc7 = nn.Conv2d(FC_WIDTH, FC_WIDTH, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)
        self.score_fr = nn.Conv2d(FC_WIDTH, num_classes, 1)
        self.skips = tuple(skips)
        self.score_pools = nn.ModuleList(nn.Conv2d(widths[p - 1], num_classes, 1) for p in skips)
        self.upscore_pools = nn.ModuleList(BilinearDeconv(num_classes, factor=2) for _ in skips)
        self.upscore = BilinearDeconv(num_classes, factor=2 ** (5 - len(skips)))
        init_msra(self)

    def forward(self, images: Tensor) -> Tensor:
        pools = []  # pool1..pool5: (N, C_i, ceil(H / 2**i), ceil(W / 2**i))
        x = images
        for block in self.encoder.blocks:
            x = F.max_pool2d(block(x), 2, 2, ceil_mode=True)
            pools.append(x)
        x = self.drop6(self.relu(self.fc6(x)))  # (N, 4096, H/32, W/32)
        x = self.drop7(self.relu(self.fc7(x)))
        scores = self.score_fr(x)  # (N, K, H/32, W/32)
        for p, score_pool, upscore in zip(self.skips, self.score_pools, self.upscore_pools):
            skip = score_pool(pools[p - 1])  # (N, K, H/2**p, W/2**p)
            scores = _crop(upscore(scores), skip.shape[-2:]) + skip
        return _crop(self.upscore(scores), images.shape[-2:])  # (N, K, H, W)


def fcn32s(*, num_classes: int, in_channels: int = 3) -> FCN:
    """FCN-32s: scores of pool5 (through fc6/fc7) upsampled x32 by one learnt deconv."""
    return FCN(num_classes=num_classes, in_channels=in_channels, skips=())


def fcn16s(*, num_classes: int, in_channels: int = 3) -> FCN:
    """FCN-16s: FCN-32s scores x2, plus pool4 scores, then x16."""
    return FCN(num_classes=num_classes, in_channels=in_channels, skips=(4,))


def fcn8s(*, num_classes: int, in_channels: int = 3) -> FCN:
    """FCN-8s: as FCN-16s, then x2 plus pool3 scores, then x8 (the paper's "FCN")."""
    return FCN(num_classes=num_classes, in_channels=in_channels, skips=(4, 3))
