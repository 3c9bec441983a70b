"""Probe: what each further input shape costs the OpenVINO backend in memory.

Builds SegNet (untrained, 11 classes) on OpenVINO int8 as ``optimize_for_inference`` does (2
random calibration images: a probe of the engine, not of accuracy), then runs one image per
shape and prints the process's resident set growth after each. The first
``backends.STATIC_SHAPES`` shapes get a static compile each; later shapes share one dynamic one.

    python benchmarks/epyc_zen4_engines/openvino_shapes_memory.py
"""

import torch

import segnet
from segnet.deploy import optimize_for_inference

SHAPES = [(360, 480), (352, 480), (360, 448), (320, 480), (288, 384), (256, 320), (360, 480)]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def main() -> None:
    torch.set_num_threads(2)
    model = segnet.build_model("segnet", num_classes=11).eval()
    calibration = [torch.randn(1, 3, 96, 128) for _ in range(2)]
    engine = optimize_for_inference(
        model, backend="openvino", precision="int8", calibration=calibration
    )
    base = rss_mb()
    for height, width in SHAPES:
        engine(torch.randn(1, 3, height, width))
        print(f"after 1x3x{height}x{width}: +{rss_mb() - base:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
