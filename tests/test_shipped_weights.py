"""Weights shipped inside the package load offline, predict, and score on real CamVid val."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import segnet
from segnet.cli import main
from segnet.data import CamVid
from segnet.engine.inference import predict_probabilities
from segnet.engine.weights import available_weights, load_pretrained_with_config
from segnet.metrics.confusion import ConfusionMatrix

# {model: mIoU floor on the first 12 CamVid val images}, each measured when its weights were
# packed (docs/results.md); the floor leaves room for numeric differences across CPUs, not for
# a broken model.
VAL12_MIOU_FLOOR = {
    "segnet_basic": 0.52,  # measured 0.592 (GPU recipe, epoch 113, fp16)
    "segnet": 0.55,  # measured 0.625 (segnet_cpu_long.yaml, epoch 72, fp16)
}


@pytest.mark.parametrize("name", sorted(VAL12_MIOU_FLOOR))
def test_shipped_camvid_weights_load_and_run(name: str) -> None:
    assert "camvid" in available_weights()[name]
    model = segnet.load_pretrained(name, "camvid")
    config = model.segnet_config
    assert config.name == name and config.num_classes == 11 and config.class_names[3] == "Road"
    with torch.no_grad():  # any size: the net pads to its pooling multiple and crops back
        logits = model(torch.randn(1, 3, 45, 61))
    assert logits.shape == (1, 11, 45, 61) and logits.dtype == torch.float32


def test_predict_with_shipped_weights(tmp_path) -> None:
    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(
        image
    )
    assert (
        main(
            [
                "predict",
                "--model",
                "segnet_basic",
                "--weights",
                "camvid",
                str(image),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    assert np.asarray(Image.open(tmp_path / "o" / "street.png")).shape == (40, 56)


def test_unknown_weights_list_the_available_ones() -> None:
    available = "available: segnet with weights camvid, segnet_basic with weights camvid"
    with pytest.raises(segnet.SegNetError, match=available):
        segnet.load_pretrained("segnet_basic", "cityscapes")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VAL12_MIOU_FLOOR))
def test_shipped_weights_reach_val_floor(name: str, camvid_root) -> None:
    model, config = load_pretrained_with_config(name, "camvid")
    val = CamVid(camvid_root, split="val")
    confusion = ConfusionMatrix(11, ignore_index=config.ignore_index)
    for index in range(12):
        image, mask = val[index]
        probs = predict_probabilities(model, image[None], device=torch.device("cpu")).mean
        confusion.update(probs.argmax(1), mask[None])
    assert confusion.compute()["miou"] >= VAL12_MIOU_FLOOR[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VAL12_MIOU_FLOOR))
def test_optimized_model_agrees_on_real_val_images(name: str, camvid_root) -> None:
    """optimize_for_inference (what predict/evaluate run) against eager fp32, trained weights,
    real images: the issue asks >= 99.5% of pixels with the same label (measured 99.999% on 12
    images with the stage-3 weights; SegNet's: 100% of 3 images, 2026-12-02)."""
    model, _ = load_pretrained_with_config(name, "camvid")
    optimized = segnet.optimize_for_inference(model, precision="auto")
    val = CamVid(camvid_root, split="val")
    same = total = 0
    with torch.no_grad():
        for index in range(3):
            image, _ = val[index]
            eager = model(image[None]).argmax(1)
            same += (optimized(image[None]).argmax(1) == eager).sum().item()
            total += eager.numel()
    assert same / total >= 0.995
