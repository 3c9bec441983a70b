"""Opt-in test-time augmentation: the views' softmax averaged, mapped back to the input's pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import segnet
from conftest import with_trained_bn
from segnet.cli import main
from segnet.engine.inference import SINGLE_PASS, TestTimeAugmentation, predict_probabilities
from segnet.errors import ArgumentError

CPU = torch.device("cpu")


@pytest.fixture
def model() -> torch.nn.Module:
    return with_trained_bn(segnet.build_model("segnet_basic", num_classes=4)).eval()


def test_default_is_one_forward_pass(model) -> None:
    images = torch.randn(2, 3, 37, 45)
    with torch.no_grad():
        expected = model(images).softmax(1)
    probs = predict_probabilities(model, images, device=CPU)
    assert SINGLE_PASS.num_views == 1
    assert torch.allclose(probs.mean, expected, atol=1e-6)


def test_flip_averages_the_mirrored_prediction_mirrored_back(model) -> None:
    images = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        plain = model(images).softmax(1)
        mirrored = model(images.flip(-1)).softmax(1).flip(-1)
    probs = predict_probabilities(model, images, device=CPU, tta=TestTimeAugmentation(flip=True))
    assert torch.allclose(probs.mean, (plain + mirrored) / 2, atol=1e-6)
    assert not torch.allclose(probs.mean, plain, atol=1e-3)  # the mirror view counted


def test_scales_come_back_at_the_input_size(model) -> None:
    images = torch.randn(2, 3, 37, 45)
    tta = TestTimeAugmentation(flip=True, scales=(0.75, 1.0, 1.25))
    probs = predict_probabilities(model, images, device=CPU, tta=tta)
    assert tta.num_views == 6
    assert probs.mean.shape == (2, 4, 37, 45)
    assert torch.allclose(probs.mean.sum(1), torch.ones(2, 37, 45), atol=1e-5)  # still a softmax


def test_mc_dropout_uncertainty_is_averaged_over_views() -> None:
    model = segnet.build_model("bayesian_segnet_basic", num_classes=3).eval()
    tta = TestTimeAugmentation(flip=True, scales=(0.5, 1.0))
    probs = predict_probabilities(
        model, torch.randn(1, 3, 33, 41), device=CPU, mc_samples=3, tta=tta
    )
    assert probs.uncertainty is not None and probs.uncertainty.shape == (1, 33, 41)


@pytest.mark.parametrize("scales", [(), (0.0,), (5.0,)])
def test_bad_scales_are_refused(scales) -> None:
    with pytest.raises(ArgumentError, match="between 0.25 and 4"):
        TestTimeAugmentation(scales=scales)


def test_cli_bad_scale_is_one_line(checkpoint, tmp_path, capsys) -> None:
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(image)
    argv = ["predict", "--checkpoint", str(checkpoint), str(image), "--out", str(tmp_path / "o")]
    assert main([*argv, "--tta-scales", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tta-scales" in err
    assert not (tmp_path / "o").exists()
    assert main([*argv, "--tta-flip", "--tta-scales", "0.5", "1"]) == 0
    assert np.asarray(Image.open(tmp_path / "o" / "a.png")).shape == (24, 32)


def test_evaluate_records_its_views(checkpoint, tiny_folder, tmp_path) -> None:
    out = tmp_path / "m.json"
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder"]
    argv += ["--data", str(tiny_folder), "--num-classes", "3", "--out", str(out), "--tta-flip"]
    assert main(argv) == 0
    assert json.loads(out.read_text())["tta"] == {"flip": True, "scales": [1.0]}
