"""Probe: which convolutions SegNet's OpenVINO int8 should keep in fp32, for a checkpoint.

For each plan (how many leading convolutions, how many trailing ones stay fp32) it builds the
OpenVINO int8 engine as ``optimize_for_inference`` does (same calibration: 32 images of the
checkpoint's training data) and prints the share of pixels of N CamVid val images it labels as
eager fp32 does, and its median forward time on them.

    python benchmarks/epyc_zen4_engines/int8_float_convs_probe.py runs/segnet_brief_cpu/best.pt \
        ../shared/data/CamVid 20
"""

import statistics
import sys
import time

import numpy as np
import torch

from segnet.data import open_dataset
from segnet.deploy import optimize_for_inference, quantize
from segnet.engine.calibration import calibration_images
from segnet.engine.checkpoint import load_model, read_checkpoint

PLANS = [(2, 1), (2, 2), (2, 3), (2, 4), (3, 3), (1, 1)]  # (first fp32, last fp32)


def main(checkpoint: str, root: str, count: int) -> None:
    torch.set_num_threads(2)
    model, _, _ = load_model(checkpoint)
    model.eval()
    calibration = calibration_images(train_config=read_checkpoint(checkpoint)["train_config"])
    val = open_dataset("camvid", root=root, split="val")  # normalized (3, 360, 480) images
    picks = np.linspace(0, len(val) - 1, count).round().astype(int)
    images = [val[i][0][None] for i in picks]
    with torch.no_grad():
        eager = [model(x).argmax(1) for x in images]
    original = quantize.float_convs
    for first, last in PLANS:

        def plan(names: list[str], first: int = first, last: int = last) -> list[str]:
            return list(names[:first]) + list(names[first:][-last:])

        quantize.float_convs = plan
        engine = optimize_for_inference(model, backend="openvino", precision="int8",
                                        calibration=calibration)  # fmt: skip
        same, total, times = 0, 0, []
        for x, labels in zip(images, eager):
            start = time.perf_counter()
            out = engine(x)
            times.append(time.perf_counter() - start)
            same += int((out.argmax(1) == labels).sum())
            total += labels.numel()
        print(f"first {first} + last {last} fp32: {100 * same / total:.3f}% of pixels as eager "
              f"fp32, {1000 * statistics.median(times):.0f} ms", flush=True)  # fmt: skip
    quantize.float_convs = original


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 20)
