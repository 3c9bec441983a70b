"""Training steps: one pass of optimizer steps over a loader (``train_one_epoch``), with the
loss checked before each backward pass, so that a NaN or infinite loss stops training
(:class:`TrainingDiverged`) before it reaches a weight. train.py runs the epochs; budget.py
times a few of these steps on copies of the model to size a run.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..deploy.runtime import autocast
from ..errors import SegNetError
from .distill import Distillation
from .distributed import ALONE, Distributed


class TrainingDiverged(SegNetError):
    """The loss or a weight became NaN or infinite; training stopped before saving it."""

    agreed = True  # every process sees it at once (distributed.py): rank 0 alone reports it


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
    group: Distributed = ALONE,
    progress: bool = True,
    distillation: Distillation | None = None,
) -> tuple[float, float]:
    """One pass over the loader; returns (mean loss, images per second), over every process.
    With ``distillation`` the loss mixes the labels' with a teacher's soft targets (distill.py)."""
    model.train()
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    batches = len(loader) if max_batches is None else min(max_batches, len(loader))
    # disable=None: no step bar when stderr is not a terminal (nohup into a log file would
    # collect every redraw); the epoch lines are printed either way
    bar = tqdm(
        loader, total=batches, desc=desc, leave=False, dynamic_ncols=True,
        disable=not progress or None,
    )  # fmt: skip
    for step, (images, masks) in enumerate(bar):
        if step >= batches:
            break
        images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(images)  # (N, K, H, W)
        loss = loss_fn(logits, masks)
        if distillation is not None:
            soft = distillation.teacher_logits(images, device=device, precision=precision)
            loss = distillation.mix(loss, logits, soft, masks)
        checked = group.sum(loss.detach())  # summed over processes: all stop if one diverged
        if not torch.isfinite(checked):  # before backward: the step would poison every weight
            raise TrainingDiverged(f"the loss became {checked.item()} at step {step + 1} of {desc}")
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
    totals = group.sum(torch.tensor([total_loss, seen], dtype=torch.float64))  # (2,)
    elapsed = group.max(time.perf_counter() - start)
    return float(totals[0] / max(1, totals[1])), float(totals[1]) / elapsed
