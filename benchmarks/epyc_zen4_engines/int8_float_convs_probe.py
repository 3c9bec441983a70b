"""Probe: which convolutions SegNet's OpenVINO int8 should keep in fp32, for a checkpoint.

For each plan (how many leading convolutions, how many trailing ones stay fp32) it builds the
OpenVINO int8 engine as ``optimize_for_inference`` does (same calibration: 32 images of the
checkpoint's training data) and prints the share of pixels of N CamVid val images it labels as
eager fp32 does, and its median forward time on them. An optional fourth argument names the
plans, comma-separated (default: ``PLANS``): FIRST:LAST keeps the first FIRST and the last LAST
convolutions fp32; I+J+... keeps the convolutions at those positions in execution order
(negative from the end, ``-1`` the classifier); ``fast`` or ``accurate`` runs that int8 plan.

    python benchmarks/epyc_zen4_engines/int8_float_convs_probe.py runs/segnet_brief_cpu/best.pt \
        ../shared/data/CamVid 20
    python benchmarks/epyc_zen4_engines/int8_float_convs_probe.py runs/segnet_longer_cpu/last.pt \
        ../shared/data/CamVid 40 2:4,2:8,4:8
    python benchmarks/epyc_zen4_engines/int8_float_convs_probe.py runs/segnet_longer_cpu/last.pt \
        ../shared/data/CamVid 40 0+1+3+-1,0+1+3+-2+-1
"""

import sys

from probe_common import agreement, load_probe, use_plan

from segnet.deploy import optimize_for_inference

PLANS = "2:1,2:2,2:3,2:4,3:3,1:1"


def main(checkpoint: str, root: str, count: int, plans: list[str]) -> None:
    model, calibration, images, eager = load_probe(checkpoint, root, count)
    for chosen in plans:
        engine = optimize_for_inference(model, backend="openvino", precision="int8",
                                        calibration=calibration, int8_plan=use_plan(chosen))  # fmt: skip
        share, ms = agreement(engine, images, eager)
        print(f"fp32 {chosen}: {share:.3f}% of pixels as eager fp32, {ms:.0f} ms", flush=True)
    use_plan("fast")


if __name__ == "__main__":
    plans = (sys.argv[4] if len(sys.argv) > 4 else PLANS).split(",")
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 20, plans)
