"""Probe: NNCF options beyond the default plan, for SegNet's OpenVINO int8 agreement.

For each variant it builds the OpenVINO int8 engine as ``optimize_for_inference`` does (same
calibration: 32 images of the checkpoint's training data; same fp32 convolutions), with extra
``nncf.quantize`` options, and prints the share of pixels of N CamVid val images labelled as
eager fp32 labels them, and the median forward time. An optional fifth argument names the
fp32 convolutions as ``int8_float_convs_probe.py`` does (default ``fast``).

    python benchmarks/epyc_zen4_engines/int8_nncf_options_probe.py CHECKPOINT ../shared/data/CamVid 20 \
        [default,full-bias,quantile,no-bias] [fast|accurate|FIRST:LAST|I+J+...]
"""

import dataclasses
import sys
import time

import nncf
from nncf.quantization.range_estimator import RangeEstimatorParametersSet
from probe_common import agreement, load_probe, use_plan

from segnet.deploy import optimize_for_inference

VARIANTS = {  # name: (nncf.quantize keywords, AdvancedQuantizationParameters fields)
    "default": ({}, {}),
    "full-bias": ({"fast_bias_correction": False}, {}),  # bias correction on every layer
    "quantile": (  # activation ranges: mean over batches of the 1e-4 / 1 - 1e-4 quantiles
        {},
        {"activations_range_estimator_params": RangeEstimatorParametersSet.MEAN_QUANTILE},
    ),
    "no-bias": ({}, {"disable_bias_correction": True}),
}


def main(checkpoint: str, root: str, count: int, names: list[str], plan: str) -> None:
    model, calibration, images, eager = load_probe(checkpoint, root, count)
    original = nncf.quantize
    for name in names:
        keywords, advanced = VARIANTS[name]

        def variant(
            *args: object, keywords: dict = keywords, advanced: dict = advanced, **kwargs: object
        ) -> object:
            kwargs.update(keywords)
            kwargs["advanced_parameters"] = dataclasses.replace(
                kwargs["advanced_parameters"], **advanced
            )
            return original(*args, **kwargs)

        nncf.quantize = variant
        tic = time.perf_counter()
        engine = optimize_for_inference(model, backend="openvino", precision="int8",
                                        calibration=calibration, int8_plan=use_plan(plan))  # fmt: skip
        build_s = time.perf_counter() - tic
        share, ms = agreement(engine, images, eager)
        print(
            f"{name}: {share:.3f}% of pixels as eager fp32, {ms:.0f} ms, built in {build_s:.0f} s",
            flush=True,
        )
    nncf.quantize = original


if __name__ == "__main__":
    main(
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]) if len(sys.argv) > 3 else 20,
        sys.argv[4].split(",") if len(sys.argv) > 4 else list(VARIANTS),
        sys.argv[5] if len(sys.argv) > 5 else "fast",
    )
