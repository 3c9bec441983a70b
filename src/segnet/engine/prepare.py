"""A training run's parts, made ready before epoch 1: the splits, the model (seeded, warm-started
or restored, SyncBatchNorm under ``sync_bn``), the augmented data and each epoch's loader, the
loss, optimizer and schedule, and the start summary. Nothing here communicates with other
processes or writes a file: ``train.fit`` runs it in every process, then agrees on errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..data import DATASETS, open_dataset
from ..data.base import SegmentationDataset
from ..data.groups import split_groups
from ..data.stats import resolve_class_weights
from ..data.transforms import Augment, AugmentedDataset, PadCollate, Photometric, ResidentDataset
from ..data.verify import verify_before_training
from ..deploy.runtime import resolve_channels_last, resolve_precision
from .averaging import WeightAverage
from .checkpoint import ModelConfig
from .config import TrainConfig
from .distill import Distillation, load_teacher
from .distributed import Distributed, convert_sync_bn
from .recipe import SegmentationLoss, lr_factor, make_optimizer, warm_start
from .runs import read_log_rows
from .summary import start_summary
from .tensorboard import RunBoard


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


def training_augment(config: TrainConfig, *, ignore_index: int) -> Augment:
    """The run's augmentation: flips, scale jitter, crops and colour jitter as ``config`` sets them."""
    return Augment(
        crop_size=tuple(config.crop) if config.crop else None, scale_range=tuple(config.scale),
        hflip=config.hflip, ignore_index=ignore_index, photometric=Photometric(
            brightness=config.brightness, contrast=config.contrast, saturation=config.saturation,
            hue=config.hue, gamma=config.gamma),
    )  # fmt: skip


@dataclass
class Run:
    """Everything one training run holds between epochs."""

    config: TrainConfig
    group: Distributed
    device: torch.device
    precision: str
    model: nn.Module  # what is saved; SyncBatchNorm layers under `sync_bn`
    model_config: ModelConfig
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    data: AugmentedDataset
    val_set: SegmentationDataset
    steps_per_epoch: int
    trainer: nn.Module | None = None  # what the steps call: `model`, or DDP over it
    channels_last: bool = False
    start_epoch: int = 0
    best: dict = field(default_factory=lambda: {"miou": -1.0})
    log: list[dict] = field(default_factory=list)  # the rows of log.csv, one per finished epoch
    saved_epoch: int = 0  # epochs the last.pt on disk holds (0: none written yet)
    board: RunBoard | None = None
    average: WeightAverage | None = None  # with `average_last`: the running weight average
    distillation: Distillation | None = None  # with `distill_from`: the teacher and the mix
    budget: dict | None = None  # with `time_budget`: the epochs kept, and why (budget.py)
    averaged_metrics: dict | None = None  # val metrics of averaged.pt, once written
    summary: dict = field(default_factory=dict)  # the start summary (rank 0)


def prepare(config: TrainConfig, state: dict | None, group: Distributed) -> Run:
    """Data, model, optimizer and schedule for ``config``; restored from ``state`` (a
    ``last.pt`` payload) when resuming. Local to this process: no collective."""
    device = group.device(config.device)
    precision = resolve_precision(config.precision, device, training=True)
    train_set, val_set = training_splits(config)
    if DATASETS[config.dataset].needs_root:  # files on disk: read each once before epoch 1
        verify_before_training(train_set, val_set)
    info = train_set.info
    model_config = ModelConfig.for_dataset(config.model, info, **config.model_options)
    model = _run_model(config, model_config, state, device, group)
    weights = resolve_class_weights(config.class_weights, train_set)
    augment = training_augment(config, ignore_index=info.ignore_index)
    data = (
        ResidentDataset(train_set, augment, seed=config.seed, device=device)
        if config.device_augment
        else AugmentedDataset(train_set, augment, seed=config.seed)
    )
    steps_per_epoch = max(1, group.shard_size(len(data)) // config.batch_size)
    if config.max_batches:
        steps_per_epoch = min(steps_per_epoch, config.max_batches)
    optimizer = make_optimizer(config, model)
    # a resumed run's schedule: its time budget's re-plans included
    scheduler = make_scheduler(config, optimizer, steps_per_epoch,
                               budget=state.get("time_budget") if state else None)  # fmt: skip
    run = Run(
        config=config, group=group, device=device, precision=precision, model=model,
        model_config=model_config, loss_fn=SegmentationLoss(weights, ignore_index=info.ignore_index).to(device),
        optimizer=optimizer, scheduler=scheduler, data=data, val_set=val_set, steps_per_epoch=steps_per_epoch,
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        channels_last=resolve_channels_last(config.channels_last, device),
    )  # fmt: skip
    if config.average_last:
        run.average = WeightAverage()
    teacher_name = None
    if config.distill_from:
        run.distillation, teacher_name = _distillation(config, model_config, device=device,
                                                       channels_last=run.channels_last)  # fmt: skip
    if state is not None:
        restore(run, state)
    if group.is_main:
        run.summary = start_summary(
            config=config, model=model, class_names=info.class_names, class_weights=weights,
            device=device, precision=precision, group=group, steps_per_epoch=steps_per_epoch,
            sizes={"train": len(train_set), "val": len(val_set)}, start_epoch=run.start_epoch,
            teacher=teacher_name, budget=run.budget,
        )  # fmt: skip
    return run


def make_scheduler(
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    *,
    budget: dict | None = None,
    taken: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step rate schedule (recipe.py) over ``config.epochs`` epochs, ``taken`` steps
    into it (the optimizer's rate set for the next); with a time budget's record (budget.py)
    that re-planned, over its first count of epochs and then each re-plan's, as the run that
    re-planned had it (``--resume`` rebuilds it alike)."""
    replans = tuple(
        (plan["after_epoch"] * steps_per_epoch, plan["epochs"] * steps_per_epoch)
        for plan in (budget or {}).get("replans", ())
    )
    epochs = budget["epochs"] if replans else config.epochs
    total = steps_per_epoch * epochs
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(config, step, total, steps_per_epoch, replans=replans),
        last_epoch=taken - 1,  # its first step() sets the rate for step `taken`
    )


def _run_model(
    config: TrainConfig,
    model_config: ModelConfig,
    state: dict | None,
    device: torch.device,
    group: Distributed,
) -> nn.Module:
    """The model to train: seeded, with encoder or warm-start weights for a new run, SyncBN
    under ``sync_bn``, on ``device`` in the run's memory layout."""
    torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
    model = model_config.build()
    if config.encoder_weights and state is None:
        from ..models.imagenet import load_encoder_weights

        load_encoder_weights(model, config.encoder_weights)
    if config.init_weights and state is None:
        warm_start(model, model_config, config.init_weights)
    if config.sync_bn:
        model = convert_sync_bn(model, group=group, device=device)
    model.to(device)
    if resolve_channels_last(config.channels_last, device):
        model.to(memory_format=torch.channels_last)
    return model


def _distillation(
    config: TrainConfig, model_config: ModelConfig, *, device: torch.device, channels_last: bool
) -> tuple[Distillation, str]:
    """The ``distill_from`` teacher, ready on ``device``, and its architecture's name."""
    teacher, teacher_config = load_teacher(
        config.distill_from, student=model_config, holdout_groups=config.holdout_groups,
        device=device, channels_last=channels_last,
    )  # fmt: skip
    distillation = Distillation(
        teacher=teacher, weight=config.distill_weight, temperature=config.distill_temperature,
        ignore_index=model_config.ignore_index,
    )  # fmt: skip
    return distillation, teacher_config.name


def restore(run: Run, state: dict) -> None:
    run.model.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):  # fp16 loss scale (older checkpoints: a fresh scaler)
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch = run.saved_epoch = state["epoch"]
    run.best = state.get("best", run.best)
    if run.average is not None and state.get("average"):
        run.average.load_state_dict(state["average"], device=run.device)
    run.averaged_metrics = state.get("averaged_metrics")
    run.budget = state.get("time_budget")
    # Older checkpoints carry no log rows: keep log.csv's rows up to the checkpoint's epoch.
    run.log = state.get("log") or read_log_rows(Path(run.config.out) / "log.csv", state["epoch"])


def epoch_loader(run: Run, epoch: int) -> DataLoader:
    """This epoch's batches: the whole set shuffled by (seed, epoch), or under torchrun this
    process's shard of it (``DistributedSampler``, seeded by seed and ``set_epoch``)."""
    config, group = run.config, run.group
    collate = PadCollate(ignore_index=run.data.dataset.info.ignore_index)  # mixed sizes: pad
    # Resident samples are augmented where they live, by the main process: no workers.
    workers = 0 if isinstance(run.data, ResidentDataset) else config.num_workers
    if not group.enabled:
        return DataLoader(
            run.data, batch_size=config.batch_size, shuffle=True, drop_last=len(run.data) >= config.batch_size,
            num_workers=workers, generator=torch.Generator().manual_seed(config.seed * 7919 + epoch),
            collate_fn=collate,
        )  # fmt: skip
    sampler = DistributedSampler(
        run.data, num_replicas=group.world_size, rank=group.rank, shuffle=True, seed=config.seed
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        run.data, batch_size=config.batch_size, sampler=sampler, drop_last=len(sampler) >= config.batch_size,
        num_workers=workers, collate_fn=collate,
    )  # fmt: skip
