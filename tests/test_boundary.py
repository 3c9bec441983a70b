"""Boundary F1 (SegNet paper, Sec. 5): hand-computed cases and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segnet.errors import SegNetError
from segnet.metrics.boundary import BoundaryF1, bf_score

# 30x40 has diagonal 50, so tolerance 0.05 gives theta = 2.5 px and 0.08 gives theta = 4 px.
H, W = 30, 40
THETA_2_5 = 0.05
THETA_4 = 0.08


def _halves(split: int, *, height: int = H, width: int = W) -> np.ndarray:
    """(height, width): class 0 left of column ``split``, class 1 from it on."""
    labels = np.ones((height, width), dtype=np.int64)
    labels[:, :split] = 0
    return labels


def test_identical_masks_score_one() -> None:
    target = _halves(20)
    target[5:9, 3:12] = 2
    assert bf_score(target, target, num_classes=3) == 1.0


def test_shift_within_theta_scores_one() -> None:
    assert bf_score(_halves(23), _halves(20), num_classes=2, tolerance=THETA_4) == 1.0


def test_shift_beyond_theta_scores_zero() -> None:
    # 5 px > theta = 4: no boundary pixel of either class matches, P = R = 0.
    assert bf_score(_halves(25), _halves(20), num_classes=2, tolerance=THETA_4) == 0.0


def test_default_tolerance_is_4_5_px_at_camvid_size() -> None:
    target = _halves(240, height=360, width=480)
    assert bf_score(_halves(244, height=360, width=480), target, num_classes=2) == 1.0
    assert bf_score(_halves(245, height=360, width=480), target, num_classes=2) == 0.0


def test_partly_shifted_boundary_exact_value() -> None:
    # GT: boundary between columns 19 | 20. Prediction: the same in rows 0-14, shifted 10 px
    # right (29 | 30) in rows 15-29. theta = 2.5.
    target = _halves(20)
    pred = target.copy()
    pred[15:, 20:30] = 0
    # Class 0. GT boundary: column 19, 30 px. Predicted boundary, 39 px: column 19 rows 0-14 (15),
    # row 15 columns 20-28 (9, upper neighbour is class 1), column 29 rows 15-29 (15).
    # Matched predicted: column 19 rows 0-14 (15) + row 15 columns 20, 21 (2): P = 17/39.
    # Matched GT: rows 0-14 (15) + rows 15, 16, 17 (nearest (15, 20) at 1, sqrt 2, sqrt 5): 18/30.
    # F1 = 2PR / (P + R) = 612 / 1212 = 51/101.
    # Class 1. GT boundary: column 20, 30 px. Predicted, 39 px: column 20 rows 0-14 (15),
    # row 14 columns 21-29 (9), column 30 rows 15-29 (15).
    # Matched predicted: 15 + row 14 columns 21, 22 (2): P = 17/39.
    # Matched GT: rows 0-14 (15) + rows 15, 16 ((14, 20) at 1, 2; row 17 is 3 away): R = 17/30.
    # F1 = 2 * 17 / (39 + 30) = 34/69.
    expected = (51 / 101 + 34 / 69) / 2
    score = bf_score(pred, target, num_classes=2, tolerance=THETA_2_5)
    assert score == pytest.approx(expected, abs=1e-12)


def test_class_only_in_prediction_counts_only_when_asked() -> None:
    target = _halves(20)
    pred = target.copy()
    pred[10:12, 5:7] = 2  # a 2x2 class-2 blob inside class 0, far from the GT boundary
    # Class 0 gains 8 predicted boundary pixels around the blob, none near column 19:
    # P = 30/38, R = 1, F1 = 60/68 = 15/17. Class 1: F1 = 1. Class 2 (not in GT): F1 = 0.
    paper = bf_score(pred, target, num_classes=3, tolerance=THETA_2_5)
    script = bf_score(pred, target, num_classes=3, tolerance=THETA_2_5, count_predicted_only=True)
    assert paper == pytest.approx((15 / 17 + 1) / 2, abs=1e-12)
    assert script == pytest.approx((15 / 17 + 1 + 0) / 3, abs=1e-12)


def test_void_pixels_do_not_count() -> None:
    void = 255
    target = _halves(20)
    target[20:] = void
    pred = _halves(20)
    pred[20:] = np.random.default_rng(0).integers(0, 3, (H - 20, W))  # anything on void
    assert bf_score(pred, target, num_classes=3, ignore_index=void, tolerance=THETA_2_5) == 1.0
    # Without the void rule the noise adds boundaries and a spurious class 2.
    assert bf_score(pred, target, num_classes=3, tolerance=THETA_2_5) < 1.0


def test_edges_against_void_are_not_boundaries() -> None:
    # Classes 0 and 1 meet only across a void band: neither has a GT boundary. A prediction that
    # moves the split inside the band has none either, so every class scores 1 (empty == empty).
    target = _halves(20)
    target[:, 18:24] = 11
    assert bf_score(_halves(21), target, num_classes=2, ignore_index=11) == 1.0


def test_class_filling_the_image_has_no_boundary() -> None:
    target = np.zeros((H, W), dtype=np.int64)
    assert bf_score(target, target, num_classes=2) == 1.0
    pred = target.copy()
    pred[10, 10] = 1  # class 0 now has a boundary where the GT has none: precision 0
    assert bf_score(pred, target, num_classes=2) == 0.0


def test_all_void_image_is_nan_and_skipped() -> None:
    target = np.full((H, W), 11)
    assert math.isnan(bf_score(_halves(20), target, num_classes=11, ignore_index=11))
    metric = BoundaryF1(num_classes=11, ignore_index=11)
    metric.update(np.stack([_halves(20)] * 2), np.stack([target, _halves(20)]))
    assert metric.num_images == 1 and metric.compute() == 1.0


def test_torch_and_numpy_agree() -> None:
    rng = np.random.default_rng(0)
    target = np.kron(rng.integers(0, 4, (6, 8)), np.ones((5, 5), dtype=np.int64))  # (30, 40)
    pred = np.roll(target, 2, axis=1)
    pred[rng.random(pred.shape) < 0.05] = 1
    kwargs = dict(num_classes=3, ignore_index=3, tolerance=THETA_2_5)
    expected = bf_score(pred, target, **kwargs)
    assert 0.0 < expected < 1.0
    assert bf_score(torch.from_numpy(pred), torch.from_numpy(target), **kwargs) == expected
    assert bf_score(torch.from_numpy(pred).to(torch.uint8), target, **kwargs) == expected


def _brute_force(
    pred: np.ndarray, target: np.ndarray, *, num_classes: int, ignore_index: int, tolerance: float
) -> float:
    """Pixel-by-pixel reading of the module doc, paper averaging."""
    height, width = target.shape
    valid = target != ignore_index
    theta2 = (tolerance * math.hypot(height, width)) ** 2

    def boundary(labels: np.ndarray, c: int) -> list[tuple[int, int]]:
        return [
            (y, x)
            for y in range(height)
            for x in range(width)
            if valid[y, x] and labels[y, x] == c and any(
                0 <= y + dy < height and 0 <= x + dx < width and valid[y + dy, x + dx]
                and labels[y + dy, x + dx] != c
                for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))
            )
        ]  # fmt: skip

    def matched(a: list, b: list) -> float:
        hits = sum(any((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 <= theta2 for q in b) for p in a)
        return hits / len(a) if a else 0.0

    f1s = []
    for c in range(num_classes):
        if c == ignore_index or not (valid & (target == c)).any():
            continue
        gt, pr = boundary(target, c), boundary(pred, c)
        p, r = matched(pr, gt), matched(gt, pr)
        f1s.append(1.0 if not gt and not pr else (2 * p * r / (p + r) if p + r else 0.0))
    return sum(f1s) / len(f1s)


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    target = np.kron(rng.integers(0, 4, (5, 6)), np.ones((3, 3), dtype=np.int64))  # (15, 18)
    pred = target.copy()
    noise = rng.random(pred.shape) < 0.15
    pred[noise] = rng.integers(0, 4, noise.sum())
    tolerance = (0.05, 0.1, 0.13, 0.2)[seed]  # theta 1.2 .. 4.7 px
    kwargs = dict(num_classes=3, ignore_index=3, tolerance=tolerance)
    assert bf_score(pred, target, **kwargs) == pytest.approx(_brute_force(pred, target, **kwargs))


@pytest.mark.parametrize("tolerance", [0.0, -0.1, 1.0, 2.0, float("nan")])
def test_bad_tolerance_raises(tolerance: float) -> None:
    with pytest.raises(SegNetError, match="tolerance"):
        bf_score(_halves(20), _halves(20), num_classes=2, tolerance=tolerance)
    with pytest.raises(SegNetError, match="tolerance"):
        BoundaryF1(num_classes=2, tolerance=tolerance)


def test_bad_shapes_raise() -> None:
    with pytest.raises(SegNetError, match="same size"):
        bf_score(_halves(20), _halves(20, height=29), num_classes=2)
    with pytest.raises(SegNetError, match=r"\(N, H, W\)"):
        BoundaryF1(num_classes=2).update(_halves(20), _halves(20))
    with pytest.raises(SegNetError, match="integer"):
        bf_score(_halves(20).astype(np.float32), _halves(20), num_classes=2)


def test_accumulator_averages_per_image() -> None:
    metric = BoundaryF1(num_classes=2, tolerance=THETA_4)
    assert math.isnan(metric.compute())
    targets = torch.from_numpy(np.stack([_halves(20)] * 3))
    preds = torch.from_numpy(np.stack([_halves(20), _halves(23), _halves(25)]))  # 1, 1, 0
    metric.update(preds[:2], targets[:2])
    metric.update(preds[2:], targets[2:])
    assert metric.num_images == 3
    assert metric.compute() == pytest.approx(2 / 3)
    metric.reset()
    assert metric.num_images == 0 and math.isnan(metric.compute())
