"""``backend="auto"``: the fastest installed backend for this model on this machine, measured
once and cached, and never one whose labels disagree with eager fp32.

* Candidates: every installed backend in fp32 (``precision`` "auto" or "fp32"); for "auto" on
  a CPU with AMX also bf16 (torch, OpenVINO: 4-7x fp32 there, measured) and, when
  ``calibration`` images are given, int8 on every installed engine ("auto" or "int8"); an
  explicit "bf16" tries the backends that run it.
* Ranking: median time of 3 forwards per candidate, the candidates alternating (a machine busy
  with other work slows all alike), at the size of the first calibration batch, else
  1x3x360x480. Cached in ``<user cache>/segnet/backends.json`` under the model (class,
  parameter count), the input shape, the candidates, the CPU model, the thread count, the
  torch and engine versions and, with int8 candidates, the int8 plan: a later call with the
  same key builds only the winner. int8 candidates keep ``int8_plan``'s convolutions fp32.
* Agreement: the winner's labels are compared with eager fp32 on the check images (the last
  calibration batches, else one random input); below ``AGREEMENT_FLOOR`` of the pixels the next
  in the ranking is tried, and torch fp32 is the last resort.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ArgumentError
from ..files import write_json
from ..metrics import pixel_agreement
from .backends import BACKEND_PRECISIONS, ENGINES, build_engine, installed_backends
from .optimize import OptimizedModel, optimize_torch
from .quantize import calibration_arrays
from .runtime import DEFAULT_INT8_PLAN, cpu_has_amx, cpu_name

AGREEMENT_FLOOR = 0.995  # share of pixels labelled as eager fp32 labels them
TIMING_SIZE = (360, 480)  # CamVid; timing size when no calibration images are given
CACHE_FILE = "backends.json"
Candidate = tuple[str, str]  # (backend, precision)


def cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "segnet" / CACHE_FILE


def candidates(precision: str, *, calibrated: bool) -> list[Candidate]:
    auto = ["fp32"] + (["bf16"] if cpu_has_amx() else []) + (["int8"] if calibrated else [])
    wanted = {"auto": auto}.get(precision, [precision])
    found = [(b, p) for p in wanted for b in installed_backends() if p in BACKEND_PRECISIONS[b]]
    if not found:
        raise ArgumentError("precision", f"{precision}: no installed backend runs it")
    return found


def choose_backend(
    model: nn.Module, *, precision: str, calibration: Iterable[Tensor] | None,
    int8_plan: str = DEFAULT_INT8_PLAN,
) -> OptimizedModel:  # fmt: skip
    """The fastest agreeing candidate (module docstring); ``chosen`` on the result says which."""
    arrays = calibration_arrays(calibration) if calibration is not None else None
    if precision == "int8" and arrays is None:
        calibration_arrays(None)  # the one-line error
    options = candidates(precision, calibrated=arrays is not None)
    checks = [torch.from_numpy(a) for a in arrays[-4:]] if arrays else [_random_images(model)]
    key = cache_key(model, tuple(checks[0].shape), options, int8_plan)
    cached = read_cache().get(key)
    built: dict[Candidate, OptimizedModel] = {}
    if cached is None:
        built = {c: _build(model, c, arrays, int8_plan) for c in options}
        times = time_candidates(built, checks[0])
        ranking = sorted(options, key=lambda c: times[c])
        _write_cache(key, [[b, p, round(times[(b, p)], 1)] for b, p in ranking])
    else:
        ranking = [(b, p) for b, p, _ in cached["ranking"] if (b, p) in options]
    for candidate in ranking:
        optimized = built.pop(candidate, None) or _build(model, candidate, arrays, int8_plan)
        if agreement(model, optimized, checks) >= AGREEMENT_FLOOR:
            optimized.chosen = (
                f"{candidate[0]} {candidate[1]} (auto, ranking cached in {cache_path()})"
            )
            return optimized
    fallback = optimize_torch(model, precision="fp32", device=torch.device("cpu"))
    fallback.chosen = "torch fp32 (auto: no faster backend agreed with eager fp32)"
    return fallback


def _build(
    model: nn.Module, candidate: Candidate, arrays: list | None, int8_plan: str
) -> OptimizedModel:
    backend, precision = candidate
    if backend == "torch":
        return optimize_torch(model, precision=precision, device=torch.device("cpu"))
    return build_engine(
        model, backend=backend, precision=precision, calibration=arrays, int8_plan=int8_plan
    )


def _random_images(model: nn.Module) -> Tensor:
    channels = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
    return torch.randn(1, channels, *TIMING_SIZE, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def time_candidates(
    built: dict[Candidate, OptimizedModel], images: Tensor, repeats: int = 3
) -> dict[Candidate, float]:
    """Median ms per forward, the candidates alternating within each repeat, after a warm-up."""
    times: dict[Candidate, list[float]] = {c: [] for c in built}
    for optimized in built.values():
        optimized(images)
    for _ in range(repeats):
        for candidate, optimized in built.items():
            start = time.perf_counter()
            optimized(images)
            times[candidate].append((time.perf_counter() - start) * 1000)
    return {c: statistics.median(t) for c, t in times.items()}


@torch.no_grad()
def agreement(model: nn.Module, optimized: OptimizedModel, images: list[Tensor]) -> float:
    """Share of pixels of ``images`` that ``optimized`` labels as eager fp32 ``model`` does."""
    eager = model.float().eval()
    same = total = 0.0
    for x in images:
        expected = eager(x).argmax(1)
        same += pixel_agreement(optimized(x).argmax(1).cpu(), expected.cpu()) * expected.numel()
        total += expected.numel()
    return same / total


def cache_key(
    model: nn.Module, shape: tuple[int, ...], options: list[Candidate], int8_plan: str
) -> str:
    engines = {}
    for backend in sorted({b for b, _ in options} - {"torch"}):
        try:
            engines[backend] = version(ENGINES[backend][0])
        except PackageNotFoundError:
            engines[backend] = "?"
    return json.dumps([
        type(model).__name__, sum(p.numel() for p in model.parameters()), list(shape),
        [list(c) for c in options], cpu_name(), torch.get_num_threads(), torch.__version__, engines,
        *([int8_plan] if any(p == "int8" for _, p in options) else []),
    ])  # fmt: skip


def read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):  # none yet, or unreadable: measure again
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, ranking: list) -> None:
    data = read_cache()
    data[key] = {"ranking": ranking, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        write_json(cache_path(), data)
    except OSError:  # a read-only home: the choice still stands, it is only not remembered
        pass
