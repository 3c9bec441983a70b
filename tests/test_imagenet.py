"""ImageNet encoder loading: torchvision key names and shapes, generated here (random values),
land in the right layers; every mismatch is a SegNetError naming the key. No network access."""

from __future__ import annotations

import functools
import urllib.error
from pathlib import Path

import pytest
import torch

import segnet
from segnet import SegNetError
from segnet.models import imagenet as pretrained
from segnet.models.imagenet import encoder_arch, imagenet_encoders, load_encoder_weights

# torchvision's cfg "D" and make_layers: conv (+ BN) + ReLU per number, one index per "M" pool.
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
RESNET50 = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]  # planes, blocks, stride


def _bn(state: dict, prefix: str, width: int) -> None:
    state[prefix + "weight"] = torch.rand(width) + 0.5
    state[prefix + "bias"] = torch.randn(width)
    state[prefix + "running_mean"] = torch.randn(width)
    state[prefix + "running_var"] = torch.rand(width) + 0.5
    state[prefix + "num_batches_tracked"] = torch.tensor(7)


def vgg16_state(*, batch_norm: bool, classifier: bool = False) -> dict[str, torch.Tensor]:
    """A torchvision vgg16 / vgg16_bn state dict: real keys and shapes, random values."""
    state: dict[str, torch.Tensor] = {}
    index, channels = 0, 3
    for v in VGG16_CFG:
        if v == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(v, channels, 3, 3)
        state[f"features.{index}.bias"] = torch.randn(v)
        if batch_norm:
            _bn(state, f"features.{index + 1}.", v)
        index += 3 if batch_norm else 2
        channels = v
    if classifier:  # fc6 rows identical, columns distinct: cheap, and shows the flatten order
        state["classifier.0.weight"] = torch.randn(1, 512 * 7 * 7).expand(4096, -1)
        state["classifier.0.bias"] = torch.randn(4096)
        state["classifier.3.weight"] = torch.randn(4096, 1).expand(-1, 4096)
        state["classifier.3.bias"] = torch.randn(4096)
        state["classifier.6.weight"] = torch.randn(1000, 1).expand(-1, 4096)
        state["classifier.6.bias"] = torch.randn(1000)
    return state


@functools.cache
def _resnet50_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """torchvision resnet50's state dict keys and shapes (v1.5: the stride sits on conv2)."""

    def bn(prefix: str, width: int) -> list[tuple[str, tuple[int, ...]]]:
        names = ("weight", "bias", "running_mean", "running_var")
        return [(prefix + n, (width,)) for n in names] + [(prefix + "num_batches_tracked", ())]

    shapes: list[tuple[str, tuple[int, ...]]] = [("conv1.weight", (64, 3, 7, 7))]
    shapes += bn("bn1.", 64)
    inplanes = 64
    for number, (planes, blocks, _stride) in enumerate(RESNET50, start=1):
        for b in range(blocks):
            p = f"layer{number}.{b}."
            shapes += [(p + "conv1.weight", (planes, inplanes, 1, 1))] + bn(p + "bn1.", planes)
            shapes += [(p + "conv2.weight", (planes, planes, 3, 3))] + bn(p + "bn2.", planes)
            shapes += [(p + "conv3.weight", (planes * 4, planes, 1, 1))] + bn(
                p + "bn3.", planes * 4
            )
            if b == 0:
                shapes += [(p + "downsample.0.weight", (planes * 4, inplanes, 1, 1))]
                shapes += bn(p + "downsample.1.", planes * 4)
            inplanes = planes * 4
    return tuple(shapes + [("fc.weight", (1000, 2048)), ("fc.bias", (1000,))])


def resnet50_state() -> dict[str, torch.Tensor]:
    return {
        key: torch.tensor(3) if not shape else torch.randn(shape)
        for key, shape in _resnet50_shapes()
    }


def _save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def test_generated_resnet50_matches_torchvision_size() -> None:
    shapes = dict(_resnet50_shapes())
    assert len(shapes) == 320  # torchvision resnet50().state_dict()
    learnable = [s for k, s in shapes.items() if "running" not in k and "num_batches" not in k]
    assert sum(torch.Size(s).numel() for s in learnable) == 25_557_032  # torchvision's count


def test_vgg_feature_indices_are_torchvisions() -> None:
    assert pretrained.vgg_feature_indices(batch_norm=False) == [
        0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28
    ]  # fmt: skip
    assert pretrained.vgg_feature_indices(batch_norm=True) == [
        0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40
    ]  # fmt: skip


def test_vgg16_bn_lands_in_the_encoder(tmp_path: Path) -> None:
    state = vgg16_state(batch_norm=True)
    model = segnet.build_model("segnet", num_classes=3)
    decoder_before = model.decoder.blocks[0][0][0].weight.clone()
    load_encoder_weights(model, _save(state, tmp_path / "vgg16_bn.pth"))
    blocks = model.encoder.blocks
    assert torch.equal(blocks[0][0][0].weight, state["features.0.weight"])
    assert torch.equal(blocks[0][0][0].bias, state["features.0.bias"])
    assert torch.equal(blocks[0][0][1].running_var, state["features.1.running_var"])
    assert torch.equal(blocks[1][1][0].weight, state["features.10.weight"])  # conv2_2
    assert torch.equal(blocks[1][1][1].weight, state["features.11.weight"])  # its BN
    assert torch.equal(blocks[2][1][0].weight, state["features.17.weight"])  # conv3_2
    assert torch.equal(blocks[4][2][0].weight, state["features.40.weight"])  # conv5_3
    assert torch.equal(blocks[4][2][1].running_mean, state["features.41.running_mean"])
    assert blocks[4][2][1].num_batches_tracked.item() == 7
    assert torch.equal(model.decoder.blocks[0][0][0].weight, decoder_before)


def test_plain_vgg16_loads_convs_and_leaves_bn(tmp_path: Path) -> None:
    state = vgg16_state(batch_norm=False)
    model = segnet.build_model("segnet", num_classes=3)
    load_encoder_weights(model, _save(state, tmp_path / "vgg16.pth"))
    assert torch.equal(model.encoder.blocks[1][0][0].weight, state["features.5.weight"])
    assert torch.equal(model.encoder.blocks[4][2][0].bias, state["features.28.bias"])
    assert torch.equal(model.encoder.blocks[1][0][1].weight, torch.ones(128))  # BN untouched


def test_dilated_deeplab_encoder_takes_vgg(tmp_path: Path) -> None:
    state = vgg16_state(batch_norm=True)
    model = segnet.build_model("deeplab_largefov", num_classes=3)
    load_encoder_weights(model, _save(state, tmp_path / "vgg16_bn.pth"), arch="vgg16_bn")
    assert torch.equal(model.encoder.blocks[4][0][0].weight, state["features.34.weight"])


def test_fcn_fc6_fc7_take_the_imagenet_classifier(tmp_path: Path) -> None:
    state = vgg16_state(batch_norm=True, classifier=True)
    model = segnet.build_model("fcn32s", num_classes=3)
    load_encoder_weights(model, _save(state, tmp_path / "vgg16_bn.pth"))
    row = state["classifier.0.weight"][0]  # Linear input order (C, H, W) = the conv's
    assert torch.equal(model.fc6.weight[5], row.view(512, 7, 7))
    assert torch.equal(model.fc6.bias, state["classifier.0.bias"])
    assert torch.equal(model.fc7.weight[:, :, 0, 0], state["classifier.3.weight"])


def test_resnet50_lands_by_torchvision_name(tmp_path: Path) -> None:
    state = resnet50_state()
    model = segnet.build_model("segnet_resnet50", num_classes=3)
    load_encoder_weights(model, _save(state, tmp_path / "resnet50.pth"))
    encoder = model.encoder
    assert torch.equal(encoder.conv1.weight, state["conv1.weight"])
    assert torch.equal(
        encoder.layer1[0].downsample[0].weight, state["layer1.0.downsample.0.weight"]
    )
    assert torch.equal(encoder.layer3[5].conv2.weight, state["layer3.5.conv2.weight"])
    assert torch.equal(encoder.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])


def test_wrong_shape_names_the_key_and_copies_nothing(tmp_path: Path) -> None:
    state = vgg16_state(batch_norm=True)
    state["features.27.weight"] = torch.randn(512, 256, 3, 3)
    model = segnet.build_model("segnet", num_classes=3)
    before = model.encoder.blocks[0][0][0].weight.clone()
    with pytest.raises(
        SegNetError, match=r"features\.27\.weight.*\(512, 512, 3, 3\).*\(512, 256, 3, 3\)"
    ):
        load_encoder_weights(model, _save(state, tmp_path / "bad.pth"))
    assert torch.equal(model.encoder.blocks[0][0][0].weight, before)


def test_missing_key_is_named(tmp_path: Path) -> None:
    state = vgg16_state(batch_norm=True)
    del state["features.41.running_var"]
    model = segnet.build_model("segnet", num_classes=3)
    with pytest.raises(SegNetError, match=r"missing key 'features\.41\.running_var'"):
        load_encoder_weights(model, _save(state, tmp_path / "bad.pth"))


def test_missing_resnet_key_is_named(tmp_path: Path) -> None:
    state = resnet50_state()
    del state["layer2.0.downsample.1.weight"]
    model = segnet.build_model("segnet_resnet50", num_classes=3)
    with pytest.raises(SegNetError, match=r"layer2\.0\.downsample\.1\.weight"):
        load_encoder_weights(model, _save(state, tmp_path / "bad.pth"))


def test_unexpected_key_is_named(tmp_path: Path) -> None:
    state = vgg16_state(batch_norm=True)
    state["features.44.weight"] = torch.randn(512, 512, 3, 3)  # a VGG19 layer
    model = segnet.build_model("segnet", num_classes=3)
    with pytest.raises(SegNetError, match=r"unexpected key 'features\.44\.weight'"):
        load_encoder_weights(model, _save(state, tmp_path / "vgg19.pth"))


def test_encoder_kind_mismatch(tmp_path: Path) -> None:
    model = segnet.build_model("segnet", num_classes=3)
    with pytest.raises(SegNetError, match="resnet50 weights but this model's encoder is vgg16_bn"):
        load_encoder_weights(model, _save(resnet50_state(), tmp_path / "resnet50.pth"))
    with pytest.raises(SegNetError, match="holds vgg16_bn weights, not vgg16"):
        load_encoder_weights(
            model, _save(vgg16_state(batch_norm=True), tmp_path / "v.pth"), arch="vgg16"
        )


def test_non_rgb_model_is_refused(tmp_path: Path) -> None:
    model = segnet.build_model("segnet", num_classes=3, in_channels=4)
    with pytest.raises(SegNetError, match="3-channel RGB.*takes 4 channels"):
        load_encoder_weights(model, tmp_path / "never_read.pth")


def test_model_without_imagenet_encoder(tmp_path: Path) -> None:
    with pytest.raises(SegNetError, match="no ImageNet-pretrained encoder.*segnet_resnet50"):
        load_encoder_weights(segnet.build_model("segnet_basic", num_classes=3), "imagenet")


def test_unreadable_and_missing_files_are_named(tmp_path: Path) -> None:
    model = segnet.build_model("segnet", num_classes=3)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SegNetError, match="garbage.pth"):
        load_encoder_weights(model, garbage)
    with pytest.raises(SegNetError, match="nowhere.pth: file not found"):
        load_encoder_weights(model, tmp_path / "nowhere.pth")
    with pytest.raises(SegNetError, match="not a torchvision"):
        load_encoder_weights(model, _save({"weight": torch.zeros(1)}, tmp_path / "other.pth"))


def test_imagenet_offline_says_how_to_supply_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    model = segnet.build_model("segnet", num_classes=3)
    with pytest.raises(
        SegNetError, match=r"could not download.*vgg16_bn-6c64b313\.pth.*encoder_weights FILE"
    ):
        load_encoder_weights(model, "imagenet")


@pytest.mark.parametrize(
    "name, arch, url_file",
    [
        ("segnet", None, "vgg16_bn-6c64b313.pth"),
        ("segnet", "vgg16", "vgg16-397923af.pth"),
        ("segnet_resnet50", None, "resnet50-0676ba61.pth"),
    ],
)
def test_imagenet_downloads_the_file_for_the_encoder(
    monkeypatch: pytest.MonkeyPatch, name: str, arch: str | None, url_file: str
) -> None:
    urls = []

    def fake_download(url: str, **kwargs):
        urls.append(url)
        if "resnet" in url:
            return resnet50_state()
        return vgg16_state(batch_norm="_bn" in url)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    load_encoder_weights(segnet.build_model(name, num_classes=3), "imagenet", arch=arch)
    assert urls == [f"https://download.pytorch.org/models/{url_file}"]


def test_encoder_weights_table_matches_the_models() -> None:
    # The registry's imagenet_encoder says which file fits; the structure must agree.
    table = imagenet_encoders()
    assert set(table) == {"segnet", "bayesian_segnet", "fcn32s", "fcn16s", "fcn8s",
                          "deeplab_largefov", "deconvnet", "segnet_resnet50"}  # fmt: skip
    for name, arch in table.items():
        with torch.device("meta"):  # structure only: no 250M-parameter allocations
            model = segnet.build_model(name, num_classes=2)
        assert encoder_arch(model) == arch, name
