"""SegNet and SegNet-Basic (Badrinarayanan et al., TPAMI 2017, Sec. 3 and 4.1), and their
Bayesian versions (Kendall et al., 2015).

The decoder mirrors the encoder: each block unpools with the indices its encoder block's pool
remembered (no learned upsampling, no copied feature maps), then dense convolutions fill the
sparse map. Widths are written out as data, deepest block first, exactly as the authors' Caffe
models: in SegNet the width drops at the *last* conv of each decoder block, and the last conv of
the shallowest block is the classifier (3x3 to K logits, no BN/ReLU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from .encoders import VGG16_BLOCKS, PoolingEncoder
from .layers import ConvBNReLU, MaxUnpool2x2, init_msra, stack_blocks
from .registry import BASIC_LR, DEEP_LR, ModelEntry


@dataclass(frozen=True)
class SegNetSpec:
    """One SegNet architecture as data (what the Caffe prototxt says)."""

    encoder_blocks: tuple[tuple[int, ...], ...]
    decoder_blocks: tuple[tuple[int, ...], ...]  # deepest first; widths of each block's convs
    kernel_size: int
    decoder_relu: bool  # SegNet: conv-BN-ReLU; SegNet-Basic: conv-BN only
    classifier_kernel_size: int
    dropout_depth: int  # Bayesian: dropout after this many deepest encoder and decoder blocks


SEGNET_VGG16 = SegNetSpec(
    encoder_blocks=VGG16_BLOCKS,
    # dec5 512,512,512; dec4 512,512,256; dec3 256,256,128; dec2 128,64; dec1 64 (+ classifier)
    decoder_blocks=((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64,)),
    kernel_size=3,
    decoder_relu=True,
    classifier_kernel_size=3,
    dropout_depth=3,  # pool3, pool4, pool5 and decoders 5, 4, 3
)

SEGNET_BASIC = SegNetSpec(
    encoder_blocks=((64,),) * 4,  # 4 encoders of one 7x7 conv each: a constant 7x7 context
    decoder_blocks=((64,),) * 4,
    kernel_size=7,
    decoder_relu=False,
    classifier_kernel_size=1,
    dropout_depth=2,  # pool3, pool4 and decoders 4, 3
)


class SegNetDecoder(nn.Module):
    """Unpool with the encoder's indices, then convolve; one block per encoder block."""

    def __init__(
        self,
        *,
        in_channels: int,
        blocks: Sequence[Sequence[int]],
        kernel_size: int,
        relu: bool,
        dropout: float = 0.0,
        dropout_depth: int = 0,
    ) -> None:
        super().__init__()
        self.unpool = MaxUnpool2x2()
        self.blocks, self.out_channels = stack_blocks(
            in_channels,
            blocks,
            lambda c_in, c_out: ConvBNReLU(c_in, c_out, kernel_size=kernel_size, relu=relu),
        )
        self.dropouts = nn.ModuleList(  # blocks are listed deepest first
            nn.Dropout(dropout) if dropout > 0 and depth < dropout_depth else nn.Identity()
            for depth in range(len(blocks))
        )

    def forward(self, x: Tensor, stages: Sequence) -> Tensor:
        for block, dropout, stage in zip(self.blocks, self.dropouts, reversed(stages)):
            x = self.unpool(x, stage.indices, stage.size)  # (N, C, H_i, W_i), sparse
            x = dropout(block(x))
        return x


class SegNet(nn.Module):
    """Encoder -> index-unpooling decoder -> per-pixel classifier.

    ``forward(images)``: images (N, in_channels, H, W), any H, W >= 1 (ceil-mode pooling) ->
    logits (N, num_classes, H, W). Logits are raw scores: no BN or ReLU on the classifier.
    """

    def __init__(
        self,
        *,
        spec: SegNetSpec,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.0,
        input_lrn: bool = False,
    ) -> None:
        super().__init__()
        depth = spec.dropout_depth if dropout > 0 else 0
        # SegNet-Basic's Caffe model normalises its raw input with a cross-channel LRN.
        self.input_norm = (
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if input_lrn else nn.Identity()
        )
        self.encoder = PoolingEncoder(
            in_channels=in_channels,
            blocks=spec.encoder_blocks,
            kernel_size=spec.kernel_size,
            dropout=dropout,
            dropout_depth=depth,
            keep_features=False,  # the decoder reads only indices: free each map after pooling
        )
        self.decoder = SegNetDecoder(
            in_channels=self.encoder.out_channels,
            blocks=spec.decoder_blocks,
            kernel_size=spec.kernel_size,
            relu=spec.decoder_relu,
            dropout=dropout,
            dropout_depth=depth,
        )
        k = spec.classifier_kernel_size
        self.classifier = nn.Conv2d(self.decoder.out_channels, num_classes, k, padding=k // 2)
        init_msra(self)

    def forward(self, images: Tensor) -> Tensor:
        x, stages = self.encoder(self.input_norm(images))
        return self.classifier(self.decoder(x, stages))  # (N, K, H, W)


def segnet(*, num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> SegNet:
    """The paper's SegNet: VGG16 encoder, mirrored decoder; 29,449,355 parameters for K=11."""
    return SegNet(
        spec=SEGNET_VGG16, num_classes=num_classes, in_channels=in_channels, dropout=dropout
    )


def segnet_basic(
    *, num_classes: int, in_channels: int = 3, dropout: float = 0.0, input_lrn: bool = False
) -> SegNet:
    """SegNet-Basic (paper Sec. 4.1): 4 x (7x7 conv 64), no decoder ReLU, 1x1 classifier."""
    return SegNet(
        spec=SEGNET_BASIC,
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        input_lrn=input_lrn,
    )


def bayesian_segnet(*, num_classes: int, in_channels: int = 3, dropout: float = 0.5) -> SegNet:
    """Bayesian SegNet: SegNet with dropout after pool3-5 and decoders 5-3 (Kendall et al.)."""
    return segnet(num_classes=num_classes, in_channels=in_channels, dropout=dropout)


def bayesian_segnet_basic(
    *, num_classes: int, in_channels: int = 3, dropout: float = 0.5, input_lrn: bool = False
) -> SegNet:
    """Bayesian SegNet-Basic: dropout after pool3, pool4 and decoders 4, 3."""
    return segnet_basic(
        num_classes=num_classes, in_channels=in_channels, dropout=dropout, input_lrn=input_lrn
    )


SEGNET_MODELS: dict[str, ModelEntry] = {
    "segnet": ModelEntry(
        segnet, default_lr=DEEP_LR, imagenet_encoder="vgg16_bn", spec=SEGNET_VGG16
    ),
    "segnet_basic": ModelEntry(segnet_basic, default_lr=BASIC_LR, spec=SEGNET_BASIC),
    # dropout is off at inference: the reference twin is the same network
    "bayesian_segnet": ModelEntry(
        bayesian_segnet, default_lr=DEEP_LR, imagenet_encoder="vgg16_bn", spec=SEGNET_VGG16
    ),
    "bayesian_segnet_basic": ModelEntry(
        bayesian_segnet_basic, default_lr=BASIC_LR, spec=SEGNET_BASIC
    ),
}
