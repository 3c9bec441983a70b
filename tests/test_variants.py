"""Paper Table 1 decoder variants: exact sizes and what makes each variant what it is.

Shapes, gradients and train/eval modes are covered for every registered model by test_models.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segnet
from segnet.models.encoders import Stage
from segnet.models.layers import BilinearDeconv, bilinear_kernel
from segnet.models.variants import (
    SEGNET_BASIC_DECODER,
    VARIANT_MODELS,
    BilinearUpsample,
    DecoderSpec,
    IndexUnpool,
    SegNetBasicVariant,
)

# name: (exact parameters for K = 11, the paper's rounded figure); see each builder's docstring.
PARAMETERS = {
    "bilinear_interpolation": (613_003, 0.625e6),
    "segnet_basic_encoder_addition": (1_416_587, 1.425e6),
    "segnet_basic_single_channel_decoder": (626_315, 0.625e6),
    "fcn_basic": (646_839, 0.65e6),
    "fcn_basic_no_addition": (643_979, 0.65e6),
    "fcn_basic_no_dim_reduction": (1_661_579, 1.625e6),
    "fcn_basic_no_addition_no_dim_reduction": (1_661_579, 1.625e6),
}
FCN = [name for name in VARIANT_MODELS if name.startswith("fcn")]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_every_variant_is_registered() -> None:
    assert set(PARAMETERS) == set(VARIANT_MODELS)
    assert set(VARIANT_MODELS) <= set(segnet.list_models())


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_count_matches_paper(name: str) -> None:
    exact, paper = PARAMETERS[name]
    count = _count(segnet.build_model(name, num_classes=11))
    assert count == exact
    assert abs(count - paper) / paper < 0.03


def test_segnet_basic_spec_reproduces_segnet_basic() -> None:
    variant = SegNetBasicVariant(spec=SEGNET_BASIC_DECODER, num_classes=11)
    assert _count(variant) == _count(segnet.build_model("segnet_basic", num_classes=11))


def test_unpooling_needs_encoder_channels() -> None:
    with pytest.raises(ValueError, match="reduce=False"):
        DecoderSpec(upsample="unpool", reduce=True, add_encoder=False, conv=None)


def test_bilinear_interpolation_has_no_learned_upsampling() -> None:
    model = segnet.build_model("bilinear_interpolation", num_classes=11)
    assert not any(isinstance(m, (IndexUnpool, BilinearDeconv)) for m in model.modules())
    assert all(isinstance(up, BilinearUpsample) for up in model.decoder.upsample)
    assert all(_count(up) == 0 for up in model.decoder.upsample)
    assert _count(model.decoder) == 64 * 11 + 11  # only the 1x1 scoring of the encoder output
    x = torch.randn(1, 11, 5, 6)
    up = model.decoder.upsample[0](x, Stage(x, x, (9, 12)))
    assert torch.equal(up, F.interpolate(x, scale_factor=2.0, mode="bilinear")[:, :, :9])


def _decode(model: torch.nn.Module, images: torch.Tensor, replace_features: bool) -> torch.Tensor:
    x, stages = model.encoder(images)
    if replace_features:  # same pooled path and indices, different pre-pool maps
        stages = [s._replace(features=torch.randn_like(s.features)) for s in stages]
    return model.decoder(x, stages)


@pytest.mark.parametrize(
    "name, adds",
    [
        ("segnet_basic_encoder_addition", True),
        ("fcn_basic", True),
        ("fcn_basic_no_dim_reduction", True),
        ("segnet_basic_single_channel_decoder", False),
        ("fcn_basic_no_addition", False),
        ("fcn_basic_no_addition_no_dim_reduction", False),
    ],
)
def test_encoder_maps_reach_the_output_only_when_added(name: str, adds: bool) -> None:
    model = segnet.build_model(name, num_classes=3).eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        same = torch.equal(_decode(model, images, False), _decode(model, images, True))
    assert same is not adds


def test_single_channel_decoder_convs_are_depthwise() -> None:
    model = segnet.build_model("segnet_basic_single_channel_decoder", num_classes=11)
    convs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4
    for conv in convs:
        assert conv.groups == conv.in_channels == conv.out_channels == 64
        assert conv.kernel_size == (7, 7) and conv.weight.shape == (64, 1, 7, 7)
    assert all(isinstance(u, IndexUnpool) for u in model.decoder.upsample)


@pytest.mark.parametrize("name", FCN)
def test_fcn_deconvs_start_as_bilinear_interpolation(name: str) -> None:
    model = segnet.build_model(name, num_classes=5)
    deconvs = [m for m in model.modules() if isinstance(m, BilinearDeconv)]
    channels = 64 if "no_dim_reduction" in name else 5
    assert len(deconvs) == 4
    for deconv in deconvs:  # init_msra left them alone
        assert deconv.kernel_size == (8, 8) and deconv.stride == (2, 2) and deconv.bias is None
        assert torch.equal(deconv.weight, bilinear_kernel(channels, factor=2, kernel_size=8))
    x = torch.randn(2, channels, 6, 7)
    with torch.no_grad():
        up = deconvs[0](x, Stage(x, x, (11, 14)))
    reference = F.interpolate(x, scale_factor=2.0, mode="bilinear")[:, :, :11]
    assert up.shape == (2, channels, 11, 14)
    torch.testing.assert_close(up[:, :, 1:-1, 1:-1], reference[:, :, 1:-1, 1:-1])


def test_fcn_basic_decodes_class_scores() -> None:
    model = segnet.build_model("fcn_basic", num_classes=11)
    assert isinstance(model.classifier, torch.nn.Identity)  # the K-channel decoder is the head
    skips = [m for m in model.decoder.skips if isinstance(m, torch.nn.Conv2d)]
    assert len(skips) == 4 and all(s.kernel_size == (1, 1) and s.out_channels == 11 for s in skips)
