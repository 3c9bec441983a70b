"""A run's one-page HTML report (the demo's ``index.html``): metrics, per-class IoU, training
curves, and validation images beside their ground truth under a class legend.

The page opens from disk in any browser, with no server, script or network: images are linked
by paths relative to the page (the output folder moves as one piece), the curves are inline
SVG drawn here from the run's ``log.csv`` (so matplotlib, an optional dependency, is not
needed), and the style sheet is inline. All text is HTML-escaped; colours come from palette
integers, never from strings.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..files import write_text

Colour = Sequence[int]  # (r, g, b), 0..255

# (log.csv / metrics key, label, line colour, meaning): the validation series and headline
VAL_SERIES = (
    ("global_accuracy", "G", "#1f77b4", "global accuracy: the share of pixels labelled right"),
    ("class_accuracy", "C", "#ff7f0e", "class average accuracy: mean per-class recall"),
    ("miou", "mIoU", "#2ca02c", "mean intersection over union of the classes"),
    ("bf", "BF", "#d62728", "boundary F1: class contours matched within 0.75% of the diagonal"),
)
_CHART_W, _CHART_H, _PAD = 420, 240, (28, 16, 34, 48)  # SVG px; padding top, right, bottom, left

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1320px;
       padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.5em; margin-bottom: 0.2em; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px; text-align: right; }}
th {{ border-bottom: 1px solid #999; }} td.name, th.name {{ text-align: left; }}
.headline td {{ font-size: 1.3em; font-weight: 600; }}
.swatch {{ display: inline-block; width: 1em; height: 1em; border: 1px solid #555;
          vertical-align: -0.15em; margin-right: 0.35em; }}
.legend span.item {{ display: inline-block; margin: 0 1em 0.3em 0; white-space: nowrap; }}
.bar {{ display: inline-block; height: 0.8em; background: #2ca02c; }}
.row {{ display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }}
.charts svg {{ margin: 0 1em 0.5em 0; }}
.gallery {{ display: grid; gap: 14px; grid-template-columns: repeat(auto-fill, minmax(400px, 1fr)); }}
.gallery figure {{ margin: 0; }} .gallery img {{ width: 32.5%; image-rendering: pixelated; }}
figcaption, .note {{ font-size: 0.85em; color: #555; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


@dataclass(frozen=True)
class GalleryItem:
    """One validation image on the page; paths are relative to the page's folder."""

    name: str
    image: str  # the input (RGB)
    truth: str  # ground-truth colour map
    overlay: str  # prediction colours blended over the input
    caption: str = ""


def write_report(
    path: Path,
    *,
    title: str,
    summary: Sequence[str],
    metrics: dict,
    class_names: Sequence[str],
    palette: Sequence[Colour],
    log: Sequence[dict[str, float | None]],
    gallery: Sequence[GalleryItem],
    void_colour: Colour | None = None,
) -> Path:
    """Writes the page atomically and returns ``path``.

    ``metrics`` is :func:`segnet.engine.evaluate.evaluate`'s dict (G, C, mIoU, BF, per_class);
    ``log`` the rows of ``log.csv`` (:func:`segnet.engine.plots.read_log`, blanks NaN); ``summary`` lines go under the title;
    ``void_colour``, where given, is how the ground-truth images show unlabelled pixels.
    """
    sections = [
        f"<h1>{_e(title)}</h1>",
        *(f'<p class="note">{_e(line)}</p>' for line in summary),
        "<h2>Validation metrics</h2>",
        _headline_table(metrics),
        '<div class="row"><div>',
        _per_class_table(metrics, palette),
        "</div><div>",
        _curves(log),
        "</div></div>",
        f"<h2>Validation images ({len(gallery)}): input, ground truth, prediction</h2>",
        _legend(class_names, palette, void_colour),
        _gallery(gallery),
    ]
    write_text(path, _PAGE.format(title=_e(title), body="\n".join(sections)))
    return path


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _hex(colour: Colour) -> str:
    r, g, b = (min(255, max(0, int(c))) for c in colour)
    return f"#{r:02x}{g:02x}{b:02x}"


def _swatch(colour: Colour) -> str:
    return f'<span class="swatch" style="background:{_hex(colour)}"></span>'


def _number(value: float | None, digits: int = 3) -> str:
    """A metric for display; a class absent from the split (NaN) or a missing BF shows a dash."""
    if value is None or not math.isfinite(value):
        return "&ndash;"
    return f"{value:.{digits}f}"


def _headline_table(metrics: dict) -> str:
    """G, C, mIoU, BF: the paper's four numbers (Sec. 5), with what each one measures."""
    head = "".join(f'<th title="{_e(meaning)}">{label}</th>' for _, label, _, meaning in VAL_SERIES)
    row = "".join(f"<td>{_number(metrics.get(key))}</td>" for key, *_ in VAL_SERIES)
    meanings = "; ".join(f"{label}: {_e(meaning)}" for _, label, _, meaning in VAL_SERIES)
    images = metrics.get("num_images")
    scope = f"Over {_e(images)} held-out images, void pixels not scored. " if images else ""
    table = f'<table class="headline"><tr>{head}</tr><tr>{row}</tr></table>'
    return f'{table}<p class="note">{scope}{meanings}.</p>'


def _per_class_table(metrics: dict, palette: Sequence[Colour]) -> str:
    """One row per class: colour, IoU (with a bar), accuracy (recall)."""
    rows = []
    for index, entry in enumerate(metrics.get("per_class", [])):
        iou = entry.get("iou")
        width = 0 if iou is None or not math.isfinite(iou) else round(120 * iou)
        colour = _swatch(palette[index]) if index < len(palette) else ""
        rows.append(
            f'<tr><td class="name">{colour}{_e(entry["name"])}</td>'
            f"<td>{_number(iou)}</td>"
            f'<td class="name"><span class="bar" style="width:{width}px"></span></td>'
            f"<td>{_number(entry.get('accuracy'))}</td></tr>"
        )
    head = '<tr><th class="name">class</th><th>IoU</th><th></th><th>accuracy</th></tr>'
    return f"<table>{head}{''.join(rows)}</table>"


def _legend(
    class_names: Sequence[str], palette: Sequence[Colour], void_colour: Colour | None
) -> str:
    entries = list(zip(class_names, palette))
    if void_colour is not None:
        entries.append(("void (ground truth only, not scored)", void_colour))
    items = "".join(
        f'<span class="item">{_swatch(colour)}{_e(name)}</span>' for name, colour in entries
    )
    return f'<p class="legend">{items}</p>'


def _gallery(gallery: Sequence[GalleryItem]) -> str:
    figures = []
    for item in gallery:
        images = "".join(
            f'<a href="{_e(src)}"><img src="{_e(src)}" alt="{_e(item.name)} {what}"></a>'
            for src, what in (
                (item.image, "input"),
                (item.truth, "ground truth"),
                (item.overlay, "prediction"),
            )
        )
        caption = _e(item.name) + (f": {_e(item.caption)}" if item.caption else "")
        figures.append(f"<figure>{images}<figcaption>{caption}</figcaption></figure>")
    return f'<div class="gallery">{"".join(figures)}</div>'


def _curves(log: Sequence[dict[str, float | None]]) -> str:
    """Two inline SVG charts: training loss, and validation metrics, per epoch."""
    if not log:
        return '<p class="note">no epochs logged.</p>'
    last = max(row.get("epoch") or 0 for row in log)
    loss = [(row["epoch"], row["train_loss"]) for row in log if _present(row, "train_loss")]
    top = max((y for _, y in loss), default=1.0)
    val = [
        (label, colour, [(row["epoch"], row[key]) for row in log if _present(row, key)])
        for key, label, colour, _ in VAL_SERIES
    ]
    charts = [
        _svg_chart(
            title="training loss",
            series=[("loss", "#444", loss)],
            x_max=last,
            y_max=_nice_ceiling(top),
        ),
        _svg_chart(title="validation", series=[s for s in val if s[2]], x_max=last, y_max=1.0),
    ]
    return f'<div class="charts">{"".join(charts)}</div>'


def _present(row: dict[str, float | None], key: str) -> bool:
    value = row.get(key)
    return row.get("epoch") is not None and value is not None and math.isfinite(value)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value`` (a round top for an axis)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def _svg_chart(
    *,
    title: str,
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    x_max: float,
    y_max: float,
) -> str:
    """A line chart over epochs 0..x_max and values 0..y_max: axes, ticks, one polyline with
    dots per (label, colour, points) series, and a legend along the top."""
    top, right, bottom, left = _PAD
    width, height = _CHART_W - left - right, _CHART_H - top - bottom
    x_max = max(x_max, 1.0)

    def x_px(x: float) -> float:
        return left + width * x / x_max

    def y_px(y: float) -> float:
        return top + height * (1 - min(y, y_max) / y_max)

    parts = [f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
             'stroke="#999"/>', f'<text x="{left}" y="{top - 9}" font-weight="bold">{_e(title)}</text>']  # fmt: skip
    for i in range(5):  # y grid and labels at 0, 1/4, ..., 1 of y_max
        px = y_px(y_max * i / 4)
        parts.append(f'<line x1="{left}" x2="{left + width}" y1="{px:.1f}" y2="{px:.1f}" '
                     f'stroke="#ddd"/><text x="{left - 5}" y="{px + 4:.1f}" '
                     f'text-anchor="end">{y_max * i / 4:g}</text>')  # fmt: skip
    step = max(1, math.ceil(x_max / 8))
    for epoch in range(step, int(x_max) + 1, step):
        parts.append(f'<text x="{x_px(epoch):.1f}" y="{top + height + 15}" '
                     f'text-anchor="middle">{epoch}</text>')  # fmt: skip
    parts.append(f'<text x="{left + width / 2}" y="{_CHART_H - 4}" text-anchor="middle">'
                 "epoch</text>")  # fmt: skip
    for index, (label, colour, points) in enumerate(series):
        dots = [(x_px(x), y_px(y)) for x, y in points]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in dots)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in dots]
        if len(series) > 1:  # keys right-aligned along the top, the title on the left
            key_x = left + width - 58 * (len(series) - index)
            parts.append(
                f'<text x="{key_x}" y="{top - 9}" fill="{colour}">&#9679; {_e(label)}</text>'
            )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_CHART_W}" height="{_CHART_H}" '
        f'font-size="12" font-family="sans-serif" role="img" aria-label="{_e(title)}">'
        f"<title>{_e(title)}</title>{''.join(parts)}</svg>"
    )
