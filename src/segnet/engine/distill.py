"""Knowledge distillation: a trained model (the teacher, any registered architecture) supplies
soft per-pixel targets that a run's model (the student) learns beside the labels.

Loss of a step (Hinton et al. 2015, applied per pixel as in pixel-wise distillation for
segmentation)::

    (1 - weight) * labels_loss + weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))

``labels_loss`` is the run's class-weighted cross-entropy (recipe.py); the KL term is averaged
over the non-void pixels, as the labels loss is (padding added by the collate carries the void
label, so it never counts), and not class-weighted: the soft targets are the teacher's own
balance of the classes (on CamVid's held-out drive 0001TP this cost the rare classes recall:
docs/results.md). ``T^2`` keeps the gradient scale of the soft term independent of ``T``.

The teacher sees the same augmented batch as the student, in eval mode (BN running statistics,
no dropout), without gradients, in the run's precision. A teacher trained on the images a run
validates on would leak their labels into the validation: with ``holdout_groups`` the teacher's
own run must have held out at least those groups (checked when its checkpoint says so).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..deploy.runtime import autocast
from ..errors import ArgumentError
from .checkpoint import ModelConfig, load_model


class Distillation:
    """A frozen teacher and the mix of its soft targets with a run's labels loss."""

    def __init__(
        self, *, teacher: nn.Module, weight: float, temperature: float, ignore_index: int
    ) -> None:
        self.teacher = teacher.eval()
        self.weight = weight
        self.temperature = temperature
        self.ignore_index = ignore_index

    def teacher_logits(
        self, images: torch.Tensor, *, device: torch.device, precision: str
    ) -> torch.Tensor:
        """(N, K, H, W) float32 logits of the teacher for the batch ``images`` (N, 3, H, W)."""
        with torch.no_grad(), autocast(device, precision):
            return self.teacher(images).float()

    def mix(
        self,
        labels_loss: torch.Tensor,
        logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        masks: torch.Tensor,
    ) -> torch.Tensor:
        """The step's loss from the labels loss and both models' logits (N, K, H, W)."""
        t = self.temperature
        student = F.log_softmax(logits.float() / t, dim=1)
        target = F.log_softmax(teacher_logits / t, dim=1)
        kl = F.kl_div(student, target, reduction="none", log_target=True).sum(dim=1)  # (N, H, W)
        valid = masks != self.ignore_index
        soft = (kl * valid).sum() / valid.sum().clamp(min=1) * t * t
        return (1 - self.weight) * labels_loss + self.weight * soft


def load_teacher(
    path: str,
    *,
    student: ModelConfig,
    holdout_groups: list[str] | None,
    device: torch.device,
    channels_last: bool,
) -> tuple[nn.Module, ModelConfig]:
    """The teacher of ``distill_from``: its checkpoint's model, frozen in eval mode on ``device``,
    checked to predict the student's classes and, for a held-out run, not to have trained on the
    held-out groups."""
    try:
        teacher, config, payload = load_model(path, expect_num_classes=student.num_classes)
    except ArgumentError as error:  # about the file: say which key gave it
        if error.name != "checkpoint":
            raise
        raise error.renamed("distill_from") from None
    if tuple(config.class_names) != tuple(student.class_names):
        raise ArgumentError(
            "distill_from",
            f"{path}: predicts classes {', '.join(config.class_names)}, this run "
            f"{', '.join(student.class_names)}; distil from a model of the same dataset",
        )
    inputs = (config.in_channels, tuple(config.mean), tuple(config.std))
    if inputs != (student.in_channels, tuple(student.mean), tuple(student.std)):
        raise ArgumentError(
            "distill_from",
            f"{path}: takes {config.in_channels}-channel images normalised with mean "
            f"{list(config.mean)}, std {list(config.std)}, unlike this run's; distil from a model "
            "of the same inputs",
        )
    _check_holdout(path, payload.get("train_config"), holdout_groups)
    teacher.requires_grad_(False)  # frozen: no gradients kept, and an optimizer would refuse it
    teacher.to(device)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    return teacher, config


def _check_holdout(path: str, trained: dict | None, holdout_groups: list[str] | None) -> None:
    """Refuses a teacher whose run trained on a group this run validates on. A checkpoint
    without its training config (packed weights) cannot be checked and is taken as it is."""
    if not holdout_groups or not trained:
        return
    held = set(trained.get("holdout_groups") or [])
    seen = sorted(set(holdout_groups) - held)
    if seen:
        raise ArgumentError(
            "distill_from",
            f"{path}: its run trained on {', '.join(seen)}, which this run holds out for "
            "validation (the teacher would leak those labels); distil from a run that held "
            f"out {', '.join(holdout_groups)} too",
        )
