"""Engine backends: ONNX Runtime and OpenVINO running a model on CPU, in fp32, bf16 (OpenVINO)
or int8 (:mod:`.quantize`), behind the same callable as the torch backend.

Contract: :class:`EngineModel` maps ``images`` (N, C, H, W) float, on any device, to fp32
``logits`` (N, K, H, W), a torch tensor on the CPU. Both engines run one graph,
:func:`.export.export_onnx_any_size` (BN folded, the index pooling as standard ops), free in
N, H and W, so one engine serves every image size. Engines are optional extras; a missing one
is a one-line error naming it.

OpenVINO runs fp32 with ``INFERENCE_PRECISION_HINT=f32``: on CPUs with native bf16 its default
is bf16, which moved 0.8% of CamVid pixels off the fp32 labels (measured, SegNet-Basic). It
compiles the graph once per input shape, reshaped to that static shape, for the first few
shapes (:class:`OpenVinoGraph`): less memory and time than the dynamic graph, same labels
(``benchmarks/README.md``, "OpenVINO compiled per input shape").
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ArgumentError, SegNetError
from .export import export_onnx_any_size
from .optimize import OptimizedModel, optimize_torch
from .quantize import calibration_arrays, float_plan, quantize_onnx, quantize_openvino
from .runtime import DEFAULT_INT8_PLAN, resolve_precision

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
DEFAULT_BACKEND = "torch"  # what predict/evaluate/benchmark ran before engines existed
ENGINES = {
    "onnxruntime": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "openvino"),
}  # (module, extra)
BACKEND_PRECISIONS = {  # resolved precisions each backend runs
    "torch": ("fp32", "bf16", "fp16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}


def engine_installed(backend: str) -> bool:
    if backend == "torch":
        return True
    try:
        return importlib.util.find_spec(ENGINES[backend][0]) is not None
    except (ImportError, ValueError):  # a module blocked in sys.modules (None) raises ValueError
        return False


def installed_backends() -> list[str]:
    """ "torch" and each engine whose package imports here."""
    return [b for b in BACKENDS[1:] if engine_installed(b)]


def require_engine(backend: str) -> ModuleType:
    module, extra = ENGINES[backend]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SegNetError(
            f"backend {backend} needs the {module} package: pip install 'segnet[{extra}]'"
        ) from None


Runner = Callable[[np.ndarray], np.ndarray]  # float32 (N, C, H, W) -> (N, K, H, W) logits


class EngineModel(OptimizedModel):
    """An engine behind the torch-module interface. ``make_runner()`` gives a :data:`Runner`
    with its own engine state (an ONNX Runtime session, an OpenVINO infer request), so that
    each :meth:`replica` runs in its own thread without sharing buffers."""

    def __init__(
        self, make_runner: Callable[[], Runner], *, backend: str, precision: str,
        int8_plan: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.make_runner, self.run = make_runner, make_runner()
        self.backend, self.precision, self.device = backend, precision, torch.device("cpu")
        self.int8_plan = int8_plan  # which convolutions stay fp32 (int8 only; quantize.py)

    def replica(self) -> EngineModel:
        return EngineModel(self.make_runner, backend=self.backend, precision=self.precision,
                           int8_plan=self.int8_plan)  # fmt: skip

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()  # (N, C, H, W)
        return torch.from_numpy(self.run(array))  # (N, K, H, W) fp32


def build_backend(
    model: nn.Module,
    *,
    backend: str,
    precision: str,
    calibration: Iterable[Tensor] | None,
    device: torch.device,
    int8_plan: str = DEFAULT_INT8_PLAN,
) -> OptimizedModel:
    """``optimize_for_inference`` for every backend but plain torch fp32/bf16/fp16."""
    if backend not in BACKENDS:
        raise ArgumentError("backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
    resolved = resolve_precision(precision, device)  # int8 on CUDA fails here
    if device.type != "cpu":
        if backend not in ("auto", "torch"):
            raise ArgumentError("backend", f"{backend} runs on CPU; on {device.type} use torch")
        return optimize_torch(model, precision=resolved, device=device)
    if backend == "auto":
        from .choose import choose_backend

        return choose_backend(
            model, precision=precision, calibration=calibration, int8_plan=int8_plan
        )
    check_combination(backend, resolved)
    if backend == "torch":
        return optimize_torch(model, precision=resolved, device=device)
    return build_engine(
        model, backend=backend, precision=resolved, calibration=calibration, int8_plan=int8_plan
    )


def check_combination(backend: str, precision: str) -> None:
    if precision not in BACKEND_PRECISIONS[backend]:
        runs = [b for b, ps in BACKEND_PRECISIONS.items() if precision in ps]
        raise ArgumentError(
            "precision",
            f"{precision} does not run on backend {backend} (it has "
            f"{', '.join(BACKEND_PRECISIONS[backend])}); {precision} runs on {' or '.join(runs)}",
        )


def build_engine(
    model: nn.Module, *, backend: str, precision: str, calibration: Iterable[Tensor] | None,
    int8_plan: str = DEFAULT_INT8_PLAN,
) -> EngineModel:  # fmt: skip
    """Exports ``model`` once, quantizes it for int8 (``int8_plan``: which convolutions stay
    fp32, :mod:`.quantize`), and loads it in the engine."""
    engine = require_engine(backend)
    arrays = calibration_arrays(calibration) if precision == "int8" else None
    kept = float_plan(model, arrays, int8_plan) if arrays is not None else None
    plan = int8_plan if arrays is not None else None
    with tempfile.TemporaryDirectory(prefix="segnet-engine-") as folder:
        path = export_onnx_any_size(
            model, Path(folder) / "model.onnx", in_channels=in_channels(model)
        )
        if backend == "onnxruntime":
            if arrays is not None:
                path = quantize_onnx(model, path, Path(folder) / "int8.onnx", arrays, kept)
            graph = path.read_bytes()  # the folder goes; replicas load the graph from memory
            return EngineModel(lambda: onnxruntime_runner(engine, graph), backend=backend,
                               precision=precision, int8_plan=plan)  # fmt: skip
        graph = openvino_core(engine).read_model(str(path))
        if arrays is not None:
            graph = quantize_openvino(graph, arrays, kept)
        shapes = OpenVinoGraph(engine, graph, precision)
        runner = functools.partial(openvino_runner, shapes)
        return EngineModel(runner, backend=backend, precision=precision, int8_plan=plan)


def in_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def onnxruntime_runner(ort: ModuleType, graph: bytes) -> Runner:
    """A session of its own on ``graph`` (a serialized ONNX model), on torch's thread count."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    run_options = ort.RunOptions()
    # Return the arena's memory after each run, as torch frees its activations: without it
    # the arena keeps the largest run's buffers for the life of the session.
    run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return lambda images: session.run(["logits"], {"images": images}, run_options)[0]


@functools.cache
def openvino_core(ov: ModuleType) -> object:
    """One OpenVINO Core per process, as OpenVINO's docs advise: the Core owns the device
    plugins, and a second Core in one process has crashed it (ultralytics/ultralytics#25864)."""
    return ov.Core()


STATIC_SHAPES = 4  # input shapes compiled static (the first seen); later ones share a dynamic one


class OpenVinoGraph:
    """An OpenVINO model (fp32, or int8 from NNCF), compiled on torch's thread count; int8
    models run their float parts in f32 too. Thread-safe: serve's replicas share it.

    The first :data:`STATIC_SHAPES` input shapes it meets get a model compiled for that static
    shape (SegNet int8, 360x480: 189 MB at the first forward against 285 MB, ~13% faster, same
    labels); each costs its own memory (~150 MB more per SegNet int8 shape near 360x480), so
    any further shape runs on one dynamic compile instead of compiling again: a deployment
    sees one or a few sizes, a folder of mixed sizes never recompiles or grows without bound.
    """

    def __init__(self, ov: ModuleType, graph: object, precision: str) -> None:
        self.core, self.graph = openvino_core(ov), graph
        self.config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        self.static: dict[tuple[int, ...], object] = {}
        self.dynamic: object | None = None
        self.lock = threading.Lock()

    def compiled_for(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...] | None, object]:
        """(``shape``, its static compile) or (None, the dynamic compile)."""
        with self.lock:
            if shape not in self.static and len(self.static) < STATIC_SHAPES:
                static = self.graph.clone()
                static.reshape(list(shape))  # (N, C, H, W) fixed
                self.static[shape] = self.core.compile_model(static, "CPU", self.config)
            if shape in self.static:
                return shape, self.static[shape]
            if self.dynamic is None:
                self.dynamic = self.core.compile_model(self.graph, "CPU", self.config)
            return None, self.dynamic


def openvino_runner(graph: OpenVinoGraph) -> Runner:
    """Infer requests of its own on ``graph``: one per static shape, one for the dynamic
    compile; each allocates its buffers at its first call and keeps them."""
    requests: dict[tuple[int, ...] | None, object] = {}

    def run(images: np.ndarray) -> np.ndarray:
        key, compiled = graph.compiled_for(tuple(images.shape))
        if key not in requests:
            requests[key] = compiled.create_infer_request()
        return np.array(requests[key].infer({0: images})[0])  # a copy: the buffer is reused

    return run
