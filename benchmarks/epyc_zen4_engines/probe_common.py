"""What the int8 agreement probes share: a checkpoint, its calibration images, N CamVid val
images spread over the split with eager fp32 labels, the agreement of an engine with them, and
the convolutions kept fp32 (a plan by name, or by position)."""

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from segnet.data import open_dataset
from segnet.deploy import INT8_PLANS, quantize
from segnet.engine.calibration import calibration_images
from segnet.engine.checkpoint import load_model, read_checkpoint


def load_probe(
    checkpoint: str, root: str, count: int
) -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """(model in eval mode, the backend's default calibration images -- 32 of the checkpoint's
    training data --, ``count`` val images (1, 3, 360, 480), their eager fp32 labels)."""
    torch.set_num_threads(2)
    model, _, _ = load_model(checkpoint)
    model.eval()
    calibration = calibration_images(train_config=read_checkpoint(checkpoint)["train_config"])
    val = open_dataset("camvid", root=root, split="val")  # normalized (3, 360, 480) images
    picks = np.linspace(0, len(val) - 1, count).round().astype(int)
    images = [val[i][0][None] for i in picks]
    with torch.no_grad():
        eager = [model(x).argmax(1) for x in images]
    return model, calibration, images, eager


def agreement(
    engine: Callable[[torch.Tensor], torch.Tensor],
    images: list[torch.Tensor],
    eager: list[torch.Tensor],
) -> tuple[float, float]:
    """(% of pixels ``engine`` labels as eager fp32 does, median forward ms)."""
    same, total, times = 0, 0, []
    for x, labels in zip(images, eager):
        start = time.perf_counter()
        out = engine(x)
        times.append(time.perf_counter() - start)
        same += int((out.argmax(1) == labels).sum())
        total += labels.numel()
    return 100 * same / total, 1000 * statistics.median(times)


_FLOAT_CONVS = quantize.float_convs


def use_plan(plan: str) -> str:
    """Makes the next int8 build keep ``plan``'s convolutions fp32; returns the ``int8_plan`` to
    build with. ``plan``: a name of :data:`INT8_PLANS`; FIRST:LAST, the first FIRST and last LAST
    convolutions; or I+J+..., the convolutions at those positions in execution order (negative
    from the end, ``-1`` the classifier)."""
    quantize.float_convs = _FLOAT_CONVS
    if plan in INT8_PLANS:
        return plan

    def kept(names: list[str], _kept: object) -> list[str]:
        if ":" in plan:
            first, last = (int(v) for v in plan.split(":"))
            return list(names[:first]) + list(names[first:][-last:])
        return [names[int(i)] for i in plan.split("+")]

    quantize.float_convs = kept
    return "fast"
