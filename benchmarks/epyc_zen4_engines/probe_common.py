"""What the int8 agreement probes share: a checkpoint, its calibration images, N CamVid val
images spread over the split with eager fp32 labels, and the agreement of an engine with them."""

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from segnet.data import open_dataset
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
