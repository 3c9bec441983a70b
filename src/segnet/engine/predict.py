"""Segmenting image files: class-index PNG, colour PNG and overlay (and, with Monte-Carlo
dropout, an uncertainty map) per input, all written atomically. Videos: ``engine/video.py``."""

from __future__ import annotations

import copy
import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.base import normalize
from ..data.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_image, write_png
from ..deploy.optimize import OptimizedModel, optimize_for_inference
from ..deploy.runtime import DEFAULT_INT8_PLAN
from ..errors import ArgumentError, SegNetError
from ..files import check_output_dir
from .checkpoint import ModelConfig
from .inference import (
    SINGLE_PASS,
    WHOLE_IMAGE,
    TestTimeAugmentation,
    Tiling,
    predict_probabilities,
)
from .legend import draw_legend

DEFAULT_OPACITY = 0.5  # weight of the class colours in an overlay (mmsegmentation's default too)


def expand_inputs(inputs: Iterable[str], *, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Files, folders and glob patterns -> paths, in order, no repeats; folders and globs give
    their files with one of ``suffixes`` (``predict`` adds VIDEO_SUFFIXES)."""
    kind = "images or videos" if set(suffixes) & set(VIDEO_SUFFIXES) else "images"
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
            if not found:
                raise SegNetError(f"{path}: folder has no {kind} ({', '.join(suffixes)})")
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).suffix.lower() in suffixes)
            if not found:
                raise SegNetError(f"{item}: no such file, folder or matching {kind}")
        paths.extend(p for p in found if p not in paths)
    return paths


def check_prediction_folder(out: Path, inputs: Sequence[Path]) -> None:
    """``out`` must be a writable folder holding none of the inputs: outputs beside their
    inputs could replace them (``x.png`` -> label map ``x.png``) and would be read back as
    inputs by the next run over that folder."""
    check_output_dir(out, argument="out")
    if not out.exists():
        return
    for path in inputs:
        if path.resolve().parent == out.resolve():
            raise ArgumentError(
                "out", f"{out}: holds the input {path.name}; write predictions to another folder"
            )


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours; unknown indices are black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return table[labels]


def overlay(
    image: np.ndarray, colors: np.ndarray, *, opacity: float = DEFAULT_OPACITY
) -> np.ndarray:
    return (image * (1 - opacity) + colors * opacity).round().astype(np.uint8)


@dataclass(frozen=True)
class OverlayStyle:
    """How overlays look, for images and videos alike."""

    opacity: float = DEFAULT_OPACITY  # 0: the image alone, 1: the colour map alone
    legend: bool = False  # class names and colours drawn in the top-left corner

    def __post_init__(self) -> None:
        if not 0 <= self.opacity <= 1:
            raise ArgumentError("opacity", f"must be in [0, 1], got {self.opacity}")

    def render(
        self,
        image: np.ndarray,
        colors: np.ndarray,
        *,
        class_names: Sequence[str],
        palette: Sequence[Sequence[int]],
    ) -> np.ndarray:
        """(H, W, 3) uint8 image and colour map -> (H, W, 3) uint8 overlay."""
        blended = overlay(image, colors, opacity=self.opacity)
        return draw_legend(blended, class_names, palette) if self.legend else blended


class Segmenter:
    """A model plus what it needs to turn RGB uint8 images into labels."""

    def __init__(
        self,
        model: nn.Module,
        config: ModelConfig,
        *,
        device: torch.device,
        precision: str = "fp32",
        optimize: bool = True,
        tta: TestTimeAugmentation = SINGLE_PASS,
        tiling: Tiling = WHOLE_IMAGE,
        backend: str = "torch",
        calibration: Sequence[torch.Tensor] | None = None,
        int8_plan: str = DEFAULT_INT8_PLAN,
    ) -> None:
        self.tta = tta  # test-time views averaged per image (default: one forward pass)
        self.tiling = tiling  # each view whole (default) or tile by tile
        # optimize: BN folded, channels_last, precision applied once, on `backend`
        # (segnet.optimize_for_inference; int8 calibrates on `calibration`, keeps `int8_plan`'s
        # convolutions fp32)
        if optimize:
            model = optimize_for_inference(
                model, precision=precision, device=device, backend=backend,
                calibration=calibration, int8_plan=int8_plan,
            )  # fmt: skip
        self.model, self.config, self.device, self.precision = (
            model.eval().to(device),
            config,
            device,
            precision,
        )

    def replica(self) -> Segmenter:
        """A copy for another thread: its own model copy (or engine request), nothing rebuilt."""
        optimized = isinstance(self.model, OptimizedModel)
        model = self.model.replica() if optimized else copy.deepcopy(self.model)
        return Segmenter(
            model, self.config, device=self.device, precision=self.precision, optimize=False,
            tta=self.tta, tiling=self.tiling,
        )  # fmt: skip

    def __call__(
        self, image: np.ndarray, *, mc_samples: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(H, W, 3) uint8 -> labels (H, W) uint8 and, with MC dropout, uncertainty (H, W) float32
        (per-class variance of the softmax samples averaged over classes, Bayesian SegNet)."""
        labels, uncertainty = self.segment(np.asarray(image)[None], mc_samples=mc_samples)
        return labels[0], None if uncertainty is None else uncertainty[0]

    def segment(
        self, images: np.ndarray, *, mc_samples: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """A batch: (N, H, W, 3) uint8 -> labels (N, H, W) uint8, uncertainty (N, H, W) or None."""
        batch = normalize(torch.from_numpy(np.array(images)))  # (N, 3, H, W)
        probs = predict_probabilities(
            self.model, batch, device=self.device, precision=self.precision,
            mc_samples=mc_samples, tta=self.tta, tiling=self.tiling,
        )  # fmt: skip
        labels = probs.mean.argmax(1).byte().cpu().numpy()  # (N, H, W)
        if probs.uncertainty is None:
            return labels, None
        return labels, probs.uncertainty.cpu().numpy().astype(np.float32)


def write_prediction(
    out_dir: Path,
    name: str,
    image: np.ndarray,
    labels: np.ndarray,
    palette: Sequence[Sequence[int]],
    uncertainty: np.ndarray | None = None,
    *,
    style: OverlayStyle = OverlayStyle(),
    class_names: Sequence[str] = (),
) -> list[Path]:
    """X.png, X_color.png, X_overlay.png (+ uncertainty); a legend names classes missing from
    ``class_names`` by index."""
    colors = colorize(labels, palette)
    written = [
        out_dir / f"{name}.png",
        out_dir / f"{name}_color.png",
        out_dir / f"{name}_overlay.png",
    ]
    write_png(written[0], labels)
    write_png(written[1], colors)
    write_png(written[2], style.render(image, colors, class_names=class_names, palette=palette))
    if uncertainty is not None:
        from ..files import atomic_write

        scaled = (255 * uncertainty / max(float(uncertainty.max()), 1e-12)).astype(np.uint8)
        written += [out_dir / f"{name}_uncertainty.png", out_dir / f"{name}_uncertainty.npy"]
        write_png(written[3], scaled)
        atomic_write(written[4], lambda f: np.save(f, uncertainty))
    return written


def predict_files(
    segmenter: Segmenter,
    paths: Sequence[Path],
    out_dir: Path,
    *,
    mc_samples: int = 0,
    style: OverlayStyle = OverlayStyle(),
    progress: bool = True,
) -> list[Path]:
    """Reads every input first (so a bad file fails before anything is written), then writes."""
    images = [read_image(p) for p in paths]
    names = unique_names(paths)
    written: list[Path] = []
    from tqdm import tqdm

    for name, image in tqdm(
        list(zip(names, images)), desc="predict", disable=not progress or None, leave=False
    ):
        labels, uncertainty = segmenter(image, mc_samples=mc_samples)
        written += write_prediction(
            out_dir, name, image, labels, segmenter.config.palette, uncertainty,
            style=style, class_names=segmenter.config.class_names,
        )  # fmt: skip
    return written


def unique_names(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique with the parent folder name where two inputs share a stem."""
    stems = [p.stem for p in paths]
    return [f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]
