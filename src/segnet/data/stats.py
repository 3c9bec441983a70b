"""Class frequencies and weights -- the one place class weights are computed.

Median-frequency balancing (paper Sec. 4.1, Eigen & Fergus 2015):
    freq(c)   = pixels of class c / total pixels of the training images in which c appears
    weight(c) = median_c' freq(c') / freq(c)
Void pixels are excluded from both counts. A class that never appears gets weight 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import ArgumentError, SegNetError
from .base import SegmentationDataset

WEIGHTING = ("median", "median_sqrt", "natural", "none")


def class_pixel_counts(dataset: SegmentationDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per class: pixels of that class, and valid pixels of the images containing it. A
    dataset without one labelled pixel is an error: no frequency or weight is defined."""
    k, void = dataset.info.num_classes, dataset.info.ignore_index
    class_pixels = np.zeros(k, dtype=np.int64)
    image_pixels = np.zeros(k, dtype=np.int64)
    for index in range(len(dataset)):
        _, mask = dataset.load(index)
        valid = mask[mask != void].astype(np.int64)
        counts = np.bincount(valid, minlength=k)[:k]
        class_pixels += counts
        image_pixels[counts > 0] += valid.size
    if not class_pixels.any():
        raise SegNetError(
            f"{len(dataset)} images without one labelled pixel (all void): check the masks, "
            "their palette (colour masks) or the void label"
        )
    return class_pixels, image_pixels


def median_frequency_weights(class_pixels: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    present = class_pixels > 0
    freq = np.zeros(len(class_pixels))
    freq[present] = class_pixels[present] / image_pixels[present]
    weights = np.zeros_like(freq)
    weights[present] = np.median(freq[present]) / freq[present]
    return weights


def dataset_stats(dataset: SegmentationDataset) -> dict:
    """Frequencies and median-frequency weights as a JSON-ready dict."""
    class_pixels, image_pixels = class_pixel_counts(dataset)
    weights = median_frequency_weights(class_pixels, image_pixels)
    total = class_pixels.sum()
    return {
        "num_images": len(dataset),
        "ignore_index": dataset.info.ignore_index,
        "classes": [
            {
                "name": name,
                "pixels": int(class_pixels[c]),
                "fraction": float(class_pixels[c] / total) if total else 0.0,
                "median_frequency_weight": float(weights[c]),
            }
            for c, name in enumerate(dataset.info.class_names)
        ],
        "median_frequency_weights": [float(w) for w in weights],
    }


def resolve_class_weights(spec: str, dataset: SegmentationDataset) -> torch.Tensor | None:
    """``--class-weights``: median | median_sqrt | natural | none | FILE (JSON list, or stats JSON).

    'natural' trains on the natural class frequencies, i.e. no re-weighting (the paper's
    Table 1 term); 'none' is the same. 'median_sqrt' takes the square root of the median-frequency
    weights: half the re-weighting in log terms (Road/Pavement 0.39/1.0 instead of 0.15/1.0), which
    keeps rare classes visible without trading the large ones away early in a short schedule.
    """
    k = dataset.info.num_classes
    if spec in ("median", "median_sqrt"):
        weights = median_frequency_weights(*class_pixel_counts(dataset))
        return torch.tensor(
            np.sqrt(weights) if spec == "median_sqrt" else weights, dtype=torch.float32
        )
    if spec in ("natural", "none"):
        return None
    path = Path(spec)
    if not path.is_file():
        raise ArgumentError(
            "class_weights", f"{spec}: not one of {', '.join(WEIGHTING)} nor an existing file"
        )
    try:
        data = json.loads(path.read_text())
        values = data["median_frequency_weights"] if isinstance(data, dict) else data
        weights = torch.tensor([float(v) for v in values], dtype=torch.float32)
    except (ValueError, KeyError, TypeError) as error:
        raise ArgumentError(
            "class_weights", f"{path}: expected a JSON list of {k} numbers ({error})"
        ) from None
    if weights.shape != (k,) or (weights < 0).any():
        raise ArgumentError(
            "class_weights", f"{path}: expected {k} non-negative weights, got {len(weights)}"
        )
    return weights
