"""``segnet benchmark``: our models against the plain-PyTorch reference, in the spirit of the
paper's Table 6 (parameters, model size, forward/backward time, inference/training memory).
What each column means: :mod:`.measure`; the table: :mod:`.report`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from ..data.base import SegmentationDataset
from ..deploy.runtime import DEFAULT_INT8_PLAN, check_int8_plan, resolve_device
from ..errors import ArgumentError
from ..models import model_entry
from .measure import benchmark_model
from .report import environment
from .rows import row_plan


def run_benchmark(
    models: list[str], *, size: tuple[int, int], batch: int = 1, device: str = "cpu",
    repeats: int = 3, training: bool = True, compile: bool = False,
    checkpoint: str | None = None, weights: str | None = None,
    images: Sequence[Path] | None = None, precisions: Sequence[str] = ("auto",),
    backends: Sequence[str] = ("torch",), calibration: list | None = None,
    dataset: SegmentationDataset | None = None, progress: Callable[[str], None] | None = None,
    int8_plan: str = DEFAULT_INT8_PLAN,
) -> dict:  # fmt: skip
    """Benchmarks each model; returns ``{"environment": ..., "results": [...]}`` (JSON-ready).

    One row per backend x precision (:mod:`.rows`; int8 needs ``calibration`` images and keeps
    ``int8_plan``'s convolutions fp32), quality per row on ``images`` or over the labelled
    ``dataset``."""
    if batch < 1:
        raise ArgumentError("batch", f"must be >= 1, got {batch}")
    if repeats < 1:
        raise ArgumentError("repeats", f"must be >= 1, got {repeats}")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ArgumentError("device", f"must be cpu or cuda, got {device!r}")
    resolved = resolve_device(device)
    row_plan(backends, precisions, resolved)  # bad combinations fail before any measurement
    check_int8_plan(int8_plan)
    if checkpoint is not None:
        models = ["checkpoint"]  # the name comes from the checkpoint
    else:
        for name in models:
            model_entry(name)  # unknown names fail before any measurement
    results = []
    for name in models:
        if progress:
            progress(f"benchmarking {name} at {size[0]}x{size[1]}, batch {batch} ...")
        result = benchmark_model(
            name, size=size, batch=batch, device=resolved, repeats=repeats, training=training,
            compile=compile, checkpoint=checkpoint, weights=weights, images=images,
            precisions=precisions, backends=backends, calibration=calibration, dataset=dataset,
            int8_plan=int8_plan,
        )  # fmt: skip
        result["rows"] = [asdict(row) for row in result["rows"]]
        results.append(result)
    return {"environment": environment(resolved, size, batch, repeats, compile), "results": results}
