"""Export specifics: the graph holds no MaxUnpool, dynamic shapes, the CLI verb and its errors.
Every model's ONNX and torch.export round trip is in test_all_models.py."""

from __future__ import annotations

import pytest
import torch

from segnet.cli import main
from segnet.deploy.export import check_export, export_model
from segnet.engine.checkpoint import ModelConfig, load_model, read_checkpoint, save_checkpoint
from segnet.models import layers


def test_onnx_graph_has_no_unpool_or_indices(model_factory, tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    path = export_model(
        model_factory("segnet_basic"), tmp_path / "m.onnx", format="onnx", size=(32, 32)
    )
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "MaxUnpool" not in ops and "MaxPool" not in ops  # plain Max/Greater/Where/Reshape
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp file left


@pytest.mark.slow
def test_dynamic_onnx_takes_other_sizes(model_factory, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    model = model_factory("segnet_basic")
    path = export_model(model, tmp_path / "m.onnx", format="onnx", size=(64, 96), dynamic=True)
    for size in [(32, 160), (96, 64)]:
        images = torch.randn(2, 3, *size)
        assert check_export(path, model, images, format="onnx")["agreement"] >= 0.999


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (45, 60), (1, 5), (1, 1)])
def test_graph_pooling_equals_eager_pooling(size) -> None:
    x = torch.randint(0, 3, (2, 4, *size)).float()  # many ties
    values, indices = layers._pool_forward_graph(x)
    ref_values, ref_indices = layers._pool_forward_native(x)
    assert torch.equal(values, ref_values) and torch.equal(indices, ref_indices)


def _checkpoint(tmp_path, name: str = "segnet_basic"):
    config = ModelConfig(name=name, num_classes=3, class_names=("a", "b", "c"),
                         palette=((0, 0, 0), (1, 1, 1), (2, 2, 2)), ignore_index=255)  # fmt: skip
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, config=config, model=config.build())
    return path


def test_cli_export_onnx_checks_the_file(tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    code = main(["export", "--checkpoint", str(_checkpoint(tmp_path)), "--format", "onnx",
                 "--out", str(out), "--size", "37x41"])  # fmt: skip
    assert code == 0 and out.is_file()
    assert "100.000% of pixels agree" in capsys.readouterr().out


def test_cli_export_torch_export(tmp_path) -> None:
    out = tmp_path / "model.pt2"
    code = main(["export", "--checkpoint", str(_checkpoint(tmp_path)), "--format", "torch-export",
                 "--out", str(out), "--size", "32x32", "--dynamic"])  # fmt: skip
    assert code == 0
    program = torch.export.load(str(out))
    assert program.module()(torch.randn(2, 3, 64, 96)).shape == (2, 3, 64, 96)


def test_cli_export_weights_is_an_fp16_checkpoint_that_predicts_alike(tmp_path, capsys) -> None:
    """What the package ships: no optimizer, fp16 tensors, the config inside; loads as any
    checkpoint (in fp32) and scores an image as the full checkpoint does, to fp16 rounding."""
    ckpt, out = _checkpoint(tmp_path), tmp_path / "small.pt"
    assert (
        main(["export", "--checkpoint", str(ckpt), "--format", "weights", "--out", str(out)]) == 0
    )
    assert "segnet_basic weights written to" in capsys.readouterr().out
    payload = read_checkpoint(out)
    assert "optimizer" not in payload and payload["model"]["name"] == "segnet_basic"
    assert {v.dtype for v in payload["state_dict"].values() if v.is_floating_point()} == {
        torch.float16
    }
    full, _, _ = load_model(ckpt)
    small, _, _ = load_model(out)
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    # an untrained net's small logits move 1-3% (norm) under fp16 rounding; wrong weights ~100%
    with torch.no_grad():
        a, b = full.eval()(x), small.eval()(x)
    assert (a - b).norm() <= 0.1 * a.norm()
    assert main(["export", "--checkpoint", str(ckpt), "--format", "weights", "--out",
                 str(tmp_path / "x.pt"), "--precision", "int8"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip() == (
        "segnet: error: --format weights stores fp16 weights; drop --precision int8"
    )
    assert not (tmp_path / "x.pt").exists()
    assert main(["export", "--checkpoint", str(ckpt), "--format", "weights", "--out",
                 str(tmp_path / "x.pt"), "--size", "64x64"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip() == (
        "segnet: error: --format weights stores fp16 weights; drop --size"
    )
    assert not (tmp_path / "x.pt").exists()


def test_cli_export_bad_inputs(tmp_path, capsys) -> None:
    ckpt = str(_checkpoint(tmp_path))
    out = str(tmp_path / "m.onnx")
    assert (
        main(["export", "--checkpoint", ckpt, "--out", out, "--size", "360x480", "--dynamic"]) == 2
    )
    assert "multiples of 32" in capsys.readouterr().err
    assert main(["export", "--checkpoint", ckpt, "--out", out, "--size", "big"]) == 2
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", out]) == 2


def test_exporter_failure_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("Dynamic control flow is not supported\nlong trace ...")

    monkeypatch.setattr(torch.export, "export", broken)
    out = tmp_path / "m.pt2"
    assert main(["export", "--checkpoint", str(_checkpoint(tmp_path)), "--format", "torch-export",
                 "--out", str(out), "--size", "32x32"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "segnet: error: --format torch-export: export failed (RuntimeError: Dynamic control flow is not supported)"
    )
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    # a file where a folder is due: refused before the model is even loaded
    (tmp_path / "a_file").write_text("x")
    bad_out = str(tmp_path / "a_file" / "m.onnx")
    assert main(["export", "--checkpoint", str(tmp_path / "ckpt.pt"), "--out", bad_out]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_export_that_fails_its_check_is_not_written(tmp_path, capsys, monkeypatch) -> None:
    import segnet.deploy.export as export

    monkeypatch.setattr(
        export, "check_export", lambda *a, **k: {"agreement": 0.5, "max_abs_diff": 9.0}
    )
    out = tmp_path / "m.pt2"
    argv = ["export", "--checkpoint", str(_checkpoint(tmp_path)), "--format", "torch-export",
            "--out", str(out), "--size", "32x32"]  # fmt: skip
    assert main(argv) == 2
    assert "not written: the exported model disagrees" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no file, no temp file
