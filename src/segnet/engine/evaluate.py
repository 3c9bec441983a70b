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

from ..data.base import DatasetInfo, SegmentationDataset
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
    offsets: Sequence[torch.Tensor] = (),
) -> dict:
    """G, C, mIoU, per-class rows, BF and the confusion matrix over ``dataset``; void excluded.

    ``optimize``: run a copy made by :func:`segnet.optimize_for_inference` on ``backend`` (BN
    folded, channels_last; the same argmax as the eager model on >= 99.5% of pixels, tested);
    ``calibration``: images for int8, ``int8_plan`` which convolutions it keeps fp32;
    ``offsets``: (K,) per-class score offsets (engine/adjust.py), each scored on the same
    forward passes into ``metrics["adjusted"]``, one dict like the rest per offset.
    """
    info = dataset.info
    # One tally for the model as it is, one more per offset (engine/adjust.py): the scores are
    # computed once, each offset only moves the argmax.
    bf = {"boundary": boundary, "bf_tolerance": bf_tolerance,
          "bf_count_predicted_only": bf_count_predicted_only}  # fmt: skip
    tallies = [_Tally(info, **bf) for _ in range(1 + len(offsets))]
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
        tallies[0].update(probs.mean.argmax(dim=1).cpu(), masks)  # (N, H, W)
        if offsets:  # log p + offset: the logits + offset up to a per-pixel constant
            log_probs = probs.mean.float().clamp_min(torch.finfo(torch.float32).tiny).log()
            for tally, offset in zip(tallies[1:], offsets):
                shifted = log_probs + offset.to(log_probs.device)[None, :, None, None]
                tally.update(shifted.argmax(dim=1).cpu(), masks)
    found = [{**tally.compute(info, group), "num_images": len(dataset)} for tally in tallies]
    metrics = found[0]
    if offsets:
        metrics["adjusted"] = found[1:]
    return metrics


class _Tally:
    """One set of predictions' confusion matrix and BF sums over the split."""

    def __init__(
        self, info: DatasetInfo, *, boundary: bool, bf_tolerance: float,
        bf_count_predicted_only: bool,
    ) -> None:  # fmt: skip
        self.confusion = ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index)
        self.bf = None
        if boundary:  # paper: match within 0.75% of the diagonal, mean over classes in the truth
            self.bf = BoundaryF1(
                num_classes=info.num_classes, ignore_index=info.ignore_index,
                tolerance=bf_tolerance, count_predicted_only=bf_count_predicted_only,
            )  # fmt: skip

    def update(self, preds: torch.Tensor, masks: torch.Tensor) -> None:
        self.confusion.update(preds, masks)
        if self.bf is not None:
            self.bf.update(preds, masks)

    def compute(self, info: DatasetInfo, group: Distributed) -> dict:
        self.confusion.matrix = group.sum(self.confusion.matrix)  # (K, K) int64, every process's
        metrics = self.confusion.compute(info.class_names)
        if self.bf is not None:
            counts = torch.tensor([self.bf.total, self.bf.num_images], dtype=torch.float64)
            total, count = group.sum(counts)
            metrics["bf"] = float(total / count) if count else float("nan")
        metrics["confusion_matrix"] = self.confusion.matrix.tolist()  # [target][pred] pixels
        return metrics
