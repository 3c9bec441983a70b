"""``segnet benchmark``: our models against the plain-PyTorch reference, in the spirit of the
paper's Table 6 (parameters, model size, forward/backward time, inference/training memory).

Per model and implementation (``reference`` = :mod:`.reference`, ``ours`` = the registered model,
made inference-ready by :func:`segnet.optimize_for_inference` for the inference columns and in
train mode, in the memory layout ``segnet train`` uses by default (``resolve_channels_last``), for the
training columns):

* ``forward_ms`` -- one inference forward of ``batch`` images (median over ``repeats``);
* ``train_forward_ms`` / ``backward_ms`` -- forward and backward of one training step (cross
  entropy); ``train_images_per_s`` = batch / (forward + backward);
* ``inference_mb`` / ``training_mb`` -- peak memory growth during one forward / one training
  step, measured in a pass of its own: process RSS on CPU (peak counter reset through
  ``/proc/self/clear_refs``; see :class:`PeakMemory`), allocator peak on CUDA;
* ``indices_mb`` -- pooling indices kept for the backward pass of one training step.

Ours and the reference alternate within each repeat, so a machine busy with other work slows
both alike; the ratios are the figures to read.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..deploy.optimize import optimize_for_inference
from ..deploy.runtime import (
    cpu_has_native_bf16,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)
from ..engine.config import TrainConfig
from ..errors import SegNetError
from ..models import build_model
from .reference import REFERENCE_SPECS, reference_model

IMPLEMENTATIONS = ("reference", "ours")
MB = 1e6  # decimal megabytes, as the paper (SegNet: 117 MB of fp32 weights)


@dataclass
class Measurement:
    """One model, one implementation; None where not measured (no reference, no memory probe)."""

    model: str
    implementation: str
    parameters: int
    size_mb: float
    forward_ms: float
    images_per_s: float
    train_forward_ms: float | None = None
    backward_ms: float | None = None
    train_images_per_s: float | None = None
    inference_mb: float | None = None
    training_mb: float | None = None
    indices_mb: float | None = None


def parse_size(text: str) -> tuple[int, int]:
    """``"360x480"`` -> (360, 480); anything else is a :class:`SegNetError` naming ``--size``."""
    parts = text.lower().split("x")
    if (
        len(parts) != 2
        or not all(p.strip().isdigit() for p in parts)
        or min(int(p) for p in parts) < 1
    ):
        raise SegNetError(f"--size must be HxW with positive integers, e.g. 360x480; got {text!r}")
    return int(parts[0]), int(parts[1])


# -- memory probes -------------------------------------------------------------------------


class PeakMemory:
    """Peak memory growth (MB) while the block runs: RSS on CPU, the allocator on CUDA.

    On CPU (glibc) every allocation of 64 KiB or more is made its own mapping for the duration,
    so that freed memory goes back to the OS at once and RSS follows the live tensors: without
    this, heap memory left free by an earlier run hides part of the growth, and by how much
    depends on what ran before.
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.mb = device, None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            _mmap_threshold(64 * 1024)
            self._base = _rss_bytes()
            self._reset = self._base is not None and _reset_peak_rss()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / MB
            return
        if self._reset:
            self.mb = max(0.0, (_peak_rss_bytes() - self._base) / MB)
        _mmap_threshold(32 * 2**20)  # glibc's usual ceiling for its dynamic threshold


def _mmap_threshold(nbytes: int) -> None:
    """glibc ``mallopt(M_MMAP_THRESHOLD, nbytes)``, then ``malloc_trim``; no-op elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # not Linux
        return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set size
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("VmHWM missing from /proc/self/status")


def saved_indices_mb(model: nn.Module, images: torch.Tensor) -> float:
    """MB of integer tensors (pooling indices) autograd keeps for one training forward."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not t.is_floating_point() and t.dtype != torch.bool:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(images)
    return sum(seen.values()) / MB


# -- timing --------------------------------------------------------------------------------


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000


class _Runner:
    """The inference and training closures of one implementation, with their measurements."""

    def __init__(
        self, name: str, infer: nn.Module, train: nn.Module, images, masks, device, precision
    ) -> None:
        self.name, self.infer, self.train, self.device = name, infer, train, device
        self.images, self.masks, self.precision = images, masks, precision
        self.times: dict[str, list[float]] = {"forward": [], "train_forward": [], "backward": []}
        self.memory: dict[str, list[float]] = {"inference": [], "training": []}

    def infer_once(self, *, memory: bool = False) -> None:
        with torch.no_grad():
            if memory:
                with PeakMemory(self.device) as peak:
                    self.infer(self.images)
                if peak.mb is not None:
                    self.memory["inference"].append(peak.mb)
            else:
                self.times["forward"].append(_timed(lambda: self.infer(self.images), self.device))

    def train_once(self, *, memory: bool = False) -> None:
        self.train.zero_grad(set_to_none=True)
        holder = {}

        def forward() -> None:
            with _autocast(self.device, self.precision):
                holder["loss"] = F.cross_entropy(self.train(self.images).float(), self.masks)

        if memory:
            with PeakMemory(self.device) as peak:
                forward()
                holder.pop("loss").backward()
            if peak.mb is not None:
                self.memory["training"].append(peak.mb)
        else:
            self.times["train_forward"].append(_timed(forward, self.device))
            self.times["backward"].append(
                _timed(lambda: holder.pop("loss").backward(), self.device)
            )


def _autocast(device: torch.device, precision: str):
    from ..deploy.runtime import autocast

    return autocast(device, precision)


# -- one model -----------------------------------------------------------------------------


def _load(
    name: str, num_classes: int, checkpoint: str | None, weights: str | None
) -> tuple[str, nn.Module, int, int]:
    """(name, eval-mode model, num_classes, in_channels): a fresh model, a checkpoint's or shipped weights."""
    if checkpoint is not None:
        from ..engine.checkpoint import load_model

        model, config, _ = load_model(checkpoint)
        return config.name, model, config.num_classes, config.in_channels
    if weights is not None:
        from ..engine.weights import load_pretrained_with_config

        model, config = load_pretrained_with_config(name, weights)
        return name, model, config.num_classes, config.in_channels
    return name, build_model(name, num_classes=num_classes).eval(), num_classes, 3


def image_agreement(
    model: nn.Module, optimized: nn.Module, paths: list, device: torch.device
) -> float:
    """Fraction of pixels of real images given the same class by ``optimized`` as by the eager
    fp32 ``model`` (ImageNet-normalised RGB, each image at its own size)."""
    from ..data.base import normalize
    from ..data.io import read_image

    same = total = 0
    with torch.no_grad():
        for path in paths:
            x = (
                normalize(torch.from_numpy(read_image(path).copy())).unsqueeze(0).to(device)
            )  # (1, 3, H, W)
            eager = model.float().eval()(x).argmax(1)
            same += (optimized(x).argmax(1) == eager).sum().item()
            total += eager.numel()
    return same / total


def benchmark_model(
    name: str,
    *,
    size: tuple[int, int],
    batch: int = 1,
    device: torch.device,
    repeats: int = 3,
    training: bool = True,
    compile: bool = False,
    num_classes: int = 11,
    checkpoint: str | None = None,
    weights: str | None = None,
    images: list | None = None,
    precision: str = "auto",
) -> dict:
    """Measures ``name`` (or the checkpoint's model) and, where one exists, its reference.

    ``agreement`` compares the optimized model's argmax with the eager fp32 model's, on the real
    ``images`` when given (what matters with trained weights), else on the random benchmark input.
    """
    name, model, num_classes, in_channels = _load(name, num_classes, checkpoint, weights)
    model = model.to(device)
    precision = resolve_precision(
        precision, device
    )  # ours, inference and training; the reference stays fp32
    generator = torch.Generator().manual_seed(0)
    images_batch = torch.randn(batch, in_channels, *size, generator=generator).to(device)
    masks = torch.randint(0, num_classes, (batch, *size), generator=generator).to(device)

    train_layout = resolve_channels_last(TrainConfig.channels_last, device)  # as `segnet train`
    train_model = copy_for_training(model, channels_last=train_layout)
    layout = torch.channels_last if train_layout else torch.contiguous_format
    optimized = optimize_for_inference(model, device=device, precision=precision, compile=compile)
    ours = _Runner("ours", optimized, train_model, images_batch.contiguous(memory_format=layout), masks, device,
                   precision)  # fmt: skip
    runners = [ours]
    if name in REFERENCE_SPECS:
        reference = reference_model(name, num_classes=num_classes, in_channels=in_channels).to(
            device
        )
        reference.load_state_dict(model.state_dict())
        runners.insert(0, _Runner("reference", reference.eval(), copy_for_training(reference, channels_last=False),
                                  images_batch, masks, device, "fp32"))  # fmt: skip

    # Memory in passes of its own (the probe changes allocator settings), inference before any
    # training step: a training step first left its allocations behind and moved the inference
    # figure by up to 90 MB from run to run.
    for runner in runners:  # warm-up: oneDNN primitives, allocator, compilation
        runner.infer_once()
    for runner in runners:
        runner.infer_once(memory=True)
    for runner in runners:
        if training:
            runner.train_once()
        runner.times = {k: [] for k in runner.times}
    for _ in range(repeats):  # alternating, so that other work on the machine slows both alike
        for runner in runners:
            runner.infer_once()
            if training:
                runner.train_once()
    for runner in runners:
        if training:
            runner.train_once(memory=True)

    rows = [_summarize(name, r, batch, training) for r in runners]
    if images:
        agreement = image_agreement(model, ours.infer, images, device)
    else:
        with torch.no_grad():
            eager = model.eval()(images_batch).argmax(1)
            agreement = (ours.infer(images_batch).argmax(1) == eager).float().mean().item()
    return {"model": name, "precision": precision, "agreement": agreement,
            "agreement_on": f"{len(images)} images" if images else "random input", "rows": rows}  # fmt: skip


def copy_for_training(model: nn.Module, *, channels_last: bool) -> nn.Module:
    import copy

    trainable = copy.deepcopy(model).train()
    trainable.requires_grad_(True)
    return trainable.to(memory_format=torch.channels_last) if channels_last else trainable


def _summarize(name: str, runner: _Runner, batch: int, training: bool) -> Measurement:
    median = lambda values: statistics.median(values) if values else None  # noqa: E731
    params = sum(p.numel() for p in runner.train.parameters())
    forward = median(runner.times["forward"])
    row = Measurement(
        model=name, implementation=runner.name, parameters=params, size_mb=params * 4 / MB,
        forward_ms=forward, images_per_s=1000 * batch / forward,
        inference_mb=median(runner.memory["inference"]),
    )  # fmt: skip
    if training:
        row.train_forward_ms = median(runner.times["train_forward"])
        row.backward_ms = median(runner.times["backward"])
        row.train_images_per_s = 1000 * batch / (row.train_forward_ms + row.backward_ms)
        row.training_mb = median(runner.memory["training"])
        row.indices_mb = saved_indices_mb(runner.train, runner.images[:1]) * batch
    return row


# -- the command ---------------------------------------------------------------------------


def run_benchmark(
    models: list[str],
    *,
    size: tuple[int, int],
    batch: int = 1,
    device: str = "cpu",
    repeats: int = 3,
    training: bool = True,
    compile: bool = False,
    checkpoint: str | None = None,
    weights: str | None = None,
    images: list | None = None,
    precision: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Benchmarks each model; returns ``{"environment": ..., "results": [...]}`` (JSON-ready)."""
    if batch < 1:
        raise SegNetError(f"--batch must be >= 1, got {batch}")
    if repeats < 1:
        raise SegNetError(f"--repeats must be >= 1, got {repeats}")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise SegNetError(f"--device must be cpu or cuda, got {device!r}")
    resolved = resolve_device(device)
    if checkpoint is not None:
        models = ["checkpoint"]  # the name comes from the checkpoint
    else:
        for name in models:
            build_model(name, num_classes=2)  # unknown names fail before any measurement
    results = []
    for name in models:
        if progress:
            progress(f"benchmarking {name} at {size[0]}x{size[1]}, batch {batch} ...")
        result = benchmark_model(name, size=size, batch=batch, device=resolved, repeats=repeats,
                                 training=training, compile=compile, checkpoint=checkpoint, weights=weights,
                                 images=images, precision=precision)  # fmt: skip
        result["rows"] = [asdict(row) for row in result["rows"]]
        results.append(result)
    return {"environment": environment(resolved, size, batch, repeats, compile), "results": results}


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, size, batch: int, repeats: int, compile: bool) -> dict:
    env = {
        "device": device.type, "size": list(size), "batch": batch, "repeats": repeats, "compile": compile,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_name(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "thp_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
    }  # fmt: skip
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


# -- the table -----------------------------------------------------------------------------

_COLUMNS = (  # (key, header, format); times and memory: lower is better, images/s: higher
    ("parameters", "params", "{:,.0f}"), ("size_mb", "size MB", "{:.1f}"),
    ("forward_ms", "fwd ms", "{:.1f}"), ("images_per_s", "img/s", "{:.2f}"),
    ("train_forward_ms", "train fwd ms", "{:.1f}"), ("backward_ms", "bwd ms", "{:.1f}"),
    ("train_images_per_s", "train img/s", "{:.2f}"), ("inference_mb", "infer MB", "{:.1f}"),
    ("training_mb", "train MB", "{:.1f}"), ("indices_mb", "indices MB", "{:.2f}"),
)  # fmt: skip
_HIGHER_IS_BETTER = {"images_per_s", "train_images_per_s"}


def format_table(report: dict) -> str:
    """Table 6-style text: reference and ours per model, then how many times better ours is."""
    env = report["environment"]
    lines = [
        f"{env['size'][0]}x{env['size'][1]}, batch {env['batch']}, {env['device']} ({env['cpu']}, "
        f"{env['threads']} threads, native bf16: {env['cpu_native_bf16']}), torch {env['torch']}, "
        f"median of {env['repeats']} repeat(s); sizes and memory in MB (1e6 bytes)",
    ]
    header = ["model", "impl"] + [h for _, h, _ in _COLUMNS]
    table = [header]
    for result in report["results"]:
        rows = {row["implementation"]: row for row in result["rows"]}
        for impl in IMPLEMENTATIONS:
            if impl in rows:
                row = rows[impl]
                table.append(
                    [result["model"], impl] + [_cell(fmt, row[key]) for key, _, fmt in _COLUMNS]
                )
        if "reference" in rows:
            table.append([result["model"], "gain"] + [_gain(key, rows) for key, _, _ in _COLUMNS])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines += [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in table
    ]
    lines.append(
        "gain = how many times better ours is (time, memory: reference / ours; img/s: ours / reference)"
    )
    for result in report["results"]:
        lines.append(f"{result['model']}: optimized ({result['precision']}) vs fp32 eager: "
                     f"{100 * result['agreement']:.3f}% of pixels with the same class "
                     f"({result.get('agreement_on', 'random input')})")  # fmt: skip
    return "\n".join(lines)


def _cell(fmt: str, value) -> str:
    return "-" if value is None else fmt.format(value)


def _gain(key: str, rows: dict) -> str:
    ours, ref = rows["ours"][key], rows["reference"][key]
    if key in ("parameters", "size_mb") or ours is None or ref is None or min(ours, ref) <= 0:
        return ""
    return f"{(ours / ref if key in _HIGHER_IS_BETTER else ref / ours):.2f}x"
