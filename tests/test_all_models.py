"""The generic suite: every registered model goes through the same checks -- forward at odd
sizes, backward, train/eval modes, optimize_for_inference, ONNX and torch.export, logit offsets
folded into the score layer. Per-model
files test only what is specific to a model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import model_params
from segnet import optimize_for_inference
from segnet.deploy.export import check_export, export_model
from segnet.deploy.optimize import InferenceModel
from segnet.engine.adjust import fold_offsets
from segnet.engine.checkpoint import ModelConfig
from segnet.errors import ArgumentError

SIZES = [(32, 32), (37, 53)]  # odd sides: every ceil-mode pool and cropping unpool is exercised
EXPORT_SIZE = (45, 61)


@pytest.mark.parametrize("name", model_params())
@pytest.mark.parametrize("size", SIZES)
def test_output_has_input_size(model_factory, name: str, size: tuple[int, int]) -> None:
    model = model_factory(name)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, *size))
    assert logits.shape == (2, 5, *size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", model_params())
def test_gradients_reach_first_layer(model_factory, name: str) -> None:
    model = model_factory(name, num_classes=3, in_channels=4).train()
    logits = model(torch.randn(2, 4, 33, 35))
    F.cross_entropy(logits, torch.randint(0, 3, (2, 33, 35))).backward()
    first = next(p for p in model.parameters() if p.ndim == 4)
    assert first.shape[1] == 4
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("name", model_params())
def test_eval_is_deterministic_and_train_mode_updates_bn(model_factory, name: str) -> None:
    model = model_factory(name)
    x = torch.randn(2, 3, 32, 32)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model.train()(x)
    assert not torch.equal(before, bn.running_mean)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", model_params())
def test_optimized_agrees_with_eager_fp32(model_factory, name: str) -> None:
    model = model_factory(name)
    x = torch.randn(1, 3, *EXPORT_SIZE)
    optimized = optimize_for_inference(model)
    with torch.no_grad():
        expected, got = model(x), optimized(x)
    assert isinstance(optimized, InferenceModel) and optimized.precision == "fp32"
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.995
    assert torch.allclose(got, expected, atol=1e-3 * expected.abs().max().item())


@pytest.mark.parametrize("name", model_params())
def test_onnx_matches_pytorch_in_onnxruntime(model_factory, name: str, tmp_path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    model = model_factory(name)
    path = export_model(model, tmp_path / "model.onnx", format="onnx", size=EXPORT_SIZE)
    result = check_export(path, model, torch.randn(1, 3, *EXPORT_SIZE), format="onnx")
    assert result["agreement"] >= 0.999
    assert result["max_abs_diff"] < 1e-3


@pytest.mark.parametrize("name", model_params())
def test_torch_export_round_trip(model_factory, name: str, tmp_path) -> None:
    model = model_factory(name)
    path = export_model(model, tmp_path / "model.pt2", format="torch-export", size=EXPORT_SIZE)
    result = check_export(path, model, torch.randn(1, 3, *EXPORT_SIZE), format="torch-export")
    assert result["agreement"] >= 0.999 and result["max_abs_diff"] < 1e-3


# Their last upsampling (a bilinear deconvolution, or none after a K-channel sum of upsampled
# maps) does not move every pixel by a constant: evaluate applies their offsets to the scores.
NO_FOLDED_OFFSETS = {"fcn8s", "fcn16s", "fcn32s", "fcn_basic_no_addition"}


@pytest.mark.parametrize("name", model_params())
def test_logit_offsets_fold_into_the_score_layer(model_factory, name: str) -> None:
    model = model_factory(name)
    config = ModelConfig(name=name, num_classes=5, class_names=tuple("abcde"),
                         palette=((0, 0, 0),) * 5, ignore_index=255)  # fmt: skip
    offsets = torch.tensor([1.0, -1.0, 0.5, 0.0, 2.0])
    x = torch.randn(1, 3, *EXPORT_SIZE)
    with torch.no_grad():
        before = model(x)
    if name in NO_FOLDED_OFFSETS:
        with pytest.raises(ArgumentError, match="cannot be folded"):
            fold_offsets(model, config, offsets)
        with torch.no_grad():
            assert torch.equal(model(x), before)  # every tried layer put back
        return
    fold_offsets(model, config, offsets)
    with torch.no_grad():
        moved = model(x) - before  # at a size the check did not use
    torch.testing.assert_close(
        moved, offsets[None, :, None, None].expand_as(moved), atol=1e-4, rtol=0
    )
