"""Confusion-matrix metrics computed by hand."""

from __future__ import annotations

import math

import torch

from segnet.metrics.confusion import ConfusionMatrix


def test_metrics_by_hand() -> None:
    targets = torch.tensor([[0, 0, 1, 1, 2, 9]])  # 9 = void, ignored
    preds = torch.tensor([[0, 1, 1, 1, 0, 2]])
    cm = ConfusionMatrix(3, ignore_index=9)
    cm.update(preds, targets)
    m = cm.compute(["a", "b", "c"])
    assert m["global_accuracy"] == 3 / 5
    assert math.isclose(m["class_accuracy"], (1 / 2 + 1 + 0) / 3)
    assert math.isclose(m["miou"], (1 / 3 + 2 / 3 + 0) / 3)
    assert m["per_class"][1] == {"name": "b", "accuracy": 1.0, "iou": 2 / 3}


def test_accumulates_over_updates() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    cm.update(torch.tensor([0, 0]), torch.tensor([1, 1]))
    assert cm.matrix.tolist() == [[1, 0], [2, 1]]
    assert cm.compute()["global_accuracy"] == 0.5
