"""Probe: NNCF options beyond the default plan, for SegNet's OpenVINO int8 agreement.

For each variant it builds the OpenVINO int8 engine as ``optimize_for_inference`` does (same
calibration: 32 images of the checkpoint's training data; same fp32 convolutions), with extra
``nncf.quantize`` options, and prints the share of pixels of N CamVid val images labelled as
eager fp32 labels them, and the median forward time.

    python benchmarks/epyc_zen4_engines/int8_nncf_options_probe.py CHECKPOINT ../shared/data/CamVid 20 \
        [default,full-bias,quantile,no-bias]
"""

import dataclasses
import statistics
import sys
import time

import nncf
import numpy as np
import torch
from nncf.quantization.range_estimator import RangeEstimatorParametersSet

from segnet.data import open_dataset
from segnet.deploy import optimize_for_inference
from segnet.engine.calibration import calibration_images
from segnet.engine.checkpoint import load_model, read_checkpoint

VARIANTS = {  # name: (nncf.quantize keywords, AdvancedQuantizationParameters fields)
    "default": ({}, {}),
    "full-bias": ({"fast_bias_correction": False}, {}),  # bias correction on every layer
    "quantile": (  # activation ranges: mean over batches of the 1e-4 / 1 - 1e-4 quantiles
        {}, {"activations_range_estimator_params": RangeEstimatorParametersSet.MEAN_QUANTILE}),
    "no-bias": ({}, {"disable_bias_correction": True}),
}


def main(checkpoint: str, root: str, count: int, names: list[str]) -> None:
    torch.set_num_threads(2)
    model, _, _ = load_model(checkpoint)
    model.eval()
    calibration = calibration_images(train_config=read_checkpoint(checkpoint)["train_config"])
    val = open_dataset("camvid", root=root, split="val")  # normalized (3, 360, 480) images
    picks = np.linspace(0, len(val) - 1, count).round().astype(int)
    images = [val[i][0][None] for i in picks]
    with torch.no_grad():
        eager = [model(x).argmax(1) for x in images]
    original = nncf.quantize
    for name in names:
        keywords, advanced = VARIANTS[name]

        def variant(*args: object, keywords: dict = keywords, advanced: dict = advanced,
                    **kwargs: object) -> object:
            kwargs.update(keywords)
            kwargs["advanced_parameters"] = dataclasses.replace(
                kwargs["advanced_parameters"], **advanced
            )
            return original(*args, **kwargs)

        nncf.quantize = variant
        tic = time.perf_counter()
        engine = optimize_for_inference(model, backend="openvino", precision="int8",
                                        calibration=calibration)  # fmt: skip
        build_s = time.perf_counter() - tic
        same, total, times = 0, 0, []
        for x, labels in zip(images, eager):
            start = time.perf_counter()
            out = engine(x)
            times.append(time.perf_counter() - start)
            same += int((out.argmax(1) == labels).sum())
            total += labels.numel()
        print(f"{name}: {100 * same / total:.3f}% of pixels as eager fp32, "
              f"{1000 * statistics.median(times):.0f} ms, built in {build_s:.0f} s", flush=True)
    nncf.quantize = original


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 20,
         sys.argv[4].split(",") if len(sys.argv) > 4 else list(VARIANTS))
