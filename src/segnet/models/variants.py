"""The decoder variants of paper Table 1 (Badrinarayanan et al., TPAMI 2017, Sec. 3.1 and 4.1).

Every variant keeps SegNet-Basic's encoder (4 x [7x7 conv 64 -> BN -> ReLU -> 2x2 pool],
612,288 parameters) and changes only the decoder, along four axes written out as data in
:class:`DecoderSpec`:

* ``upsample`` -- ``"unpool"`` (SegNet: the encoder's pooling indices), ``"bilinear"`` (fixed,
  no parameters) or ``"deconv"`` (FCN: learned 8x8 stride-2 transposed conv, bilinear init);
* ``reduce`` -- FCN's dimensionality reduction: the decoder carries K = num_classes channels and
  each encoder map it reads first goes through a 1x1 conv 64 -> K; otherwise it carries 64;
* ``add_encoder`` -- add the encoder's pre-pool map (reduced if ``reduce``) after upsampling;
* ``conv`` -- the 7x7 conv (+ BN, no ReLU, as SegNet-Basic) after each upsampling: ``"dense"``,
  ``"depthwise"`` (one filter per channel) or ``None``.

Decoder contract: ``decoder(x, stages)`` with x the encoder output (N, 64, ceil(H/16),
ceil(W/16)) and the 4 encoder stages returns (N, C, H, W), C = K if ``reduce`` else 64 (then a
1x1 classifier gives the logits). Every upsampler produces exactly its stage's pre-pool size:
unpooling crops by construction; bilinear and deconv upsample by exactly 2 and crop the
bottom/right row/column of an odd side, so upsampled cell i stays aligned with the pool window
{2i, 2i+1} it came from (ceil-mode pooling pads bottom/right).

The paper gives parameter counts rounded to a 0.025M grid (SegNet-Basic: exactly 1,416,587 ->
"1.425M"); each builder's docstring gives the exact count for K = 11 and the reading chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from .encoders import PoolingEncoder, Stage
from .layers import BilinearDeconv, ConvBNReLU, init_msra, max_unpool_2x2
from .registry import BASIC_LR, ModelEntry
from .segnet import SEGNET_BASIC

Upsample = Literal["unpool", "bilinear", "deconv"]
DecoderConv = Literal["dense", "depthwise"]

DECONV_KERNEL_SIZE = 8  # paper: FCN-Basic's deconvolutions use 8x8 kernels


@dataclass(frozen=True)
class DecoderSpec:
    """One decoder of paper Table 1 as data (see the module docstring for each field)."""

    upsample: Upsample
    reduce: bool
    add_encoder: bool
    conv: DecoderConv | None

    def __post_init__(self) -> None:
        if self.upsample == "unpool" and self.reduce:
            # Pooling indices exist per encoder channel (64), not per class.
            raise ValueError("unpooling needs the encoder's 64 channels: use reduce=False")


# Each decoder block, deepest first, mirrors one encoder block of SegNet-Basic.
SEGNET_BASIC_DECODER = DecoderSpec(upsample="unpool", reduce=False, add_encoder=False, conv="dense")
BILINEAR_INTERPOLATION = DecoderSpec(upsample="bilinear", reduce=True, add_encoder=False, conv=None)
ENCODER_ADDITION = DecoderSpec(upsample="unpool", reduce=False, add_encoder=True, conv="dense")
SINGLE_CHANNEL_DECODER = DecoderSpec(
    upsample="unpool", reduce=False, add_encoder=False, conv="depthwise"
)
FCN_BASIC = DecoderSpec(upsample="deconv", reduce=True, add_encoder=True, conv=None)
FCN_BASIC_NO_ADDITION = DecoderSpec(upsample="deconv", reduce=True, add_encoder=False, conv=None)
FCN_BASIC_NO_DIM_REDUCTION = DecoderSpec(
    upsample="deconv", reduce=False, add_encoder=True, conv=None
)
FCN_BASIC_NO_ADDITION_NO_DIM_REDUCTION = DecoderSpec(
    upsample="deconv", reduce=False, add_encoder=False, conv=None
)


class IndexUnpool(nn.Module):
    """SegNet upsampling: values back to their pooling argmax, zeros elsewhere; no parameters."""

    def forward(self, x: Tensor, stage: Stage) -> Tensor:
        return max_unpool_2x2(x, stage.indices, stage.size)  # (N, C, H_i, W_i), sparse


class BilinearUpsample(nn.Module):
    """Fixed bilinear x2 upsampling (half-pixel centres) cropped to the stage size; no weights."""

    def forward(self, x: Tensor, stage: Stage) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x[:, :, : stage.size[0], : stage.size[1]]  # (N, C, H_i, W_i)


class StageDeconv(BilinearDeconv):
    """FCN-Basic upsampling: a learned x2 8x8 deconvolution (C -> C, bilinear init) whose output
    is cropped to the stage size."""

    def forward(self, x: Tensor, stage: Stage) -> Tensor:  # type: ignore[override]
        x = super().forward(x)  # (N, C, 2h, 2w)
        return x[:, :, : stage.size[0], : stage.size[1]]  # (N, C, H_i, W_i)


def _upsampler(kind: Upsample, channels: int) -> nn.Module:
    if kind == "unpool":
        return IndexUnpool()
    if kind == "bilinear":
        return BilinearUpsample()
    return StageDeconv(channels, factor=2, kernel_size=DECONV_KERNEL_SIZE)


def _decoder_conv(kind: DecoderConv | None, channels: int, kernel_size: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "dense":
        return ConvBNReLU(channels, channels, kernel_size=kernel_size, relu=False)
    # One k x k filter per channel: 64 * (49 + 1) + 128 (BN) = 3,328 parameters instead of 200,896.
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels),
        nn.BatchNorm2d(channels),
    )


class VariantDecoder(nn.Module):
    """One decoder block per encoder stage: upsample -> (+ encoder map) -> (conv)."""

    def __init__(
        self,
        *,
        spec: DecoderSpec,
        encoder_widths: Sequence[int],
        num_classes: int,
        kernel_size: int,
    ) -> None:
        super().__init__()
        self.add_encoder = spec.add_encoder
        in_channels = encoder_widths[-1]
        channels = num_classes if spec.reduce else in_channels
        # FCN's score layer: the deepest encoder output reduced to K before any upsampling.
        self.reduce_input = nn.Conv2d(in_channels, num_classes, 1) if spec.reduce else nn.Identity()
        self.upsample = nn.ModuleList()
        self.skips = nn.ModuleList()
        self.convs = nn.ModuleList()
        for width in reversed(encoder_widths):  # deepest first
            self.upsample.append(_upsampler(spec.upsample, channels))
            reduce_skip = spec.add_encoder and spec.reduce
            self.skips.append(nn.Conv2d(width, num_classes, 1) if reduce_skip else nn.Identity())
            self.convs.append(_decoder_conv(spec.conv, channels, kernel_size))
        self.out_channels = channels

    def forward(self, x: Tensor, stages: Sequence[Stage]) -> Tensor:
        x = self.reduce_input(x)  # (N, C, ceil(H/16), ceil(W/16)), C = K or 64
        for up, skip, conv, stage in zip(self.upsample, self.skips, self.convs, reversed(stages)):
            x = up(x, stage)  # (N, C, H_i, W_i)
            if self.add_encoder:
                x = x + skip(stage.features)  # pre-pool encoder map, reduced to K if FCN
            x = conv(x)
        return x  # (N, C, H, W)


class SegNetBasicVariant(nn.Module):
    """SegNet-Basic's encoder -> a Table 1 decoder -> logits (N, num_classes, H, W), any H, W."""

    def __init__(self, *, spec: DecoderSpec, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = PoolingEncoder(
            in_channels=in_channels,
            blocks=SEGNET_BASIC.encoder_blocks,
            kernel_size=SEGNET_BASIC.kernel_size,
        )
        self.decoder = VariantDecoder(
            spec=spec,
            encoder_widths=self.encoder.widths,
            num_classes=num_classes,
            kernel_size=SEGNET_BASIC.kernel_size,
        )
        # A reducing (FCN) decoder already ends in K channels of raw scores.
        channels = self.decoder.out_channels
        self.classifier = nn.Identity() if spec.reduce else nn.Conv2d(channels, num_classes, 1)
        init_msra(self)

    def forward(self, images: Tensor) -> Tensor:
        x, stages = self.encoder(images)  # x: (N, 64, ceil(H/16), ceil(W/16))
        return self.classifier(self.decoder(x, stages))  # (N, K, H, W)


def bilinear_interpolation(*, num_classes: int, in_channels: int = 3) -> SegNetBasicVariant:
    """Bilinear-Interpolation (Table 1, 0.625M): 613,003 parameters for K = 11.

    Fixed bilinear x2 upsampling in all 4 decoders and no learned decoder at all: the encoder
    output is scored by a 1x1 conv 64 -> K (715) and the scores are upsampled 4 times. The paper
    says the upsampling "requires no learning"; its count only fits a decoder without the dense
    7x7 convs (with them: 1,416,587 = SegNet-Basic's 1.425M): encoder 612,288 + 715 = 613,003
    rounds to 0.625M on the paper's 0.025M grid (-1.9%). (Keeping depthwise 7x7 decoder convs
    would give 626,315 -- also 0.625M -- but nothing in the text says the decoder keeps convs.)
    Scoring before upsampling equals upsampling 64 channels then scoring (both are linear and
    bilinear weights sum to 1) at 1/6 of the cost.
    """
    return SegNetBasicVariant(
        spec=BILINEAR_INTERPOLATION, num_classes=num_classes, in_channels=in_channels
    )


def segnet_basic_encoder_addition(*, num_classes: int, in_channels: int = 3) -> SegNetBasicVariant:
    """SegNet-Basic-EncoderAddition (Table 1, 1.425M): 1,416,587 parameters for K = 11.

    SegNet-Basic with the encoder's 64-channel pre-pool map added to each unpooled map before
    the decoder's 7x7 conv; the addition has no parameters, so the count is SegNet-Basic's
    exactly (the paper's 1.425M is that count rounded, -0.6%).
    """
    return SegNetBasicVariant(
        spec=ENCODER_ADDITION, num_classes=num_classes, in_channels=in_channels
    )


def segnet_basic_single_channel_decoder(
    *, num_classes: int, in_channels: int = 3
) -> SegNetBasicVariant:
    """SegNet-Basic-SingleChannelDecoder (Table 1, 0.625M): 626,315 parameters for K = 11.

    SegNet-Basic whose 4 decoder convs are depthwise (groups = 64, one 7x7 filter per channel,
    + BN, no ReLU): encoder 612,288 + 4 x 3,328 + classifier 715 = 626,315 (+0.2%).
    """
    return SegNetBasicVariant(
        spec=SINGLE_CHANNEL_DECODER, num_classes=num_classes, in_channels=in_channels
    )


def fcn_basic(*, num_classes: int, in_channels: int = 3) -> SegNetBasicVariant:
    """FCN-Basic (Table 1, 0.65M): 646,839 parameters for K = 11.

    FCN's decoding on SegNet-Basic's encoder: the encoder output and each encoder's pre-pool
    map are reduced to K by 1x1 convs (5 x 715); each decoder upsamples the K-channel scores by
    a learned 8x8 stride-2 deconvolution (K x K x 64 = 7,744, no bias, bilinear init) and adds
    the reduced encoder map. 612,288 + 3,575 + 4 x 7,744 = 646,839 (-0.5%).
    """
    return SegNetBasicVariant(spec=FCN_BASIC, num_classes=num_classes, in_channels=in_channels)


def fcn_basic_no_addition(*, num_classes: int, in_channels: int = 3) -> SegNetBasicVariant:
    """FCN-Basic-NoAddition (Table 1, 0.65M): 643,979 parameters for K = 11.

    FCN-Basic without the encoder maps: only the encoder output is reduced to K (715), then 4
    learned bilinear-initialised deconvolutions: 612,288 + 715 + 4 x 7,744 = 643,979 (-0.9%).
    """
    return SegNetBasicVariant(
        spec=FCN_BASIC_NO_ADDITION, num_classes=num_classes, in_channels=in_channels
    )


def fcn_basic_no_dim_reduction(*, num_classes: int, in_channels: int = 3) -> SegNetBasicVariant:
    """FCN-Basic-NoDimReduction (Table 1, 1.625M): 1,661,579 parameters for K = 11.

    FCN-Basic keeping 64 channels: 8x8 deconvolutions 64 -> 64 (262,144 each, no bias,
    bilinear init), the raw 64-channel pre-pool encoder map added, a 1x1 classifier at the end:
    612,288 + 4 x 262,144 + 715 = 1,661,579, 2.3% above the paper's 1.625M. No reading with 4
    such deconvolutions reaches 1.625M: they alone hold 1.049M next to the encoder's 0.612M
    (the paper's figure is SegNet-Basic's 1.425M plus ~0.2M, i.e. probably rounded down).
    """
    return SegNetBasicVariant(
        spec=FCN_BASIC_NO_DIM_REDUCTION, num_classes=num_classes, in_channels=in_channels
    )


def fcn_basic_no_addition_no_dim_reduction(
    *, num_classes: int, in_channels: int = 3
) -> SegNetBasicVariant:
    """FCN-Basic-NoAddition-NoDimReduction (Table 1, 1.625M): 1,661,579 parameters for K = 11.

    FCN-Basic-NoDimReduction without adding the encoder maps (the addition has no parameters,
    so the count is the same, 2.3% above the paper's figure; see there).
    """
    return SegNetBasicVariant(
        spec=FCN_BASIC_NO_ADDITION_NO_DIM_REDUCTION,
        num_classes=num_classes,
        in_channels=in_channels,
    )


VARIANT_MODELS: dict[str, ModelEntry] = {  # paper Table 1; all trained at SegNet-Basic's rate
    name: ModelEntry(builder, default_lr=BASIC_LR)
    for name, builder in (
        ("bilinear_interpolation", bilinear_interpolation),
        ("segnet_basic_encoder_addition", segnet_basic_encoder_addition),
        ("segnet_basic_single_channel_decoder", segnet_basic_single_channel_decoder),
        ("fcn_basic", fcn_basic),
        ("fcn_basic_no_addition", fcn_basic_no_addition),
        ("fcn_basic_no_dim_reduction", fcn_basic_no_dim_reduction),
        ("fcn_basic_no_addition_no_dim_reduction", fcn_basic_no_addition_no_dim_reduction),
    )
}
