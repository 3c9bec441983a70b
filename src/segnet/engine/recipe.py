"""The training recipe's parts: loss, optimizer, learning-rate schedule, warm start, and the
check that weights stayed finite. ``train.py`` runs them.

Loss (as the authors' Caffe loss): class-weighted pixel cross-entropy, void ignored, summed and
divided by the number of non-void pixels -- not by the sum of weights as torch's weighted
``reduction="mean"`` does, which would undo most of median-frequency balancing's effect on the
gradient scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArgumentError
from .checkpoint import ModelConfig, load_model
from .config import TrainConfig


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


def lr_factor(
    config: TrainConfig,
    step: int,
    total_steps: int,
    steps_per_epoch: int,
    *,
    replans: tuple[tuple[int, int], ...] = (),
) -> float:
    """Multiplier of the base rate at an iteration: linear warm-up, then the schedule over
    ``total_steps``. ``replans``: (step, total steps) pairs in order, a time budget's re-plans
    (budget.py): from each such step the rest of the schedule is squeezed or stretched into
    the steps up to the new total, so the rate goes on from where it was, falling faster or
    slower."""
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    return _decay(config.schedule, _progress(step, total_steps, warmup, replans))


def _progress(
    step: int, total_steps: int, warmup: int, replans: tuple[tuple[int, int], ...]
) -> float:
    """How far (0 to 1) into the schedule's decay a step after warm-up is."""
    if not replans:
        return (step - warmup) / max(1, total_steps - warmup)
    at, total = replans[-1]
    begin = max(at, warmup)  # a re-plan during warm-up leaves the warm-up as it was
    if step < begin:
        return _progress(step, total_steps, warmup, replans[:-1])
    reached = _progress(begin, total_steps, warmup, replans[:-1])
    return reached + (1 - reached) * (step - begin) / max(1, total - begin)


def _decay(schedule: str, progress: float) -> float:
    """The schedule's multiplier after warm-up, ``progress`` from 0 (its start) to 1 (its end)."""
    if schedule == "poly":
        return (1 - progress) ** 0.9
    if schedule == "cosine":
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


def non_finite(model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """The first weight, buffer or optimizer tensor holding NaN or inf, if any: the last step of
    an epoch can break the weights while its loss (computed before the step) looked fine."""
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return f"the weight {key}"
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point() and not value.isfinite().all():
                return f"the optimizer's {name} of parameter {index}"
    return None
