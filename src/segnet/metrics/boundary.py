"""Boundary F1 (BF): how well the predicted class contours line up with the ground truth.

SegNet paper (TPAMI 2017), Sec. 5, after Csurka, Larlus and Perronnin, "What is a good evaluation
measure for semantic segmentation?" (BMVC 2013). Per image and per class ``c``:

* the boundary of a mask is its pixels with a 4-neighbour outside the mask; the image border is
  not a boundary. Computed for ``target == c`` and for ``pred == c``.
* a boundary pixel matches when a boundary pixel of the other map lies within
  ``theta = tolerance * sqrt(H**2 + W**2)`` (Euclidean, inclusive): 0.75% of the diagonal,
  4.5 px at 360x480.
* precision P = matched / all predicted boundary pixels, recall R = matched / all ground-truth
  boundary pixels, F1 = 2PR / (P + R), 0 when P = R = 0.

Image BF = mean F1 over the classes present in the ground truth (the paper's definition). With
``count_predicted_only=True`` the classes present only in the prediction count too, with F1 = 0
(the authors' script). Dataset BF = mean over images: :class:`BoundaryF1`.

Void rule (``target == ignore_index``): void is unknown ground. Both masks are restricted to the
valid pixels, and a boundary pixel must be valid *and* have a valid 4-neighbour outside its mask.
So whatever is predicted on void never counts, and a mask's edge against void is no boundary, in
either map. Void does not block distances: matching is plain Euclidean across it. A class equal
to ``ignore_index`` is never scored.

Edge cases:

* class in the ground truth with an empty GT boundary (it fills every valid pixel, or meets other
  classes only across void or the image border): F1 = 1 if its predicted boundary is empty too,
  else 0 (precision 0: no ground-truth boundary pixel for a predicted one to match).
* non-empty GT boundary, empty predicted boundary: recall 0, so F1 = 0.
* an image with no class to score (all void): ``bf_score`` returns ``nan`` and
  :class:`BoundaryF1` leaves the image out of its mean.

Difference from the authors' script: a pixel matches if *any* boundary pixel of the other map is
within ``theta`` (Csurka et al.); the script matches one-to-one, which can only lower P and R.

Matching is exact: boundary maps are dilated by the disk of radius ``theta``, split into rows
(row ``dy`` is a horizontal run of half-width ``floor(sqrt(theta**2 - dy**2))``). The runs are
widened one pixel at a time, so one dilation is about ``4 * theta + 1`` boolean ORs over a
(classes, H, W) stack: ~22 ms per 360x480 CamVid image (11 classes) on one core.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import SegNetError

LabelMap = np.ndarray | torch.Tensor  # integer class indices, (H, W) or (N, H, W)

# Slack on theta**2 so that a distance equal to theta, up to float rounding, still matches.
_EPS = 1e-9


def _check_options(*, num_classes: int, tolerance: float) -> None:
    is_int = isinstance(num_classes, (int, np.integer)) and not isinstance(num_classes, bool)
    if not (is_int and num_classes >= 1):
        raise SegNetError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not (0.0 < tolerance < 1.0):
        raise SegNetError(
            f"tolerance must lie in (0, 1) as a fraction of the image diagonal "
            f"(the paper uses 0.0075), got {tolerance!r}"
        )


def _to_numpy(labels: LabelMap, *, name: str) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if not np.issubdtype(array.dtype, np.integer):
        raise SegNetError(
            f"{name} must hold integer class indices, got dtype {array.dtype} "
            "(for logits, take argmax over the class dim first)"
        )
    return array


def _edges(labels: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """(H, W) bool: valid pixels with a valid 4-neighbour of another label.

    Such a pixel is on the boundary of its own label's mask, so the boundary of class c is
    ``edges & (labels == c)``: one pass serves every class.
    """
    edges = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:] != labels[:-1]  # (H-1, W): pixel (y, x) vs (y+1, x)
    horizontal = labels[:, 1:] != labels[:, :-1]  # (H, W-1): pixel (y, x) vs (y, x+1)
    if valid is not None:
        vertical &= valid[1:] & valid[:-1]
        horizontal &= valid[:, 1:] & valid[:, :-1]
    edges[1:] |= vertical
    edges[:-1] |= vertical
    edges[:, 1:] |= horizontal
    edges[:, :-1] |= horizontal
    return edges


def _dilate(maps: np.ndarray, *, radius: float) -> np.ndarray:
    """(M, H, W) bool -> (M, H, W) bool: True within distance ``radius`` of a True pixel."""
    m, h, w = maps.shape
    r = math.isqrt(math.floor(radius * radius + _EPS))  # largest integer offset that fits
    # Half-width of the disk's row at vertical offset |dy|: largest dx with dx^2 + dy^2 <= radius^2.
    half_widths = [math.floor(math.sqrt(radius * radius + _EPS - dy * dy)) for dy in range(r + 1)]
    padded = np.zeros((m, h + 2 * r, w + 2 * r), dtype=bool)  # False margin: shifts bring in False
    padded[:, r : r + h, r : r + w] = maps
    runs = padded[:, :, r : r + w].copy()  # (M, H+2r, W): OR over |dx| <= half_width, rows padded
    out = np.zeros((m, h, w), dtype=bool)
    # half_widths shrinks as |dy| grows: widen the runs step by step, and OR each row offset in
    # as soon as its run is wide enough.
    for half_width in range(r + 1):
        if half_width:
            runs |= padded[:, :, r + half_width : r + half_width + w]
            runs |= padded[:, :, r - half_width : r - half_width + w]
        for dy in range(r + 1):
            if half_widths[dy] == half_width:
                out |= runs[:, r + dy : r + dy + h]
                if dy:
                    out |= runs[:, r - dy : r - dy + h]
    return out


def _class_f1(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    num_classes: int,
    ignore_index: int | None,
    tolerance: float,
    count_predicted_only: bool,
) -> np.ndarray:
    """F1 of every scored class of one (H, W) image, in no particular order (see module doc)."""
    valid = None if ignore_index is None else target != ignore_index  # (H, W)
    classes = np.arange(num_classes)
    if ignore_index is not None:
        classes = classes[classes != ignore_index]

    def present(labels: np.ndarray) -> np.ndarray:  # (len(classes),) bool, valid pixels only
        values = labels.ravel() if valid is None else labels[valid]
        values = values[(values >= 0) & (values < num_classes)].astype(np.int64)
        return np.bincount(values, minlength=num_classes)[classes] > 0

    in_target = present(target)
    num_predicted_only = int((present(pred) & ~in_target).sum()) if count_predicted_only else 0
    scored = classes[in_target]  # (C,)
    if scored.size == 0:
        return np.zeros(num_predicted_only)

    target_b = (target == scored[:, None, None]) & _edges(target, valid)  # (C, H, W)
    pred_b = (pred == scored[:, None, None]) & _edges(pred, valid)  # (C, H, W)
    theta = tolerance * math.hypot(*target.shape)
    near = _dilate(np.concatenate([target_b, pred_b]), radius=theta)  # (2C, H, W)
    c = scored.size
    n_target = np.count_nonzero(target_b, axis=(1, 2))  # (C,)
    n_pred = np.count_nonzero(pred_b, axis=(1, 2))
    hit_pred = np.count_nonzero(pred_b & near[:c], axis=(1, 2))  # predicted near GT boundary
    hit_target = np.count_nonzero(target_b & near[c:], axis=(1, 2))  # GT near predicted boundary

    precision = np.divide(hit_pred, n_pred, out=np.zeros(c), where=n_pred > 0)
    recall = np.divide(hit_target, n_target, out=np.zeros(c), where=n_target > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(c), where=total > 0)
    f1[(n_target == 0) & (n_pred == 0)] = 1.0  # no contour to find, none drawn
    return np.concatenate([f1, np.zeros(num_predicted_only)])


def bf_score(
    pred: LabelMap,
    target: LabelMap,
    *,
    num_classes: int,
    ignore_index: int | None = None,
    tolerance: float = 0.0075,
    count_predicted_only: bool = False,
) -> float:
    """Boundary F1 of one image (SegNet paper, Sec. 5; Csurka et al. 2013).

    Args:
        pred: (H, W) predicted class indices, numpy array or tensor.
        target: (H, W) ground-truth class indices; ``ignore_index`` marks void.
        num_classes: classes 0..num_classes-1 are scored.
        ignore_index: void label, excluded as the module doc describes; None: no void.
        tolerance: match distance as a fraction of the image diagonal, in (0, 1).
        count_predicted_only: also average over classes present only in ``pred`` (F1 = 0),
            as the authors' script does; the paper averages over ground-truth classes only.

    Returns:
        Mean F1 over the scored classes, in [0, 1]; ``nan`` when no class is scored.
    """
    _check_options(num_classes=num_classes, tolerance=tolerance)
    pred_np, target_np = _to_numpy(pred, name="pred"), _to_numpy(target, name="target")
    if pred_np.ndim != 2 or pred_np.shape != target_np.shape:
        raise SegNetError(
            f"pred and target must both be (H, W) label maps of the same size, "
            f"got {tuple(pred_np.shape)} and {tuple(target_np.shape)}"
        )
    f1 = _class_f1(
        pred_np,
        target_np,
        num_classes=num_classes,
        ignore_index=ignore_index,
        tolerance=tolerance,
        count_predicted_only=count_predicted_only,
    )
    return float(f1.mean()) if f1.size else math.nan


class BoundaryF1:
    """Dataset BF: the mean of :func:`bf_score` over images (SegNet paper, Sec. 5).

    ``update`` takes batches, ``compute`` returns the mean over the images seen so far, ``nan``
    before any scorable image (0.0 would read as a real, very bad score). Images with no class to
    score (all void) are left out of the mean.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        ignore_index: int | None = None,
        tolerance: float = 0.0075,
        count_predicted_only: bool = False,
    ) -> None:
        _check_options(num_classes=num_classes, tolerance=tolerance)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.tolerance = tolerance
        self.count_predicted_only = count_predicted_only
        self.reset()

    def reset(self) -> None:
        self._total = 0.0
        self._num_images = 0

    @property
    def num_images(self) -> int:
        """Images counted in the mean so far."""
        return self._num_images

    @property
    def total(self) -> float:
        """Sum of the counted images' BF: with ``num_images``, what shards of a split add up."""
        return self._total

    def update(self, preds: LabelMap, targets: LabelMap) -> None:
        """Adds the BF of each image of (N, H, W) ``preds`` against (N, H, W) ``targets``."""
        preds_np, targets_np = _to_numpy(preds, name="preds"), _to_numpy(targets, name="targets")
        if preds_np.ndim != 3 or preds_np.shape != targets_np.shape:
            raise SegNetError(
                f"preds and targets must both be (N, H, W) label maps of the same size, "
                f"got {tuple(preds_np.shape)} and {tuple(targets_np.shape)}"
            )
        for pred, target in zip(preds_np, targets_np):
            f1 = _class_f1(
                pred,
                target,
                num_classes=self.num_classes,
                ignore_index=self.ignore_index,
                tolerance=self.tolerance,
                count_predicted_only=self.count_predicted_only,
            )
            if f1.size:
                self._total += float(f1.mean())
                self._num_images += 1

    def compute(self) -> float:
        """Mean BF over the images seen since the last ``reset``; ``nan`` if none."""
        return self._total / self._num_images if self._num_images else math.nan
