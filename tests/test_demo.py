"""The built-in demo end to end (short schedule), its HTML report, and `segnet models`."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from segnet.cli import main
from segnet.data.classes import CAMVID_CLASSES, CAMVID_PALETTE
from segnet.engine.plots import read_log
from segnet.engine.report import GalleryItem, write_report


class _Links(HTMLParser):
    """Every src/href of a page, and whether it holds a script."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.script |= tag == "script"
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


def _check_page(page: Path) -> str:
    """The page's text; asserts it needs nothing but the files beside it."""
    text = page.read_text()
    parser = _Links()
    parser.feed(text)
    assert not parser.script and parser.links
    for link in parser.links:
        assert "://" not in link and not link.startswith("/"), link  # relative: opens from disk
        assert (page.parent / link).is_file(), link
    for svg in re.findall(r"<svg.*?</svg>", text, flags=re.S):
        ET.fromstring(svg)  # well-formed inline SVG
    return text


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--images", "8"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and "bf" in metrics
    assert (out / "run" / "best.pt").is_file() and (out / "run" / "log.csv").is_file()
    colors = sorted((out / "predictions").glob("*_color.png"))
    assert len(colors) == 8 and len(list((out / "predictions").glob("*_overlay.png"))) == 8
    assert len(list((out / "ground_truth").glob("*_color.png"))) == 8
    printed = capsys.readouterr().out
    assert str(out / "metrics.json") in printed and str(out / "index.html") in printed

    text = _check_page(out / "index.html")
    for name, colour in zip(CAMVID_CLASSES, CAMVID_PALETTE):  # legend and per-class table
        assert name in text and "#{:02x}{:02x}{:02x}".format(*colour) in text
    assert f"{metrics['miou']:.3f}" in text and f"{metrics['bf']:.3f}" in text
    for row in metrics["per_class"]:
        assert f"{row['iou']:.3f}" in text or row["iou"] != row["iou"]  # NaN: class absent
    assert text.count("<svg") == 2 and text.count("<polyline") >= 2  # loss and validation curves
    assert text.count("_overlay.png") == 2 * 8  # linked and shown, once per val image


def test_report_escapes_text_and_draws_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(
        "epoch,lr,train_loss,images_per_s,epoch_s,global_accuracy,class_accuracy,miou,bf\n"
        "1,0.1,1.5,2,3,,,,\n2,0.05,0.9,2,3,0.5,0.4,0.3,0.2\n3,0.01,0.7,2,3,0.6,0.5,0.4,\n"
    )
    rows = read_log(log)
    assert math.isnan(rows[0]["miou"]) and rows[1]["miou"] == 0.3 and math.isnan(rows[2]["bf"])
    (tmp_path / "a.png").write_bytes(b"")
    metrics = {"global_accuracy": 0.6, "class_accuracy": 0.5, "miou": 0.4, "bf": None,
               "per_class": [{"name": "<road>", "accuracy": 0.7, "iou": float("nan")}]}  # fmt: skip
    page = write_report(
        tmp_path / "index.html", title="a & b", summary=["<script>x</script>"], metrics=metrics,
        class_names=["<road>"], palette=[(1, 2, 255)], log=rows,
        gallery=[GalleryItem(name="x\"y", image="a.png", truth="a.png", overlay="a.png")],
    )  # fmt: skip
    text = _check_page(page)
    assert "<script>" not in text and "&lt;script&gt;" in text and "a &amp; b" in text
    assert "&lt;road&gt;" in text and "#0102ff" in text and "x&quot;y" in text
    assert "0.400" in text and "&ndash;" in text  # missing BF and NaN IoU show a dash
    # loss: 3 dots; validation: G, C, mIoU at epochs 2-3 (2 dots each), BF at epoch 2 (1 dot)
    assert text.count("<circle") == 3 + 3 * 2 + 1


def test_models_lists_parameter_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "segnet*"]) == 0
    out = capsys.readouterr().out
    assert "29,449,355" in out and "1,416,587" in out
