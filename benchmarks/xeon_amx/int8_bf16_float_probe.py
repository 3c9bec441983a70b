"""Probe: on a CPU with AMX, OpenVINO int8 with its float parts in bf16 instead of f32.

The int8 plans keep some convolutions in float (``fast``: the first two and the classifier;
``accurate``: every one at full or half resolution) and OpenVINO runs them in f32
(``INFERENCE_PRECISION_HINT=f32``). On an AMX CPU bf16 convolutions run ~6x f32 ones
(benchmarks/README.md, "A Xeon with AMX"), so the float convolutions could run in bf16 -- if the
labels survive. For each plan this prints, on N CamVid val images, the share of pixels labelled
as eager fp32 does and the median forward time, with the float parts in f32 and in bf16.

    python benchmarks/xeon_amx/int8_bf16_float_probe.py runs/segnet_amx_bf16/last.pt \
        ../shared/data/CamVid 40 fast,accurate
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "epyc_zen4_engines"))

from probe_common import agreement, load_probe, use_plan

from segnet.deploy import backends, optimize_for_inference

_INIT = backends.OpenVinoGraph.__init__


def float_parts(hint: str) -> None:
    """Makes the next OpenVINO graphs compile with ``INFERENCE_PRECISION_HINT=hint``."""

    def init(self: backends.OpenVinoGraph, ov: object, graph: object, precision: str) -> None:
        _INIT(self, ov, graph, precision)
        self.config["INFERENCE_PRECISION_HINT"] = hint

    backends.OpenVinoGraph.__init__ = init


def main(checkpoint: str, root: str, count: int, plans: list[str]) -> None:
    model, calibration, images, eager = load_probe(checkpoint, root, count)
    for chosen in plans:
        for hint in ("f32", "bf16"):
            float_parts(hint)
            engine = optimize_for_inference(model, backend="openvino", precision="int8",
                                            calibration=calibration, int8_plan=use_plan(chosen))  # fmt: skip
            share, ms = agreement(engine, images, eager)
            print(f"{chosen}, float parts {hint}: {share:.3f}% of pixels as eager fp32, "
                  f"{ms:.0f} ms", flush=True)  # fmt: skip
    use_plan("fast")
    backends.OpenVinoGraph.__init__ = _INIT


if __name__ == "__main__":
    plans = (sys.argv[4] if len(sys.argv) > 4 else "fast,accurate").split(",")
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 20, plans)
