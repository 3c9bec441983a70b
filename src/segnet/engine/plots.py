"""Figures for a run: confusion matrix, per-class IoU, training curves (PNG, written atomically).

matplotlib is optional (``pip install segnet[plot]``); every function here raises
:class:`SegNetError` saying so when it is missing. Figures are drawn on a bare
``matplotlib.figure.Figure`` (Agg canvas), never through pyplot, so no display or global
backend state is involved.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SegNetError
from ..files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL_HINT = "plots need matplotlib: pip install segnet[plot] (or pip install matplotlib)"


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SegNetError(INSTALL_HINT) from None
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return path


def plot_confusion(matrix: Sequence[Sequence[float]] | np.ndarray, class_names: Sequence[str],
                   path: str | Path) -> Path:  # fmt: skip
    """Row-normalised confusion matrix [target, pred] as a heatmap: row c shows where the pixels
    of class c went (the diagonal is per-class recall); rows without pixels stay blank."""
    counts = np.asarray(matrix, dtype=np.float64)
    k = len(class_names)
    if counts.shape != (k, k):
        raise SegNetError(
            f"confusion matrix is {counts.shape}, expected ({k}, {k}) for {k} class names"
        )
    support = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = np.where(support > 0, counts / support, np.nan)
    side = max(4.0, 0.45 * k + 2.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(k), labels=class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels=class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if k <= 20:  # readable cell labels only for small matrices
        for t in range(k):
            for p in range(k):
                if not math.isnan(rows[t, p]) and rows[t, p] >= 0.005:
                    color = "white" if rows[t, p] > 0.5 else "black"
                    ax.text(
                        p,
                        t,
                        f"{100 * rows[t, p]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=color,
                    )
    ax.set_title("confusion matrix (row-normalised, %)")
    return _save(fig, path)


def plot_class_iou(per_class: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Per-class IoU and accuracy bars, from ``evaluate()``'s ``per_class`` rows
    (``{"name", "iou", "accuracy"}``); classes absent from the split (NaN) are marked n/a."""
    if not per_class:
        raise SegNetError("no per-class metrics to plot")
    names = [row["name"] for row in per_class]
    iou = np.array([float(row["iou"]) for row in per_class])
    accuracy = np.array([float(row.get("accuracy", math.nan)) for row in per_class])
    x = np.arange(len(names))
    fig = _figure(max(6.0, 0.4 * len(names) + 2.0), 4.5)
    ax = fig.add_subplot()
    ax.bar(x - 0.2, np.nan_to_num(iou), width=0.4, label="IoU", color="tab:blue")
    ax.bar(
        x + 0.2, np.nan_to_num(accuracy), width=0.4, label="accuracy (recall)", color="tab:orange"
    )
    if not np.isnan(iou).all():
        miou = float(np.nanmean(iou))
        ax.axhline(miou, color="tab:blue", linestyle="--", linewidth=1, label=f"mIoU {miou:.3f}")
    for c in np.flatnonzero(np.isnan(iou)):
        ax.text(c, 0.02, "n/a", ha="center", fontsize=7, rotation=90)
    ax.set_xticks(x, labels=names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("score")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("per-class IoU and accuracy")
    return _save(fig, path)


def read_log(log_csv: str | Path) -> list[dict[str, float]]:
    """Rows of a training ``log.csv`` as floats (empty cells: NaN); a resumed run's repeated
    epochs keep their last row."""
    path = Path(log_csv)
    try:
        with path.open(newline="") as f:
            raw = list(csv.DictReader(f))
    except FileNotFoundError:
        raise SegNetError(f"{path}: training log not found") from None
    by_epoch: dict[float, dict[str, float]] = {}
    for number, row in enumerate(raw, start=2):
        try:
            values = {k: float(v) if v not in ("", None) else math.nan for k, v in row.items() if k}
            by_epoch[values["epoch"]] = values
        except (KeyError, ValueError) as error:
            raise SegNetError(f"{path}:{number}: not a segnet training log row ({error})") from None
    return [by_epoch[e] for e in sorted(by_epoch)]


def plot_training_curves(log_csv: str | Path, path: str | Path) -> Path:
    """Training loss, and validation G / C / mIoU (and BF when logged), against epoch."""
    rows = read_log(log_csv)
    if not rows:
        raise SegNetError(f"{log_csv}: no epochs logged yet")
    epochs = np.array([row["epoch"] for row in rows])
    fig = _figure(10.0, 4.0)
    loss_ax, val_ax = fig.subplots(1, 2)
    loss_ax.plot(
        epochs, [row.get("train_loss", math.nan) for row in rows], marker="o", markersize=3
    )
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title("training loss")
    loss_ax.grid(alpha=0.3)
    metrics = (("global_accuracy", "G"), ("class_accuracy", "C"), ("miou", "mIoU"), ("bf", "BF"))
    for key, label in metrics:
        values = np.array([row.get(key, math.nan) for row in rows])
        keep = ~np.isnan(values)  # validation runs every --val-every epochs
        if keep.any():
            val_ax.plot(epochs[keep], values[keep], marker="o", markersize=3, label=label)
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, val_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    val_ax.set_xlabel("epoch")
    val_ax.set_ylabel("score")
    val_ax.set_ylim(0.0, 1.0)
    val_ax.set_title("validation")
    val_ax.grid(alpha=0.3)
    if val_ax.get_lines():
        val_ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
