"""Evaluation over a whole split: one confusion matrix (G, C, mIoU) and per-image BF.

Under torchrun each process scores every ``world_size``-th image and the confusion matrices
and BF sums are added over the processes: the same metrics as one process scoring the whole
split (BF up to the rounding of its float64 sum, which adds the images in another order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..data.base import SegmentationDataset
from ..deploy.optimize import optimize_for_inference
from ..deploy.runtime import DEFAULT_INT8_PLAN
from ..metrics.boundary import BoundaryF1
from ..metrics.confusion import ConfusionMatrix
from .distributed import ALONE, Distributed
from .inference import (
    SINGLE_PASS,
    WHOLE_IMAGE,
    TestTimeAugmentation,
    Tiling,
    predict_probabilities,
)


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
    group: Distributed = ALONE,
    tta: TestTimeAugmentation = SINGLE_PASS,
    tiling: Tiling = WHOLE_IMAGE,
    backend: str = "torch",
    calibration: Sequence[torch.Tensor] | None = None,
    int8_plan: str = DEFAULT_INT8_PLAN,
) -> dict:
    """G, C, mIoU, per-class rows, BF and the confusion matrix over ``dataset``; void excluded.

    ``optimize``: run a copy made by :func:`segnet.optimize_for_inference` on ``backend`` (BN
    folded, channels_last; the same argmax as the eager model on >= 99.5% of pixels, tested);
    ``calibration``: images for int8, ``int8_plan`` which convolutions it keeps fp32.
    """
    info = dataset.info
    confusion = ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index)
    bf = None
    if boundary:  # paper: match within 0.75% of the diagonal, mean over classes in the ground truth
        bf = BoundaryF1(
            num_classes=info.num_classes, ignore_index=info.ignore_index,
            tolerance=bf_tolerance, count_predicted_only=bf_count_predicted_only,
        )  # fmt: skip
    shard = Subset(dataset, group.shard(len(dataset))) if group.enabled else dataset
    loader = DataLoader(shard, batch_size=1, shuffle=False, num_workers=0)
    model.eval()
    if optimize:
        model = optimize_for_inference(
            model, precision=precision, device=device, backend=backend, calibration=calibration,
            int8_plan=int8_plan,
        )  # fmt: skip
    for images, masks in tqdm(loader, desc="evaluate", disable=not progress or None, leave=False):
        probs = predict_probabilities(
            model, images, device=device, precision=precision, mc_samples=mc_samples, tta=tta,
            tiling=tiling,
        )  # fmt: skip
        preds = probs.mean.argmax(dim=1).cpu()  # (N, H, W)
        confusion.update(preds, masks)
        if bf is not None:
            bf.update(preds, masks)
    confusion.matrix = group.sum(confusion.matrix)  # (K, K) int64, every process's images
    metrics = confusion.compute(info.class_names)
    if bf is not None:
        total, count = group.sum(torch.tensor([bf.total, bf.num_images], dtype=torch.float64))
        metrics["bf"] = float(total / count) if count else float("nan")
    metrics["num_images"] = len(dataset)
    metrics["confusion_matrix"] = confusion.matrix.tolist()  # [target][pred] pixel counts
    return metrics
