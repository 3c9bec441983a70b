"""What a run is and how it ended, in a few lines: printed when it starts and when it ends, and
kept in ``RUN/summary.json`` as ``{"start": {...}, "end": {...}}`` (written atomically; ``end``
is null while the run is under way). A resumed run rewrites ``start`` for its own launch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..files import write_json
from .config import TrainConfig
from .distributed import Distributed

SUMMARY_FILE = "summary.json"
# The validation figures a run reports, short name and metrics key.
METRICS = (("G", "global_accuracy"), ("C", "class_accuracy"), ("mIoU", "miou"), ("BF", "bf"))


def start_summary(
    *,
    config: TrainConfig,
    model: nn.Module,
    class_names: Sequence[str],
    class_weights: torch.Tensor | None,
    device: torch.device,
    precision: str,
    group: Distributed,
    sizes: dict[str, int],
    steps_per_epoch: int,
    start_epoch: int,
    teacher: str | None = None,
    budget: dict | None = None,
) -> dict:
    """The run about to train: ``sizes`` is the number of images of each split; ``teacher``
    the architecture of the ``distill_from`` checkpoint, if any; ``budget`` the epochs a
    ``time_budget`` kept and what they were judged by (budget.py)."""
    weights = None
    if class_weights is not None:
        weights = {n: round(float(w), 4) for n, w in zip(class_names, class_weights.tolist())}
    # Dropout rates of the model's active dropout layers (Bayesian SegNet, FCN, DeepLab); the
    # config names only the model, the rate comes from its architecture or model options.
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    return {
        "model": config.model,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dropout": {"layers": len(rates), "rates": sorted(set(rates))} if rates else None,
        "dataset": config.dataset,
        "images": dict(sizes),
        "train_images_per_process": group.shard_size(sizes["train"]),
        "device": str(device),
        "precision": precision,
        "world_size": group.world_size,
        "backend": group.backend(device),
        "threads_per_process": torch.get_num_threads(),
        "augment_on": str(device) if config.device_augment else "loader",
        "class_weights": config.class_weights,
        "class_weight_values": weights,
        "batch_size": config.batch_size,  # per process
        "global_batch": config.batch_size * group.world_size,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "schedule": config.schedule,
        "warmup_epochs": config.warmup_epochs,
        "average_last": config.average_last,
        "distill": _distill(config, teacher),
        "epochs": config.epochs,
        "time_budget": budget,
        "start_epoch": start_epoch,
        "steps_per_epoch": steps_per_epoch,
        "sync_bn": config.sync_bn and group.enabled,
        "out": str(config.out),
        "tensorboard": str(Path(config.out) / "tensorboard") if config.tensorboard else None,
    }


def _distill(config: TrainConfig, teacher: str | None) -> dict | None:
    if teacher is None:
        return None
    return {"from": config.distill_from, "model": teacher, "weight": config.distill_weight,
            "temperature": config.distill_temperature}  # fmt: skip


def format_start(start: dict) -> str:
    processes = "1 process" if start["world_size"] == 1 else (
        f"{start['world_size']} processes ({start['backend']})")  # fmt: skip
    images = ", ".join(f"{split} {count}" for split, count in start["images"].items())
    dropout = start["dropout"]
    dropout_text = "" if not dropout else (
        f"; dropout {'/'.join(f'{r:g}' for r in dropout['rates'])} in {dropout['layers']} layer(s)")  # fmt: skip
    lines = [
        f"run: {start['model']} ({start['parameters']:,} parameters{dropout_text}) on {start['dataset']} "
        f"-> {start['out']}",
        f"  device {start['device']} {start['precision']}, {processes}, "
        f"{start['threads_per_process']} CPU thread(s) per process" + (", sync BN" if start["sync_bn"] else ""),
        f"  images: {images} ({start['train_images_per_process']} train per process); "
        + _augment_text(start["augment_on"]),
        f"  batch {start['batch_size']} per process, {start['global_batch']} global; "
        f"{start['steps_per_epoch']} steps per epoch, epochs {start['start_epoch'] + 1}-{start['epochs']}",
        f"  {start['optimizer']} lr {start['lr']:g}, {start['schedule']} schedule"
        + (f", {start['warmup_epochs']:g} warm-up epochs" if start["warmup_epochs"] else "")
        + (f"; weights averaged over the last {start['average_last']} epoch(s)"
           if start["average_last"] else ""),
        f"  class weights {start['class_weights']}" + _weights_text(start["class_weight_values"]),
    ]  # fmt: skip
    distill = start.get("distill")  # summaries written before distillation lack the key
    if distill:
        lines.append(
            f"  distilled from {distill['model']} {distill['from']}: soft targets "
            f"{distill['weight']:g} of the loss, temperature {distill['temperature']:g}"
        )
    budget = start.get("time_budget")  # summaries written before budgets lack the key
    if budget:
        lines.append(
            f"  time budget {budget['minutes']:g} min: {budget['epochs']} of at most "
            f"{budget['max_epochs']} epochs fit (measured here: a step {budget['step_s']:.2f} s, "
            f"a validation {budget['validation_s']:.0f} s, setup {budget['setup_s']:.0f} s)"
            + "".join(f"; after epoch {plan['after_epoch']} re-planned to {plan['epochs']} (a step "
                      f"{plan['step_s']:.2f} s)" for plan in budget.get("replans", ()))
        )  # fmt: skip
    if start["tensorboard"]:
        lines.append(f"  TensorBoard: tensorboard --logdir {start['tensorboard']}")
    return "\n".join(lines)


def _augment_text(where: str) -> str:
    if where == "loader":
        return "augmented by the loader"
    return f"decoded once, augmented on {where}"


def _weights_text(weights: dict[str, float] | None) -> str:
    if not weights:
        return ""
    return ": " + ", ".join(f"{name} {value:.3g}" for name, value in weights.items())


def end_summary(
    *,
    best: dict,
    log: Sequence[dict],
    wall_s: float,
    epochs_run: int,
    planned: int,
    averaged: dict | None = None,
    time_limited: bool = False,
) -> dict:
    """How the run ended: the best epoch and its val metrics (from its log row), wall time of
    this launch and the training time of every epoch logged; with weight averaging, the
    averaged weights' val metrics and epochs (``averaged``); whether a time limit stopped the
    launch before the ``planned`` epochs."""
    row = next((r for r in log if int(r["epoch"]) == best.get("epoch")), {})
    metrics = {key: _number(row.get(key)) for _, key in METRICS}
    return {
        "best_epoch": best.get("epoch"),
        "best_metrics": metrics,
        "epochs": len(log),
        "epochs_planned": planned,
        "time_limited": time_limited,
        "epochs_this_launch": epochs_run,
        "wall_s": round(wall_s, 2),
        "train_s": round(sum(_number(r.get("epoch_s")) or 0.0 for r in log), 2),
        "averaged": averaged,
    }  # fmt: skip


def _number(value: object) -> float | None:
    """A log value (a float, or text in a log.csv read back) as a number; None if empty."""
    if value is None or value == "":
        return None
    number = float(value)
    return None if math.isnan(number) else number


def format_end(end: dict) -> str:
    if end.get("time_limited"):
        text = (
            f"stopped by the time limit after epoch {end['epochs']} of {end['epochs_planned']}, "
            f"{end['wall_s']:.1f} s wall time"
        )
    else:
        text = f"done: {end['epochs']} epochs, {end['wall_s']:.1f} s wall time"
    if end["best_epoch"] is None:
        return text + " (no validation yet)"
    text += f"; best val at epoch {end['best_epoch']}: {format_metrics(end['best_metrics'])}"
    averaged = end.get("averaged")
    if averaged:
        first, last = averaged["averaged"]["epochs"]
        text += f"; weight average of epochs {first}-{last}: {format_metrics(averaged)}"
    return text


def format_epoch(row: dict, best: dict, *, left_s: float) -> str:
    """An epoch's progress line: its loss and speed, its validation (if any) and the best so
    far, and how long the remaining epochs take (``left_s``; 0: none left)."""
    text = f"epoch {row['epoch']}: loss {row['train_loss']:.4f}, {row['images_per_s']:.1f} img/s"
    if row.get("miou") is not None:
        text += f", val G {row['global_accuracy']:.3f} C {row['class_accuracy']:.3f} mIoU {row['miou']:.3f}"
        text += f" (best {best['miou']:.3f} @ {best['epoch']})"
    if left_s > 0:
        text += f"; ~{format_duration(left_s)} of epochs left"
    return text


def format_duration(seconds: float) -> str:
    """``1 h 05 min``, ``12 min`` or ``40 s``: how long, to the minute past a minute."""
    if seconds < 59.5:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def format_metrics(metrics: dict) -> str:
    """``G 0.8123 C ...`` for the figures ``metrics`` has."""
    return " ".join(
        f"{short} {metrics[key]:.4f}" for short, key in METRICS if metrics.get(key) is not None
    )


def write_summary(out: Path, start: dict, end: dict | None = None) -> None:
    write_json(out / SUMMARY_FILE, {"start": start, "end": end})
