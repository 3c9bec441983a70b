"""Evaluation over a whole split: one confusion matrix (G, C, mIoU) and per-image BF."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.base import SegmentationDataset
from ..deploy.optimize import InferenceModel, optimize_for_inference
from ..deploy.runtime import autocast
from ..metrics.boundary import BoundaryF1
from ..metrics.confusion import ConfusionMatrix


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    device: torch.device,
    precision: str = "fp32",
    mc_samples: int = 0,
) -> torch.Tensor:
    """(N, 3, H, W) normalised images -> (N, K, H, W) class probabilities (softmax).

    With ``mc_samples`` > 0 dropout stays on and the probabilities are the mean over samples
    (Bayesian SegNet); otherwise a single deterministic pass.
    """
    images = images.to(device)
    if device.type == "cpu" or precision != "fp32":
        images = images.contiguous(memory_format=torch.channels_last)
    samples = max(1, mc_samples)
    probs = None
    for _ in range(samples):
        # An optimized model already runs in its precision: no autocast around it.
        with (
            contextlib.nullcontext()
            if isinstance(model, InferenceModel)
            else autocast(device, precision)
        ):
            p = model(images).float().softmax(dim=1)
        probs = p if probs is None else probs + p
    return probs / samples


def evaluate(
    model: nn.Module,
    dataset: SegmentationDataset,
    *,
    device: torch.device,
    precision: str = "fp32",
    mc_samples: int = 0,
    boundary: bool = True,
    bf_tolerance: float = 0.0075,
    bf_count_predicted_only: bool = False,
    progress: bool = True,
    optimize: bool = True,
) -> dict:
    """G, C, mIoU, per-class rows, BF and the confusion matrix over ``dataset``; void excluded.

    ``optimize``: run a copy made by :func:`segnet.optimize_for_inference` (BN folded,
    channels_last; the same argmax as the eager model on >= 99.5% of pixels, tested).
    """
    info = dataset.info
    confusion = ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index)
    bf = None
    if boundary:  # paper: match within 0.75% of the diagonal, mean over classes in the ground truth
        bf = BoundaryF1(
            num_classes=info.num_classes, ignore_index=info.ignore_index,
            tolerance=bf_tolerance, count_predicted_only=bf_count_predicted_only,
        )  # fmt: skip
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
    model.eval()
    if optimize:
        model = optimize_for_inference(model, precision=precision, device=device)
    if mc_samples:
        from ..models import set_mc_dropout

        set_mc_dropout(model, True)
    try:
        for images, masks in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            probs = predict_logits(
                model, images, device=device, precision=precision, mc_samples=mc_samples
            )
            preds = probs.argmax(dim=1).cpu()
            confusion.update(preds, masks)
            if bf is not None:
                bf.update(preds, masks)
    finally:
        if mc_samples:
            from ..models import set_mc_dropout

            set_mc_dropout(model, False)
    metrics = confusion.compute(info.class_names)
    if bf is not None:
        metrics["bf"] = bf.compute()
    metrics["num_images"] = len(dataset)
    metrics["confusion_matrix"] = confusion.matrix.tolist()  # [target][pred] pixel counts
    return metrics
