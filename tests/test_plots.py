"""Figures: confusion matrix, per-class IoU, training curves -- valid PNGs, clear error without
matplotlib."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from segnet.cli import main
from segnet.data.classes import SUNRGBD_CLASSES
from segnet.engine import plots as reports
from segnet.engine.train import LOG_FIELDS, append_log
from segnet.errors import SegNetError

needs_matplotlib = pytest.mark.skipif(
    not reports.matplotlib_available(), reason="pip install segnet[plot]"
)


def assert_png(path, *, min_side: int = 300) -> None:
    assert path.is_file()
    with Image.open(path) as image:
        image.verify()  # a complete, uncorrupted PNG
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side and max(image.size) <= 4000
        assert len(np.unique(np.asarray(image.convert("L")))) > 8  # something was drawn
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temp file


@needs_matplotlib
def test_confusion_heatmap(tmp_path) -> None:
    rng = np.random.default_rng(0)
    k = len(SUNRGBD_CLASSES)
    matrix = rng.integers(0, 1000, (k, k)) + np.eye(k, dtype=np.int64) * 5000
    matrix[3] = 0  # a class absent from the split: blank row, no division by zero
    path = reports.plot_confusion(
        matrix.tolist(), SUNRGBD_CLASSES, tmp_path / "c" / "confusion.png"
    )
    assert_png(path, min_side=800)  # 37 classes get a larger figure
    small = reports.plot_confusion([[5, 1], [0, 3]], ["a", "b"], tmp_path / "small.png")
    assert_png(small)
    with pytest.raises(SegNetError, match="expected \\(3, 3\\)"):
        reports.plot_confusion([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "bad.png")


@needs_matplotlib
def test_class_iou_bars(tmp_path) -> None:
    per_class = [{"name": "Sky", "accuracy": 0.9, "iou": 0.8},
                 {"name": "Road", "accuracy": 0.7, "iou": 0.5},
                 {"name": "Bicyclist", "accuracy": float("nan"), "iou": float("nan")}]  # fmt: skip
    assert_png(reports.plot_class_iou(per_class, tmp_path / "class_iou.png"))
    with pytest.raises(SegNetError):
        reports.plot_class_iou([], tmp_path / "none.png")


@needs_matplotlib
def test_training_curves(tmp_path) -> None:
    log = tmp_path / "log.csv"
    for epoch, miou in [(1, None), (2, 0.3), (3, None), (2, 0.35), (3, 0.4)]:  # resumed at epoch 2
        row = {
            "epoch": epoch,
            "lr": 0.1,
            "train_loss": 2.0 / epoch,
            "images_per_s": 5,
            "epoch_s": 1,
        }
        if miou is not None:
            row.update(global_accuracy=0.6, class_accuracy=0.5, miou=miou, bf=0.2)
        append_log(log, row)
    rows = reports.read_log(log)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[2]["miou"] == 0.4
    assert set(LOG_FIELDS) <= set(rows[0])
    assert_png(reports.plot_training_curves(log, tmp_path / "curves.png"))
    with pytest.raises(SegNetError, match="not found"):
        reports.plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert not reports.matplotlib_available()
    with pytest.raises(SegNetError, match=r"pip install segnet\[plot\]"):
        reports.plot_class_iou([{"name": "a", "accuracy": 1.0, "iou": 1.0}], tmp_path / "x.png")


@needs_matplotlib
def test_evaluate_writes_plots(tmp_path, tiny_folder, capsys) -> None:
    import json

    import segnet
    from segnet.data import open_dataset
    from segnet.engine.checkpoint import ModelConfig, save_checkpoint

    info = open_dataset("folder", root=tiny_folder, split="val", num_classes=3).info
    checkpoint = tmp_path / "model.pt"
    model = segnet.build_model("segnet_basic", num_classes=3)
    save_checkpoint(checkpoint, config=ModelConfig.for_dataset("segnet_basic", info), model=model)
    flags = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--data", str(tiny_folder),
             "--num-classes", "3", "--device", "cpu", "--precision", "fp32"]  # fmt: skip
    assert (
        main([*flags, "--plots", str(tmp_path / "plots"), "--out", str(tmp_path / "m.json")]) == 0
    )
    assert_png(tmp_path / "plots" / "confusion.png")
    assert_png(tmp_path / "plots" / "class_iou.png")
    matrix = json.loads((tmp_path / "m.json").read_text())["confusion_matrix"]
    assert np.asarray(matrix).shape == (3, 3) and np.asarray(matrix).sum() == 2 * 32 * 48

    with pytest.MonkeyPatch.context() as patch:  # --plots fails before evaluating
        patch.setitem(sys.modules, "matplotlib", None)
        assert main([*flags, "--plots", str(tmp_path / "p2")]) == 2
    assert "pip install segnet[plot]" in capsys.readouterr().err and not (tmp_path / "p2").exists()
