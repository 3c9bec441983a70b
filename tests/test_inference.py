"""optimize_for_inference: BN folding, channels_last, precision choice; same argmax as eager fp32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import segnet
from conftest import with_trained_bn
from segnet import SegNetError, optimize_for_inference
from segnet.deploy import runtime
from segnet.deploy.optimize import fold_batchnorm
from segnet.models import set_mc_dropout


def test_fold_batchnorm_keeps_outputs_and_removes_bn() -> None:
    model = with_trained_bn(segnet.build_model("segnet_basic", num_classes=4))
    x = torch.randn(2, 3, 37, 45)
    with torch.no_grad():
        expected = model(x)
        folded = fold_batchnorm(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        assert torch.allclose(folded(x), expected, atol=1e-4, rtol=1e-4)


def test_input_model_is_left_untouched() -> None:
    model = with_trained_bn(segnet.build_model("segnet_basic", num_classes=3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize_for_inference(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_auto_precision_is_fp32_on_cpu_and_bf16_is_opt_in(monkeypatch) -> None:
    # Inference keeps fp32 labels by default, AMX or not (deploy/runtime.py).
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: True)
    model = segnet.build_model("segnet_basic", num_classes=3)
    assert optimize_for_inference(model).precision == "fp32"
    optimized = optimize_for_inference(model, precision="bf16")
    assert optimized.precision == "bf16"
    assert next(optimized.model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("amx, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_training_precision_is_bf16_only_on_cpus_with_amx(monkeypatch, amx, expected) -> None:
    # bf16 training paid only with AMX (3.4x our fp32 step there); without it bf16 was slower.
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: amx)
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("auto", cpu, training=True) == expected
    assert runtime.resolve_precision("auto", cpu) == "fp32"
    assert runtime.resolve_precision("fp32", cpu, training=True) == "fp32"  # explicit wins


@pytest.mark.parametrize("avx512, expected", [(True, True), (False, False)])
def test_auto_training_layout_follows_the_cpu(monkeypatch, avx512: bool, expected: bool) -> None:
    monkeypatch.setattr(runtime, "cpu_has_avx512", lambda: avx512)
    assert runtime.resolve_channels_last(None, torch.device("cpu")) is expected
    assert runtime.resolve_channels_last(not expected, torch.device("cpu")) is (
        not expected
    )  # explicit wins


def test_bf16_runs_and_mostly_agrees() -> None:
    # Emulated bf16 is slow on CPUs without native support: a tiny input only.
    model = with_trained_bn(segnet.build_model("segnet_basic", num_classes=3, input_lrn=True))
    x = torch.rand(1, 3, 32, 32) * 255  # raw 0-255 input: LRN stays fp32
    with torch.no_grad():
        got = optimize_for_inference(model, precision="bf16")(x)
        expected = model(x)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    # Untrained logits are nearly tied, so bf16 rounding flips some labels; agreement on real
    # images with trained weights is measured in test_shipped_weights.py.
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.75


def test_fp16_on_cpu_is_refused() -> None:
    with pytest.raises(SegNetError, match="fp16"):
        optimize_for_inference(
            segnet.build_model("segnet_basic", num_classes=3), precision="fp16", device="cpu"
        )


def test_mc_dropout_still_samples() -> None:
    optimized = optimize_for_inference(segnet.build_model("bayesian_segnet_basic", num_classes=3))
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(optimized(x), optimized(x))
    set_mc_dropout(optimized, True)
    assert not torch.equal(optimized(x), optimized(x))


def test_segnet_keeps_no_pre_pool_maps() -> None:
    # SegNet's decoder reads only indices: holding each full-size map would double inference memory.
    model = segnet.build_model("segnet_basic", num_classes=3).eval()
    with torch.no_grad():
        _, stages = model.encoder(torch.randn(1, 3, 32, 32))
    assert all(stage.features is None for stage in stages)
    assert all(stage.indices.dtype == torch.uint8 for stage in stages)
