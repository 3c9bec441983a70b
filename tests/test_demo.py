"""The built-in demo end to end (short schedule) and `segnet models`."""

from __future__ import annotations

import json

import pytest

from segnet.cli import main


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--images", "8"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and "bf" in metrics
    assert (out / "run" / "best.pt").is_file() and (out / "run" / "log.csv").is_file()
    colors = sorted((out / "predictions").glob("*_color.png"))
    assert len(colors) == 8 and len(list((out / "predictions").glob("*_overlay.png"))) == 8
    assert str(out / "metrics.json") in capsys.readouterr().out


def test_models_lists_parameter_counts(capsys) -> None:
    assert main(["models", "segnet*"]) == 0
    out = capsys.readouterr().out
    assert "29,449,355" in out and "1,416,587" in out
