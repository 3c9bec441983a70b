"""The paper's metrics: one confusion matrix over a split (G, C, per-class and mean IoU), boundary
F1 per image (BF), and the pixel agreement of two models' labels (deployment checks)."""

from .agreement import compare_logits, pixel_agreement
from .boundary import BoundaryF1, bf_score
from .confusion import ConfusionMatrix

__all__ = ["BoundaryF1", "ConfusionMatrix", "bf_score", "compare_logits", "pixel_agreement"]
