"""One confusion matrix over a whole split; every region metric derives from it (the authors'
evaluation scripts): void pixels are excluded before counting.

    G    = trace / total                       (global accuracy)
    C    = mean_c TP_c / (TP_c + FN_c)         (class-average accuracy, mean recall)
    IoU  = TP_c / (TP_c + FP_c + FN_c),  mIoU = mean_c IoU_c

Classes absent from both ground truth and prediction have undefined recall/IoU; they are left
out of the means (NaN in ``per_class``), so a split without, say, bicyclists is not penalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ConfusionMatrix:
    def __init__(self, num_classes: int, *, ignore_index: int | None = None) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [target, pred]

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """preds, targets: integer tensors of the same shape, e.g. (N, H, W)."""
        preds, targets = preds.reshape(-1).long().cpu(), targets.reshape(-1).long().cpu()
        keep = (targets >= 0) & (targets < self.num_classes)
        if self.ignore_index is not None:
            keep &= targets != self.ignore_index
        k = self.num_classes
        pairs = targets[keep] * k + preds[keep].clamp(0, k - 1)
        self.matrix += torch.bincount(pairs, minlength=k * k).view(k, k)

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        m = self.matrix.double()
        tp, support, predicted = m.diag(), m.sum(1), m.sum(0)
        recall = tp / support  # NaN where a class has no ground-truth pixels
        union = support + predicted - tp
        iou = tp / union
        names = class_names or [str(c) for c in range(self.num_classes)]
        total = m.sum()
        return {
            "global_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "class_accuracy": float(recall.nanmean()),
            "miou": float(iou.nanmean()),
            "per_class": [
                {"name": name, "accuracy": float(recall[c]), "iou": float(iou[c])}
                for c, name in enumerate(names)
            ],
        }
