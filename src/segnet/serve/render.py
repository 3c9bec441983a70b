"""One upload through the model and back out as the requested ``output``: the work a pool worker
does for a request (decode, segment, encode), timed step by step.

    overlay      image/png  the input blended with the colour map (``opacity``; ``legend``)
    color        image/png  the colour map, the dataset's palette
    labels       image/png  class indices, 8-bit greyscale (as ``segnet predict`` writes X.png)
    uncertainty  image/png  Bayesian SegNet uncertainty scaled to 0-255 (needs ``mc_samples``)
    json         application/json  classes, palette, per-class shares, timings and the colour map,
                 overlay (and uncertainty) as base64 PNG data URLs: everything a page needs
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..engine.checkpoint import ModelConfig
from ..engine.predict import OverlayStyle, Segmenter, colorize
from .upload import decode_image

PNG = "image/png"
DEFAULT_OPACITY = OverlayStyle().opacity  # the overlay's colour weight when none is asked for


@dataclass
class Rendered:
    body: bytes
    media_type: str
    timings: dict[str, float] = field(default_factory=dict)  # ms per step
    headers: dict[str, str] = field(default_factory=dict)  # more response headers


@dataclass(frozen=True)
class Job:
    """What one request asks of a worker."""

    data: bytes  # the encoded upload
    output: str
    style: OverlayStyle  # opacity, legend
    mc_samples: int
    max_pixels: int
    queued_at: float  # time.perf_counter() when admitted


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) -> PNG bytes (fast zlib level: latency over size)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def uncertainty_image(uncertainty: np.ndarray) -> np.ndarray:
    """(H, W) float variance -> uint8, scaled to the image's maximum (as ``segnet predict``)."""
    return (255 * uncertainty / max(float(uncertainty.max()), 1e-12)).astype(np.uint8)


def class_shares(labels: np.ndarray, num_classes: int) -> list[float]:
    """Fraction of the pixels given to each class, in class order."""
    counts = np.bincount(labels.ravel(), minlength=num_classes)[:num_classes]
    return (counts / max(labels.size, 1)).tolist()


def run_request(segmenter: Segmenter, job: Job) -> Rendered:
    """Runs on a pool worker: decode -> segment -> encode, each step timed (ms)."""
    timings = {"queue": _ms(job.queued_at)}
    start = time.perf_counter()
    image = decode_image(job.data, max_pixels=job.max_pixels)  # (H, W, 3) uint8
    timings["decode"] = _ms(start)
    start = time.perf_counter()
    labels, uncertainty = segmenter(image, mc_samples=job.mc_samples)  # (H, W) uint8
    timings["inference"] = _ms(start)
    start = time.perf_counter()
    rendered = _encode(segmenter.config, job, image, labels, uncertainty)
    timings["encode"] = _ms(start)
    if isinstance(rendered, dict):  # json: the images are encoded; add the timings
        rendered["timings_ms"] = timings
        rendered = Rendered(json.dumps(rendered).encode(), "application/json")
    rendered.timings = timings
    return rendered


def _encode(
    config: ModelConfig,
    job: Job,
    image: np.ndarray,
    labels: np.ndarray,
    uncertainty: np.ndarray | None,
) -> Rendered | dict[str, Any]:
    colors = colorize(labels, config.palette)  # (H, W, 3)
    if job.output == "labels":
        return Rendered(png_bytes(labels), PNG)
    if job.output == "color":
        return Rendered(png_bytes(colors), PNG)
    if job.output == "uncertainty" and uncertainty is not None:
        return Rendered(png_bytes(uncertainty_image(uncertainty)), PNG)
    names, palette = config.class_names, config.palette
    blended = png_bytes(job.style.render(image, colors, class_names=names, palette=palette))
    if job.output != "json":
        return Rendered(blended, PNG)
    images = {"color": data_url(png_bytes(colors)), "overlay": data_url(blended)}
    if uncertainty is not None:
        images["uncertainty"] = data_url(png_bytes(uncertainty_image(uncertainty)))
    return describe(config, labels, job.mc_samples, images)


def describe(
    config: ModelConfig,
    labels: np.ndarray,
    mc_samples: int,
    images: dict[str, str],
) -> dict[str, Any]:
    """The JSON answer but its timings."""
    shares = class_shares(labels, config.num_classes)
    return {
        "model": config.name,
        "height": int(labels.shape[0]),
        "width": int(labels.shape[1]),
        "mc_samples": mc_samples,
        "classes": [
            {"index": i, "name": name, "color": list(config.palette[i]), "share": shares[i]}
            for i, name in enumerate(config.class_names)
        ],
        "images": images,
    }


def _ms(since: float) -> float:
    return round(1000 * (time.perf_counter() - since), 2)
