"""Speed and memory against the plain-PyTorch SegNet (``segnet benchmark``; paper Table 6)."""

from .reference import REFERENCE_SPECS, ReferenceSegNet, reference_model
from .run import format_table, parse_size, run_benchmark

__all__ = [
    "REFERENCE_SPECS",
    "ReferenceSegNet",
    "format_table",
    "parse_size",
    "reference_model",
    "run_benchmark",
]
