"""Training: ``fit(config)`` runs epochs, evaluates on val, and checkpoints every epoch.

``RUN_DIR/last.pt`` (everything needed to resume, the log rows included) and ``RUN_DIR/best.pt``
(highest val mIoU) are written atomically after each epoch, then ``config.yaml`` (what ran) and
``log.csv`` (one row per epoch) are rewritten from what ``last.pt`` holds and, when matplotlib
is installed, ``curves.png`` (loss and val G/C/mIoU per epoch). Data order, augmentation and
dropout are seeded by (seed, epoch), so ``--resume`` continues exactly as an uninterrupted run
would -- after a kill at any point too: a resumed run removes the temp files a killed write left
and repairs ``config.yaml`` and ``log.csv`` from ``last.pt``.

Faults stop a run before they reach the disk: a folder that holds another run is refused
unless the run is resumed or ``overwrite`` is given (checked before any data is read; the run
folder's rules live in runs.py), and a loss or weight that becomes NaN or infinite stops
training (:class:`TrainingDiverged`) before it is saved, so every checkpoint on disk is finite.

Loss (as the authors' Caffe loss): class-weighted pixel cross-entropy, void ignored, summed and
divided by the number of non-void pixels -- not by the sum of weights as torch's weighted
``reduction="mean"`` does, which would undo most of median-frequency balancing's effect on the
gradient scale.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import DATASETS, open_dataset
from ..data.base import SegmentationDataset
from ..data.groups import split_groups
from ..data.stats import resolve_class_weights
from ..data.transforms import Augment, AugmentedDataset, PadCollate, Photometric
from ..data.verify import verify_before_training
from ..deploy.runtime import autocast, resolve_channels_last, resolve_device, resolve_precision
from ..errors import ArgumentError, SegNetError
from .checkpoint import ModelConfig, load_model, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluate import evaluate
from .plots import matplotlib_available, plot_training_curves
from .runs import LOG_FIELDS as LOG_FIELDS  # re-exported: the log's home was here
from .runs import append_log as append_log
from .runs import check_run_dir, clear_run_dir, read_log_rows, write_record


class TrainingDiverged(SegNetError):
    """The loss or a weight became NaN or infinite; training stopped before saving it."""


class SegmentationLoss(nn.Module):
    """Weighted cross-entropy normalised by the count of non-void pixels."""

    def __init__(self, weight: torch.Tensor | None, *, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        # logits (N, K, H, W) float, masks (N, H, W) int64
        total = F.cross_entropy(
            logits.float(),
            masks,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction="sum",
        )
        return total / (masks != self.ignore_index).sum().clamp(min=1)


def lr_factor(config: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of the base rate at an iteration: linear warm-up, then the schedule."""
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if config.schedule == "poly":
        return (1 - progress) ** 0.9
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    # No weight decay on BN parameters and biases (1-d tensors).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def open_split(config: TrainConfig, split: str) -> SegmentationDataset:
    return open_dataset(
        config.dataset, root=config.data, split=split, num_classes=config.num_classes,
        palette=config.palette, synthetic_images=config.synthetic_images,
        synthetic_size=tuple(config.synthetic_size), seed=config.seed,
    )  # fmt: skip


def training_splits(config: TrainConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train, validation): the dataset's splits, or with ``holdout_groups`` the train split
    without those sequences and those sequences as validation (data/groups.py)."""
    if config.holdout_groups:
        return split_groups(
            open_split(config, "train"), config.holdout_groups, pattern=config.group_pattern
        )
    return open_split(config, "train"), open_split(config, "val")


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    *,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    precision: str,
    channels_last: bool,
    max_batches: int | None,
    desc: str,
) -> tuple[float, float]:
    """One pass over the loader; returns (mean loss, images per second)."""
    model.train()
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    batches = len(loader) if max_batches is None else min(max_batches, len(loader))
    bar = tqdm(loader, total=batches, desc=desc, leave=False, dynamic_ncols=True)
    for step, (images, masks) in enumerate(bar):
        if step >= batches:
            break
        images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(images)  # (N, K, H, W)
        loss = loss_fn(logits, masks)
        if not torch.isfinite(loss):  # before backward: the step would poison every weight
            raise TrainingDiverged(f"the loss became {loss.item()} at step {step + 1} of {desc}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # a no-op scale unless fp16
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total_loss += loss.item() * images.shape[0]
        seen += images.shape[0]
        bar.set_postfix(
            loss=f"{loss.item():.3f}", img_s=f"{seen / (time.perf_counter() - start):.1f}"
        )
    return total_loss / max(1, seen), seen / (time.perf_counter() - start)


@dataclass
class _Run:
    """Everything one training run holds between epochs."""

    config: TrainConfig
    device: torch.device
    precision: str
    model: nn.Module
    model_config: ModelConfig
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    data: AugmentedDataset
    val_set: SegmentationDataset
    channels_last: bool = False
    start_epoch: int = 0
    best: dict = field(default_factory=lambda: {"miou": -1.0})
    log: list[dict] = field(default_factory=list)  # the rows of log.csv, one per finished epoch
    saved_epoch: int = 0  # epochs the last.pt on disk holds (0: none written yet)


def _prepare(config: TrainConfig, state: dict | None) -> _Run:
    """Data, model, optimizer and schedule for ``config``; restored from ``state`` (a
    ``last.pt`` payload) when resuming."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    train_set, val_set = training_splits(config)
    if DATASETS[config.dataset].needs_root:  # files on disk: read each once before epoch 1
        verify_before_training(train_set, val_set)
    info = train_set.info
    model_config = ModelConfig.for_dataset(config.model, info, **config.model_options)
    torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
    model = model_config.build()
    if config.encoder_weights and state is None:
        from ..models.imagenet import load_encoder_weights

        load_encoder_weights(model, config.encoder_weights)
    if config.init_weights and state is None:
        warm_start(model, model_config, config.init_weights)
    model.to(device)
    channels_last = resolve_channels_last(config.channels_last, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    weights = resolve_class_weights(config.class_weights, train_set)
    augment = Augment(
        crop_size=tuple(config.crop) if config.crop else None, scale_range=tuple(config.scale),
        hflip=config.hflip, ignore_index=info.ignore_index, photometric=Photometric(
            brightness=config.brightness, contrast=config.contrast, saturation=config.saturation,
            hue=config.hue, gamma=config.gamma),
    )  # fmt: skip
    data = AugmentedDataset(train_set, augment, seed=config.seed)
    steps_per_epoch = max(1, len(data) // config.batch_size)
    if config.max_batches:
        steps_per_epoch = min(steps_per_epoch, config.max_batches)
    optimizer = make_optimizer(config, model)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(config, step, total, steps_per_epoch)
    )
    run = _Run(
        config=config, device=device, precision=precision, model=model, model_config=model_config,
        loss_fn=SegmentationLoss(weights, ignore_index=info.ignore_index).to(device),
        optimizer=optimizer, scheduler=scheduler, data=data, val_set=val_set,
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"), channels_last=channels_last,
    )  # fmt: skip
    if state is not None:
        _restore(run, state)
    return run


def _restore(run: _Run, state: dict) -> None:
    run.model.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):  # fp16 loss scale (older checkpoints: a fresh scaler)
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch = run.saved_epoch = state["epoch"]
    run.best = state.get("best", run.best)
    # Older checkpoints carry no log rows: keep log.csv's rows up to the checkpoint's epoch.
    run.log = state.get("log") or read_log_rows(Path(run.config.out) / "log.csv", state["epoch"])


def warm_start(model: nn.Module, model_config: ModelConfig, path: str) -> None:
    """``--init-weights``: copies a checkpoint's weights into ``model`` (same architecture, classes).

    Only the weights travel: optimizer state, schedule and epoch count start afresh, so a second
    stage (e.g. a new cosine cycle with different class weights) is its own reproducible run.
    """
    try:
        source, source_config, _ = load_model(
            path, expect_model=model_config.name, expect_num_classes=model_config.num_classes
        )
    except ArgumentError as error:  # about the file: say which flag gave it
        if error.name != "checkpoint":
            raise
        raise error.renamed("init_weights") from None
    if source_config.options != model_config.options:
        raise ArgumentError(
            "init_weights",
            f"{path}: built with options {source_config.options}, this run uses {model_config.options}",
        )
    model.load_state_dict(source.state_dict())


def _train_epoch(run: _Run, epoch: int) -> dict:
    """One epoch of training, seeded by (seed, epoch); returns its log row."""
    config = run.config
    torch.manual_seed(config.seed * 100_003 + epoch)  # dropout: same stream on resume
    run.data.set_epoch(epoch)
    loader = DataLoader(
        run.data, batch_size=config.batch_size, shuffle=True, drop_last=len(run.data) >= config.batch_size,
        num_workers=config.num_workers, generator=torch.Generator().manual_seed(config.seed * 7919 + epoch),
        collate_fn=PadCollate(ignore_index=run.data.dataset.info.ignore_index),  # mixed sizes: pad
    )  # fmt: skip
    tic = time.perf_counter()
    loss, speed = train_one_epoch(
        run.model, loader, loss_fn=run.loss_fn, optimizer=run.optimizer, scheduler=run.scheduler,
        scaler=run.scaler, device=run.device, precision=run.precision, channels_last=run.channels_last,
        max_batches=config.max_batches, desc=f"epoch {epoch + 1}/{config.epochs}",
    )  # fmt: skip
    return {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "train_loss": loss,
            "images_per_s": speed, "epoch_s": time.perf_counter() - tic}  # fmt: skip


def _non_finite(run: _Run) -> str | None:
    """The first weight, buffer or optimizer tensor holding NaN or inf, if any: the last step of
    an epoch can break the weights while its loss (computed before the step) looked fine."""
    for key, tensor in run.model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return f"the weight {key}"
    for index, state in run.optimizer.state_dict()["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point() and not value.isfinite().all():
                return f"the optimizer's {name} of parameter {index}"
    return None


def _save(run: _Run, out: Path, epoch: int, metrics: dict, *, improved: bool) -> None:
    """best.pt before last.pt: a kill between them leaves last.pt an epoch behind, and resuming
    redoes that epoch and rewrites best.pt identically. config.yaml and log.csv follow last.pt."""
    extra = {"epoch": epoch + 1, "metrics": metrics, "train_config": run.config.to_dict()}
    if improved:
        save_checkpoint(out / "best.pt", config=run.model_config, model=run.model, **extra)
    save_checkpoint(
        out / "last.pt", config=run.model_config, model=run.model, optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(), scaler=run.scaler.state_dict(), best=run.best,
        log=run.log, **extra,
    )  # fmt: skip
    run.saved_epoch = epoch + 1
    write_record(out, run.config.to_dict(), run.log)


def fit(
    config: TrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> dict:
    """Trains per ``config`` into ``config.out``; with ``resume`` continues the run there from
    its ``last.pt`` (``TrainConfig.for_resume`` builds a ``config`` that keeps its recipe), with
    ``overwrite`` first removes the run there (a folder holding a run is refused otherwise).

    A loss or weight that becomes non-finite raises :class:`TrainingDiverged` naming the last
    good checkpoint; nothing non-finite is saved. Returns the best and latest val metrics, the
    run folder and how many epochs this call trained (0: the run had finished).
    """
    out = Path(config.out)
    check_run_dir(out, resume=resume, overwrite=overwrite)  # before any data is read
    state = read_checkpoint(out / "last.pt") if resume else None
    run = _prepare(config, state)
    clear_run_dir(out, old_run=overwrite)
    if state is not None:  # a kill may have come between last.pt and these
        write_record(out, state["train_config"], run.log)
    plots = matplotlib_available()
    if not plots:
        tqdm.write("note: matplotlib is not installed, so no curves.png (pip install segnet[plot])")
    metrics: dict = state.get("metrics", {}) if state else {}  # the latest val metrics
    try:
        for epoch in range(run.start_epoch, config.epochs):
            metrics = _run_epoch(run, out, epoch, metrics, plots=plots, progress=progress)
    except TrainingDiverged as error:
        raise TrainingDiverged(_diverged(run, out, error.message)) from None
    return {
        "best": run.best,
        "last": metrics,
        "out": str(out),
        "epochs_run": max(0, config.epochs - run.start_epoch),
    }


def _run_epoch(
    run: _Run, out: Path, epoch: int, metrics: dict, *, plots: bool, progress: bool
) -> dict:
    """Trains, checks, validates (every ``val_every`` epochs and at the end) and saves one
    epoch; returns the latest val metrics."""
    config = run.config
    row = _train_epoch(run, epoch)
    broken = _non_finite(run)
    if broken is not None:
        raise TrainingDiverged(f"{broken} became non-finite in epoch {epoch + 1}/{config.epochs}")
    improved = False
    if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs:
        metrics = evaluate(
            run.model, run.val_set, device=run.device, precision=run.precision, progress=progress
        )
        row.update({k: metrics.get(k) for k in ("global_accuracy", "class_accuracy", "miou", "bf")})
        improved = metrics["miou"] > run.best["miou"]
        if improved:
            run.best = {"miou": metrics["miou"], "epoch": epoch + 1}
    run.log.append(row)
    _save(run, out, epoch, metrics, improved=improved)
    if plots:
        plot_training_curves(out / "log.csv", out / "curves.png")
    _report(row, run.best, progress)
    return metrics


def _diverged(run: _Run, out: Path, what: str) -> str:
    """The one-line message of a diverged run: what broke, the last good checkpoint, what to do."""
    text = f"training diverged and stopped: {what}; "
    lower = f"start a new run with a lower `lr` than {run.config.lr:g}"
    if run.saved_epoch == 0:
        return text + f"no checkpoint was saved yet: {lower}"
    last = out / "last.pt"
    return (
        text + f"the last good checkpoint is {last} (epoch {run.saved_epoch}): {lower}, "
        f"from scratch or from it with `init_weights` {last}"
    )


def _report(row: dict, best: dict, progress: bool) -> None:
    if not progress:
        return
    text = f"epoch {row['epoch']}: loss {row['train_loss']:.4f}, {row['images_per_s']:.1f} img/s"
    if row.get("miou") is not None:
        text += f", val G {row['global_accuracy']:.3f} C {row['class_accuracy']:.3f} mIoU {row['miou']:.3f}"
        text += f" (best {best['miou']:.3f} @ {best['epoch']})"
    tqdm.write(text)
