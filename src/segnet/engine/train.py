"""Training: ``fit(config)`` runs epochs, evaluates on val, and checkpoints every epoch.

``RUN_DIR/last.pt`` (everything needed to resume) and ``RUN_DIR/best.pt`` (highest val mIoU)
are written atomically after each epoch, with ``config.yaml``, a ``log.csv`` row and, when
matplotlib is installed, ``curves.png`` (loss and val G/C/mIoU per epoch). Data order,
augmentation and dropout are seeded by (seed, epoch), so ``--resume`` continues exactly as an
uninterrupted run would.

Loss (as the authors' Caffe loss): class-weighted pixel cross-entropy, void ignored, summed and
divided by the number of non-void pixels -- not by the sum of weights as torch's weighted
``reduction="mean"`` does, which would undo most of median-frequency balancing's effect on the
gradient scale.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import open_dataset
from ..data.base import SegmentationDataset
from ..data.groups import split_groups
from ..data.stats import resolve_class_weights
from ..data.transforms import Augment, AugmentedDataset, Photometric
from ..deploy.runtime import autocast, resolve_channels_last, resolve_device, resolve_precision
from ..errors import ArgumentError, SegNetError
from ..files import atomic_write
from .checkpoint import ModelConfig, load_model, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluate import evaluate
from .plots import matplotlib_available, plot_training_curves

LOG_FIELDS = ("epoch", "lr", "train_loss", "images_per_s", "epoch_s",
              "global_accuracy", "class_accuracy", "miou", "bf")  # fmt: skip


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
        if not torch.isfinite(loss):
            raise SegNetError(f"training diverged (loss {loss.item()}) at {desc}; try a lower `lr`")
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


def _prepare(config: TrainConfig, *, resume: bool) -> _Run:
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    train_set, val_set = training_splits(config)
    info = train_set.info
    state = read_checkpoint(Path(config.out) / "last.pt") if resume else None
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
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.start_epoch, run.best = state["epoch"], state.get("best", run.best)
    return run


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
    )  # fmt: skip
    tic = time.perf_counter()
    loss, speed = train_one_epoch(
        run.model, loader, loss_fn=run.loss_fn, optimizer=run.optimizer, scheduler=run.scheduler,
        scaler=run.scaler, device=run.device, precision=run.precision, channels_last=run.channels_last,
        max_batches=config.max_batches, desc=f"epoch {epoch + 1}/{config.epochs}",
    )  # fmt: skip
    return {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "train_loss": loss,
            "images_per_s": speed, "epoch_s": time.perf_counter() - tic}  # fmt: skip


def _save(run: _Run, out: Path, epoch: int, metrics: dict, *, improved: bool) -> None:
    extra = {"epoch": epoch + 1, "metrics": metrics, "train_config": run.config.to_dict()}
    if improved:
        save_checkpoint(out / "best.pt", config=run.model_config, model=run.model, **extra)
    save_checkpoint(
        out / "last.pt", config=run.model_config, model=run.model, optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(), best=run.best, **extra,
    )  # fmt: skip


def fit(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Trains per ``config``; with ``resume`` continues from ``config.out/last.pt``."""
    out = Path(config.out)
    run = _prepare(config, resume=resume)
    out.mkdir(parents=True, exist_ok=True)
    plots = matplotlib_available()
    if not plots:
        tqdm.write("note: matplotlib is not installed, so no curves.png (pip install segnet[plot])")
    atomic_write(out / "config.yaml", lambda f: f.write(yaml.safe_dump(config.to_dict()).encode()))
    metrics: dict = {}
    for epoch in range(run.start_epoch, config.epochs):
        row = _train_epoch(run, epoch)
        improved = False
        if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs:
            metrics = evaluate(
                run.model,
                run.val_set,
                device=run.device,
                precision=run.precision,
                progress=progress,
            )
            row.update(
                {k: metrics.get(k) for k in ("global_accuracy", "class_accuracy", "miou", "bf")}
            )
            improved = metrics["miou"] > run.best["miou"]
            if improved:
                run.best = {"miou": metrics["miou"], "epoch": epoch + 1}
        _save(run, out, epoch, metrics, improved=improved)
        append_log(out / "log.csv", row)
        if plots:
            plot_training_curves(out / "log.csv", out / "curves.png")
        _report(row, run.best, progress)
    return {"best": run.best, "last": metrics, "out": str(out)}


def append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in LOG_FIELDS})


def _report(row: dict, best: dict, progress: bool) -> None:
    if not progress:
        return
    text = f"epoch {row['epoch']}: loss {row['train_loss']:.4f}, {row['images_per_s']:.1f} img/s"
    if row.get("miou") is not None:
        text += f", val G {row['global_accuracy']:.3f} C {row['class_accuracy']:.3f} mIoU {row['miou']:.3f}"
        text += f" (best {best['miou']:.3f} @ {best['epoch']})"
    tqdm.write(text)
