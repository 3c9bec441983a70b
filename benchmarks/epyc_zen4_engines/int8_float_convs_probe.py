"""Probe: which convolutions SegNet's OpenVINO int8 should keep in fp32, for a checkpoint.

For each plan (how many leading convolutions, how many trailing ones stay fp32) it builds the
OpenVINO int8 engine as ``optimize_for_inference`` does (same calibration: 32 images of the
checkpoint's training data) and prints the share of pixels of N CamVid val images it labels as
eager fp32 does, and its median forward time on them. An optional fourth argument names the
plans, FIRST:LAST comma-separated (default: ``PLANS``).

    python benchmarks/epyc_zen4_engines/int8_float_convs_probe.py runs/segnet_brief_cpu/best.pt \
        ../shared/data/CamVid 20
    python benchmarks/epyc_zen4_engines/int8_float_convs_probe.py runs/segnet_longer_cpu/last.pt \
        ../shared/data/CamVid 40 2:4,2:8,4:8
"""

import sys

from probe_common import agreement, load_probe

from segnet.deploy import optimize_for_inference, quantize

PLANS = [(2, 1), (2, 2), (2, 3), (2, 4), (3, 3), (1, 1)]  # (first fp32, last fp32)


def main(checkpoint: str, root: str, count: int, plans: list[tuple[int, int]]) -> None:
    model, calibration, images, eager = load_probe(checkpoint, root, count)
    original = quantize.float_convs
    for first, last in plans:

        def plan(names: list[str], first: int = first, last: int = last) -> list[str]:
            return list(names[:first]) + list(names[first:][-last:])

        quantize.float_convs = plan
        engine = optimize_for_inference(model, backend="openvino", precision="int8",
                                        calibration=calibration)  # fmt: skip
        share, ms = agreement(engine, images, eager)
        print(f"first {first} + last {last} fp32: {share:.3f}% of pixels as eager fp32, "
              f"{ms:.0f} ms", flush=True)  # fmt: skip
    quantize.float_convs = original


if __name__ == "__main__":
    chosen = PLANS
    if len(sys.argv) > 4:
        chosen = [tuple(int(v) for v in plan.split(":")) for plan in sys.argv[4].split(",")]
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 20, chosen)
