"""Probe: where OpenVINO's time or memory goes in SegNet's int8 (or fp32) graph.

Exports SegNet (untrained, 11 classes; weights do not change the op mix, its cost or its
tensors) as the openvino backend does, quantizes it with NNCF on 2 random images (a probe of
speed and memory, not of accuracy) and compiles it static for 1x3x360x480. Then either

* ``time``: OpenVINO's own per-node counters (``PERF_COUNT``), summed per node and kernel type,
  averaged over the runs after a warm-up; or
* ``memory``: the compiled model's execution plan (its runtime model: every node's execution
  order, output shape and precision) turned into tensor lifetimes -- a tensor lives from the
  node that writes it to the last node that reads it -- and the largest set alive at once: a
  lower bound of the activation memory OpenVINO must plan, with the tensors that make it up;
  beside it the measured peak RSS growth of the compile and of the first forward.

    python benchmarks/epyc_zen4_engines/openvino_profile.py [int8|fp32] [segnet|segnet_basic] [time|memory]
"""

import collections
import sys
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov
import torch

import segnet
from segnet.benchmark.memory import MB, PeakMemory
from segnet.deploy.backends import in_channels, openvino_core
from segnet.deploy.export import export_onnx_any_size
from segnet.deploy.quantize import calibration_arrays, quantize_openvino

RUNS = 5
SHAPE = [1, 3, 360, 480]
BYTES = {"f32": 4, "i32": 4, "i64": 8, "f16": 2, "bf16": 2, "u8": 1, "i8": 1, "boolean": 1}


def static_graph(core: ov.Core, name: str, precision: str) -> ov.Model:
    """The backend's graph of an untrained ``name``, int8 by NNCF if asked, reshaped static."""
    model = segnet.build_model(name, num_classes=11).eval()
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx_any_size(model, Path(folder) / "m.onnx", in_channels=in_channels(model))
        graph = core.read_model(str(path))
    if precision == "int8":
        arrays = calibration_arrays([torch.randn(*SHAPE) for _ in range(2)])
        graph = quantize_openvino(graph, arrays)
    graph.reshape(SHAPE)
    return graph


def compile_static(core: ov.Core, graph: ov.Model, **config: object) -> ov.CompiledModel:
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2,
              "INFERENCE_PRECISION_HINT": "f32", **config}  # fmt: skip
    return core.compile_model(graph, "CPU", config)


def time_report(compiled: ov.CompiledModel, title: str) -> None:
    request = compiled.create_infer_request()
    image = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
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
    print(f"{title}: {wall / RUNS:.1f} ms a run (request latency), {total:.1f} ms in counted nodes")
    for (node_type, exec_type), (ms, count) in sorted(by_type.items(), key=lambda kv: -kv[1][0]):
        print(f"{ms:8.1f} ms {ms / total:6.1%} {count:4.0f}x {node_type:<20} {exec_type}")


def _info(op: object, key: str) -> str:
    info = op.get_rt_info()
    return info[key].astype(str) if key in info else ""


def memory_report(compiled: ov.CompiledModel, title: str) -> None:
    # One entry per node of the executed graph: (first order, last order, bytes, what).
    tensors = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        if _info(op, "layerType") in ("Const", "Input", "Output"):
            continue  # weights are counted by the compile, the input and logits by the caller
        order = int(_info(op, "execOrder"))
        size, shapes = 0, []
        for out in op.outputs():
            shape, kind = list(out.get_shape()), out.get_element_type().get_type_name()
            size += int(np.prod(shape)) * BYTES[kind]
            shapes.append(f"{kind}{shape}")
        readers = [int(_info(t.get_node(), "execOrder")) for out in op.outputs()
                   for t in out.get_target_inputs()]  # fmt: skip
        what = f"{_info(op, 'layerType')} {_info(op, 'primitiveType')} {' '.join(shapes)}"
        tensors.append(
            (order, max(readers, default=order), size, f"{what} {op.get_friendly_name()}")
        )
    alive = {t: [x for x in tensors if x[0] <= t <= x[1]] for t in {x[0] for x in tensors}}
    peak = max(alive, key=lambda t: sum(x[2] for x in alive[t]))
    total = sum(x[2] for x in alive[peak])
    print(
        f"{title}: {total / MB:.1f} MB of tensors alive at once at most "
        f"(execution step {peak} of {max(alive)}), of which:"
    )
    for first, last, size, what in sorted(alive[peak], key=lambda x: -x[2]):
        if size >= MB:
            print(f"{size / MB:8.1f} MB  steps {first:3d}-{last:3d}  {what[:110]}")
    print("largest tensors anywhere:")
    for first, last, size, what in sorted(tensors, key=lambda x: -x[2])[:12]:
        print(f"{size / MB:8.1f} MB  steps {first:3d}-{last:3d}  {what[:110]}")


def main() -> None:
    precision = sys.argv[1] if len(sys.argv) > 1 else "int8"
    name = sys.argv[2] if len(sys.argv) > 2 else "segnet"
    mode = sys.argv[3] if len(sys.argv) > 3 else "time"
    torch.set_num_threads(2)
    core = openvino_core(ov)
    title = f"{name} {precision} {'x'.join(map(str, SHAPE))}"
    if mode == "time":
        time_report(
            compile_static(core, static_graph(core, name, precision), PERF_COUNT=True), title
        )
    else:
        graph = static_graph(core, name, precision)
        with PeakMemory(torch.device("cpu")) as compiling:
            compiled = compile_static(core, graph)
        request = compiled.create_infer_request()
        with PeakMemory(torch.device("cpu")) as forward:
            request.infer({0: np.zeros(SHAPE, dtype=np.float32)})
        print(
            f"measured (peak RSS growth): compile {compiling.mb:.1f} MB, "
            f"first forward {forward.mb:.1f} MB"
        )
        memory_report(compiled, title)


if __name__ == "__main__":
    main()
