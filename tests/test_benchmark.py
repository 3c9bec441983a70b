"""``segnet benchmark`` and its reference: bad input, a tiny run, and what the figures rest on."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
import torch

import segnet
from segnet.benchmark import reference_model
from segnet.benchmark.measure import copy_for_training
from segnet.benchmark.memory import saved_indices_mb
from segnet.cli import main
from segnet.cli.args import image_size


@pytest.mark.parametrize("name", ["segnet_basic", "segnet"])
def test_reference_loads_our_weights_and_agrees(name: str) -> None:
    ours = segnet.build_model(name, num_classes=4).eval()
    reference = reference_model(name, num_classes=4).eval()
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        assert torch.allclose(reference(x), ours(x), atol=1e-4)


def test_indices_in_training_are_8x_smaller() -> None:
    ours = copy_for_training(segnet.build_model("segnet_basic", num_classes=3), channels_last=True)
    reference = copy_for_training(
        reference_model("segnet_basic", num_classes=3), channels_last=False
    )
    x = torch.randn(1, 3, 64, 64)
    assert saved_indices_mb(reference, x) >= 8 * saved_indices_mb(ours, x) > 0


def test_tiny_benchmark_run(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--models", "segnet_basic", "--size", "32x48", "--batch", "2",
                 "--repeats", "1", "--json", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "reference" in text and "ours" in text and "gain" in text
    report = json.loads(out.read_text())
    (result,) = report["results"]
    rows = {row["implementation"]: row for row in result["rows"]}
    assert set(rows) == {"reference", "ours"}
    assert rows["ours"]["parameters"] == rows["reference"]["parameters"] == 1_416_587
    assert rows["ours"]["forward_ms"] > 0 and rows["ours"]["backward_ms"] > 0
    assert rows["reference"]["indices_mb"] == pytest.approx(8 * rows["ours"]["indices_mb"])
    assert result["agreement"] >= 0.995


def test_precision_flag_sets_ours_and_leaves_the_reference_fp32(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--models", "segnet_basic", "--size", "32x32", "--repeats", "1",
                 "--precision", "bf16", "--json", str(out)])  # fmt: skip
    assert code == 0
    assert "optimized (bf16) vs fp32 eager" in capsys.readouterr().out
    (result,) = json.loads(out.read_text())["results"]
    assert result["precision"] == "bf16" and result["agreement"] > 0.5


def test_model_without_reference_is_benchmarked_alone(capsys) -> None:
    assert (
        main(
            [
                "benchmark",
                "--models",
                "fcn_basic",
                "--size",
                "32x32",
                "--repeats",
                "1",
                "--no-training",
            ]
        )
        == 0
    )
    rows = [
        line.split()[:2]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("fcn_basic ")
    ]
    assert rows == [["fcn_basic", "ours"]]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--size", "360"], "--size"),
        (["--size", "0x480"], "--size"),
        (["--size", "axb"], "--size"),
        (["--batch", "0"], "--batch"),
        (["--repeats", "0"], "--repeats"),
        (["--models", "segnett"], "segnet_basic"),
        (["--device", "tpu"], "--device"),
        (["--precision", "fp16"], "--precision fp16 needs a GPU"),
    ],
)
def test_bad_input_is_one_line_exit_2(flags, message, capsys) -> None:
    assert main(["benchmark", "--size", "32x32", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert re.match(r"segnet( benchmark)?: error: ", err) and message in err and "\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_refused(capsys) -> None:
    assert main(["benchmark", "--device", "cuda", "--size", "32x32"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_image_size_flag() -> None:
    assert image_size("360x480") == (360, 480)
    assert image_size("64X64") == (64, 64)
    for bad in ("360*480", "0x5", "x", "3x4x5"):
        with pytest.raises(argparse.ArgumentTypeError):
            image_size(bad)


def test_shipped_weights_agreement_on_real_images(tmp_path, capsys) -> None:
    """--weights and --images: the optimized model is checked against eager fp32 on given images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(2):  # smooth images, as photos are: random noise would test nothing real
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((80, 60), Image.BILINEAR).save(tmp_path / f"im{i}.png")
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--models", "segnet_basic", "--weights", "camvid", "--size", "32x48",
                 "--repeats", "1", "--no-training", "--images", str(tmp_path), "--json", str(out)])  # fmt: skip
    assert code == 0 and "(2 images)" in capsys.readouterr().out
    (result,) = json.loads(out.read_text())["results"]
    assert result["agreement_on"] == "2 images" and result["agreement"] >= 0.995


def test_benchmark_unknown_weights_is_one_line(capsys) -> None:
    argv = ["benchmark", "--models", "segnet_basic", "--weights", "cityscapes", "--size", "32x32"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segnet: error: no shipped weights 'cityscapes'") and "\n" not in err
