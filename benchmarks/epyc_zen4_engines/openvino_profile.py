"""Probe: where OpenVINO's time goes in SegNet's int8 (or fp32) graph, per operation type.

Exports SegNet (untrained, 11 classes; weights do not change the op mix or its cost) as the
openvino backend does, quantizes it with NNCF on 2 random images (a probe of speed, not of
accuracy), compiles it static for 1x3x360x480 with performance counters on, and prints the
per-type totals of OpenVINO's own counters, averaged over the runs after a warm-up.

    python benchmarks/epyc_zen4_engines/openvino_profile.py [int8|fp32] [segnet|segnet_basic]
"""

import collections
import sys
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov
import torch

import segnet
from segnet.deploy.backends import in_channels, openvino_core
from segnet.deploy.export import export_onnx_any_size
from segnet.deploy.quantize import calibration_arrays, quantize_openvino

RUNS = 5


def main() -> None:
    precision = sys.argv[1] if len(sys.argv) > 1 else "int8"
    name = sys.argv[2] if len(sys.argv) > 2 else "segnet"
    torch.set_num_threads(2)
    model = segnet.build_model(name, num_classes=11).eval()
    core = openvino_core(ov)
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx_any_size(model, Path(folder) / "m.onnx", in_channels=in_channels(model))
        graph = core.read_model(str(path))
    if precision == "int8":
        arrays = calibration_arrays([torch.randn(1, 3, 360, 480) for _ in range(2)])
        graph = quantize_openvino(graph, arrays)
    graph.reshape([1, 3, 360, 480])
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2,
              "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True}
    compiled = core.compile_model(graph, "CPU", config)
    request = compiled.create_infer_request()
    image = np.random.default_rng(0).standard_normal((1, 3, 360, 480), dtype=np.float32)
    request.infer({0: image})  # warm-up
    by_type: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0])
    wall = 0.0
    for _ in range(RUNS):
        request.infer({0: image})
        wall += request.latency
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            entry = by_type[(info.node_type, info.exec_type)]
            entry[0] += info.real_time.total_seconds() * 1e3 / RUNS
            entry[1] += 1 / RUNS
    total = sum(ms for ms, _ in by_type.values())
    print(f"SegNet {name} {precision} 1x3x360x480: {wall / RUNS:.1f} ms a run (request latency), "
          f"{total:.1f} ms in counted nodes")
    for (node_type, exec_type), (ms, count) in sorted(by_type.items(), key=lambda kv: -kv[1][0]):
        print(f"{ms:8.1f} ms {ms / total:6.1%} {count:4.0f}x {node_type:<20} {exec_type}")


if __name__ == "__main__":
    main()
