"""What is specific to the comparison networks (FCN, DeepLab-LargeFOV, DeconvNet, U-Net, ResNet-50
SegNet); shapes, gradients and train/eval modes are covered for every model by test_models.py."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segnet
from segnet.models.comparison import COMPARISON_MODELS
from segnet.models.layers import BilinearDeconv, SameConv2d, SameConvTranspose2d, bilinear_kernel

# Exact counts for K=11, computed from the layer shapes in each module's docstring.
PARAMETERS = {
    "fcn32s": 134_809_675,  # encoder 14,723,136 + fc6 102,764,544 + fc7 16,781,312 + ...
    "fcn16s": 134_445_542,
    "fcn8s": 134_357_377,
    "deeplab_largefov": 20_503_627,
    "deconvnet": 251_805_003,
    "unet": 31_044_171,
    "segnet_resnet50": 37_713_163,
}


@functools.cache
def built(name: str) -> nn.Module:
    """One K=11 model per name for the read-only checks below (these are big to build)."""
    return segnet.build_model(name, num_classes=11).eval()


@pytest.fixture(autouse=True, scope="module")
def _free_models():
    yield
    built.cache_clear()  # ~2.5 GB of FCN / DeconvNet weights


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_all_registered() -> None:
    assert set(COMPARISON_MODELS) == set(PARAMETERS)
    assert set(PARAMETERS) <= set(segnet.list_models())


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_count(name: str) -> None:
    assert count(built(name)) == PARAMETERS[name]


def test_fcn_encoder_is_segnets() -> None:
    assert count(built("fcn8s").encoder) == count(
        segnet.build_model("segnet", num_classes=11).encoder
    )


@pytest.mark.parametrize(
    "name, factors", [("fcn32s", [32]), ("fcn16s", [2, 16]), ("fcn8s", [2, 2, 8])]
)
def test_fcn_deconvs_start_bilinear_and_survive_msra(name: str, factors: list[int]) -> None:
    model = built(name)
    deconvs = [m for m in model.modules() if isinstance(m, BilinearDeconv)]
    assert sorted(d.factor for d in deconvs) == sorted(factors)
    for deconv in deconvs:
        assert deconv._keep_init and deconv.bias is None
        assert (
            deconv.kernel_size == (2 * deconv.factor,) * 2 and deconv.stride == (deconv.factor,) * 2
        )
        assert torch.equal(deconv.weight, bilinear_kernel(11, factor=deconv.factor))
    assert [m.in_channels for m in model.score_pools] == [512, 256][: len(factors) - 1]


def test_fc_layers_are_vggs_as_convs() -> None:
    model = built("fcn8s")
    assert model.fc6.weight.shape == (4096, 512, 7, 7) and model.fc6.padding == (3, 3)
    assert model.fc7.weight.shape == (4096, 4096, 1, 1)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]


@pytest.mark.parametrize("factor", [2, 8])
def test_bilinear_deconv_interpolates(factor: int) -> None:
    """Away from the border the initial deconv is bilinear interpolation (half-pixel centres)."""
    deconv = BilinearDeconv(2, factor=factor)
    x = torch.randn(1, 2, 6, 7)
    with torch.no_grad():
        out = deconv(x)
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert out.shape == expected.shape
    inner = (..., slice(factor, -factor), slice(factor, -factor))
    torch.testing.assert_close(out[inner], expected[inner])


def test_deeplab_dilation_rates_and_strides() -> None:
    model = built("deeplab_largefov")
    dilations = [unit[0].dilation for block in model.encoder.blocks for unit in block]
    assert dilations == [(1, 1)] * 10 + [(2, 2)] * 3  # conv5 dilated by 2
    assert all(
        unit[0].padding == unit[0].dilation for block in model.encoder.blocks for unit in block
    )
    assert [pool.stride for pool in model.encoder.pools] == [2, 2, 2, 1, 1]
    assert model.fc6.dilation == (12, 12) and model.fc6.padding == (12, 12)
    assert model.fc6.weight.shape == (1024, 512, 3, 3)
    assert model.fc7.weight.shape == (1024, 1024, 1, 1)
    with torch.no_grad():
        assert model.encoder(torch.randn(1, 3, 64, 64)).shape == (1, 512, 9, 9)  # 64->33->17->9


def test_deconvnet_mirrors_the_encoder_with_transposed_convs() -> None:
    model = built("deconvnet")
    assert isinstance(model.fc6[0], SameConv2d) and model.fc6[0].weight.shape == (4096, 512, 7, 7)
    assert isinstance(model.fc6_deconv[0], nn.ConvTranspose2d)
    assert model.fc6_deconv[0].weight.shape == (4096, 512, 7, 7)  # (in, out, k, k)
    widths = [[unit[0].out_channels for unit in block] for block in model.decoder.blocks]
    assert widths == [[512, 512, 512], [512, 512, 256], [256, 256, 128], [128, 64], [64, 64]]
    assert all(
        isinstance(unit[0], nn.ConvTranspose2d) and isinstance(unit[1], nn.BatchNorm2d)
        for block in model.decoder.blocks
        for unit in block
    )
    assert model.classifier.kernel_size == (1, 1)


def test_unet_widths_and_concatenation() -> None:
    model = built("unet")
    assert [block[1][0].out_channels for block in model.down] == [64, 128, 256, 512, 1024]
    assert [block[0][0].in_channels for block in model.up] == [1024, 512, 256, 128]  # C + C


def test_resnet50_encoder_has_torchvision_names() -> None:
    encoder = built("segnet_resnet50").encoder
    state = encoder.state_dict()
    assert len(state) == 318  # torchvision resnet50's 320 keys minus fc.weight, fc.bias
    assert count(encoder) == 23_508_032  # torchvision resnet50 (25,557,032) minus fc
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_var": (64,),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.num_batches_tracked": (),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.bn3.weight": (1024,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert "layer1.1.downsample.0.weight" not in state
    assert encoder.layer2[0].conv2.stride == (2, 2) and encoder.layer2[0].conv1.stride == (1, 1)


def test_resnet50_stages_unpool_the_stem_and_upsample_the_rest() -> None:
    encoder = built("segnet_resnet50").encoder
    with torch.no_grad():
        x, stages = encoder(torch.randn(1, 3, 37, 53))
    assert x.shape == (1, 2048, 2, 2)
    assert [s.size for s in stages] == [(37, 53), (19, 27), (10, 14), (10, 14), (5, 7), (3, 4)]
    assert [s.indices is not None for s in stages] == [False, True, False, False, False, False]
    assert stages[1].indices.dtype == torch.uint8 and stages[1].indices.shape == (1, 64, 10, 14)


@pytest.mark.parametrize(
    "cls, op", [(SameConv2d, F.conv2d), (SameConvTranspose2d, F.conv_transpose2d)]
)
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (1, 9), (5, 8)])
def test_same_convs_match_the_full_kernel(cls, op, size: tuple[int, int]) -> None:
    layer = cls(3, 4, 7).double()
    x = torch.randn(2, 3, *size, dtype=torch.double, requires_grad=True)
    params = [x, layer.weight, layer.bias]
    grads = torch.autograd.grad(layer(x).square().sum(), params)
    full = op(x, layer.weight, layer.bias, padding=3)
    expected = torch.autograd.grad(full.square().sum(), params)
    torch.testing.assert_close(layer(x), full)
    for grad, want in zip(grads, expected):
        torch.testing.assert_close(grad, want)
