"""The demo page end to end in headless Chromium: Debian's ``chromium`` (``.ci/run`` installs
it; nothing is downloaded here) driven by Playwright against the real ``segnet serve``.

With ``SEGNET_SCREENSHOT=docs/serve.png`` the server runs the shipped CamVid SegNet-Basic on a
real CamVid val image, and the page is saved there (the README's picture):

    SEGNET_SCREENSHOT=docs/serve.png .venv/bin/python -m pytest tests/test_serve_browser.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
CAMVID_IMAGE = "val/0016E5_07959.png"  # a street with road, cars, buildings, sky and a cyclist

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} not found (Debian package chromium; .ci/run installs it)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (segnet[dev]) missing")
pytest.importorskip("starlette", reason="segnet[serve] not installed")

from conftest import CAMVID_ROOT  # noqa: E402
from serve_helpers import serve_load, write_clip  # noqa: E402


@pytest.fixture
def demo(checkpoint, tmp_path):
    """(server args, image to upload, screenshot path): the tiny checkpoint and a synthetic
    image, or with SEGNET_SCREENSHOT the shipped weights on a real CamVid image."""
    target = os.environ.get("SEGNET_SCREENSHOT")
    if not target:
        image = tmp_path / "street.png"
        Image.fromarray(serve_load.sample_image(96, 128)).save(image)
        return ["--checkpoint", str(checkpoint)], image, tmp_path / "serve.png"
    if not (CAMVID_ROOT / CAMVID_IMAGE).is_file():
        pytest.skip(f"SEGNET_SCREENSHOT needs the real CamVid image {CAMVID_ROOT / CAMVID_IMAGE}")
    return (
        ["--model", "segnet_basic", "--weights", "camvid"],
        CAMVID_ROOT / CAMVID_IMAGE,
        Path(target),
    )


def test_page_uploads_shows_overlay_slider_and_legend(demo, tmp_path):
    args, image, screenshot = demo
    height, width = np.asarray(Image.open(image)).shape[:2]
    with serve_load.start_server(args) as server, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            _upload_and_check(page, server.url, image, width, height)
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    # offline page: every request goes to the server (or is the page's own blob/data URL)
    assert all(u.startswith((server.url, "blob:", "data:")) for u in requested), requested
    assert Image.open(shot).size[0] == 1400
    if screenshot != tmp_path / "serve.png":
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, screenshot)


def _upload_and_check(page, url: str, image: Path, width: int, height: int) -> None:
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    info = page.evaluate("fetch('/api/info').then(r => r.json())")
    rows = page.locator("#legend tbody tr")
    assert rows.count() == len(info["classes"])
    assert [rows.nth(i).get_attribute("data-class") for i in range(rows.count())] == info["classes"]
    page.set_input_files("#file", str(image))
    page.wait_for_selector("#overlay.ready", timeout=180_000)
    size = page.evaluate("[$('color-img').naturalWidth, $('color-img').naturalHeight]")
    assert size == [width, height]
    assert "ms" in page.inner_text("#timings") and "inference" in page.inner_text("#timings")
    assert page.inner_text("#status") == image.name
    _check_legend(page, info)
    _move_slider(page)


def _check_legend(page, info: dict) -> None:
    """Swatches in the palette's colours; pixel shares filled in, summing to 100%."""
    swatches = page.eval_on_selector_all(
        "#legend .swatch", "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )
    assert swatches == [f"rgb({r}, {g}, {b})" for r, g, b in info["palette"]]
    shares = [float(t.rstrip("%")) for t in page.locator("#legend .pct").all_inner_texts()]
    assert len(shares) == len(info["classes"]) and sum(shares) == pytest.approx(100, abs=0.5)


def _move_slider(page) -> None:
    """Drag the opacity slider to ~80%: the colour layer's opacity and the label follow."""
    assert page.eval_on_selector("#overlay-color", "e => getComputedStyle(e).opacity") == "0.5"
    box = page.locator("#opacity").bounding_box()
    page.mouse.click(box["x"] + 0.5 * box["width"], box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    value = int(page.input_value("#opacity"))
    assert 70 <= value <= 90
    assert page.inner_text("#opacity-value") == f"{value}%"
    opacity = float(page.eval_on_selector("#overlay-color", "e => getComputedStyle(e).opacity"))
    assert opacity == pytest.approx(value / 100)


def test_page_plays_the_overlay_of_an_uploaded_video(checkpoint, tmp_path):
    pytest.importorskip("av", reason="segnet[video] not installed")
    clip = write_clip(tmp_path / "clip.mp4", frames=6, size=(48, 64), fps=10)
    with (
        serve_load.start_server(["--checkpoint", str(checkpoint)]) as server,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_selector("body[data-ready='1']")
            assert "video/*" in page.get_attribute("#file", "accept")
            page.set_input_files("#file", str(clip))
            page.wait_for_selector("#overlay.ready", timeout=180_000)
            size = page.evaluate("[$('overlay-video').videoWidth, $('overlay-video').videoHeight]")
            status, timings = page.inner_text("#status"), page.inner_text("#timings")
            colour_panel_hidden = page.is_hidden("#color-panel")
        finally:
            browser.close()
    assert size == [64, 48], status
    assert timings.startswith("6 frames, 64x48 px") and colour_panel_hidden
