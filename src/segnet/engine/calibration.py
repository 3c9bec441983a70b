"""Calibration images for int8 (:func:`segnet.optimize_for_inference`): the training split the
checkpoint was trained on (its ``train_config`` names the dataset and its root), or a folder of
images. ``count`` images spread evenly over the sorted list (so over the sequences of a video
dataset such as CamVid), each normalized as ``predict`` normalizes, at its own size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import open_dataset
from ..data.base import normalize
from ..data.io import IMAGE_SUFFIXES, list_images, read_image
from ..deploy.quantize import CALIBRATION_IMAGES
from ..errors import ArgumentError, SegNetError


def calibration_images(
    *,
    folder: str | Path | None = None,
    train_config: dict[str, Any] | None = None,
    count: int = CALIBRATION_IMAGES,
) -> list[torch.Tensor]:
    """``count`` normalized (1, 3, H, W) images from ``folder``, else from the training data
    ``train_config`` names; a one-line error when neither gives any."""
    if count < 1:
        raise ArgumentError("calibration_images", f"must be >= 1, got {count}")
    if folder is not None:
        images = _folder_images(Path(folder), count)
    else:
        images = _training_images(train_config or {}, count)
    return [normalize(torch.from_numpy(np.array(image)))[None] for image in images]


def _spread(total: int, count: int) -> list[int]:
    return sorted({round(i) for i in np.linspace(0, total - 1, min(count, total))})


def _folder_images(folder: Path, count: int) -> list[np.ndarray]:
    if not folder.is_dir():
        raise ArgumentError("calibration", f"{folder}: folder not found")
    paths = list_images(folder)
    if not paths:
        raise ArgumentError(
            "calibration", f"{folder}: folder has no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    return [read_image(paths[i]) for i in _spread(len(paths), count)]


def _training_images(train_config: dict[str, Any], count: int) -> list[np.ndarray]:
    kind, root = train_config.get("dataset"), train_config.get("data")
    if kind is None or (root is None and kind != "synthetic"):
        raise ArgumentError(
            "calibration",
            "int8 needs calibration images and this model names no training data; "
            "give `calibration` DIR (a folder of training images)",
        )
    try:
        dataset = open_dataset(
            kind, root=root, split="train", num_classes=train_config.get("num_classes"),
            palette=train_config.get("palette"),
        )  # fmt: skip
    except SegNetError as error:
        raise ArgumentError(
            "calibration",
            f"int8 calibrates on the training data ({kind} at {root}), which is not usable here "
            f"({error}); give `calibration` DIR (a folder of training images)",
        ) from None
    return [dataset.load(i)[0] for i in _spread(len(dataset), count)]
