"""Speed and memory against the plain-PyTorch SegNet (``segnet benchmark``; paper Table 6):
``reference`` (the plain twin), ``memory`` (peak-memory probes), ``measure`` (one model's
runs), ``report`` (environment and table), ``run`` (the command's entry point)."""

from .measure import Measurement, benchmark_model
from .reference import ReferenceSegNet, reference_model, reference_names
from .report import environment, format_table
from .run import run_benchmark

__all__ = [
    "Measurement",
    "ReferenceSegNet",
    "benchmark_model",
    "environment",
    "format_table",
    "reference_model",
    "reference_names",
    "run_benchmark",
]
