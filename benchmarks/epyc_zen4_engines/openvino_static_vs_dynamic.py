"""Probe: OpenVINO fp32/int8 on our any-size ONNX graph, dynamic vs reshaped to 1x3x360x480.

Prints the RSS growth over compile + first forward (benchmark.memory.PeakMemory) and the median
of 3 forwards, and whether the static model's labels equal the dynamic one's. Untrained model,
2 random calibration images: a probe of the engine, not of accuracy.

    python benchmarks/epyc_zen4_engines/openvino_static_vs_dynamic.py segnet
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch

import segnet
from segnet.benchmark.memory import PeakMemory
from segnet.deploy.export import export_onnx_any_size
from segnet.deploy.quantize import quantize_openvino

SIZE = [1, 3, 360, 480]


def main(name: str) -> None:
    torch.set_num_threads(2)
    model = segnet.build_model(name, num_classes=11).eval()
    source = export_onnx_any_size(model, Path(tempfile.mkdtemp()) / "dynamic.onnx")
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2,
              "INFERENCE_PRECISION_HINT": "f32"}  # fmt: skip
    x = torch.randn(*SIZE).numpy()
    quantized = quantize_openvino(
        core.read_model(str(source)), [torch.randn(*SIZE).numpy() for _ in range(2)]
    )
    runs = {}
    for precision in ("fp32", "int8"):
        for shape in ("dynamic", "static"):
            graph = core.read_model(str(source)) if precision == "fp32" else quantized.clone()
            if shape == "static":
                graph.reshape(SIZE)
            with PeakMemory(torch.device("cpu")) as memory:
                request = core.compile_model(graph, "CPU", config).create_infer_request()
                labels = np.array(request.infer({0: x})[0]).argmax(1)
            runs[precision, shape] = request, labels
            print(f"{precision} {shape}: compile + first forward RSS growth {memory.mb:.1f} MB")
    times = {key: [] for key in runs}
    for _ in range(3):
        for key, (request, _) in runs.items():
            start = time.perf_counter()
            request.infer({0: x})
            times[key].append(time.perf_counter() - start)
    for (precision, shape), seconds in times.items():
        same = (runs[precision, shape][1] == runs[precision, "dynamic"][1]).mean()
        print(f"{precision} {shape}: {1000 * statistics.median(seconds):.1f} ms, "
              f"labels as the dynamic graph's: {same:.5f}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "segnet")
