"""Device and numeric precision: where a model runs and in which dtype.

``precision="auto"`` picks bf16 autocast on a CPU with native bf16 (AVX512-BF16/AMX), fp32 on
other CPUs (emulated bf16 convolutions are ~100x slower there, measured), and fp16 autocast on
CUDA. All threads are used on CPU (PyTorch's default is the physical core count).
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import SegNetError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SegNetError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SegNetError(f"--device {name}: not a device (use cpu, cuda or cuda:N)") from None


def cpu_has_native_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise SegNetError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise SegNetError("--precision fp16 needs a GPU; on CPU use bf16 or fp32")
    return precision


def autocast(device: torch.device, precision: str):
    """Autocast context for a resolved precision (no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def resolve_channels_last(setting: bool | None, device: torch.device) -> bool:
    """Training memory layout; ``None`` (auto) is channels_last on CUDA and NCHW on CPU.

    On the 2-core AVX2 CPU this project is developed on, a SegNet-Basic training step (224x288,
    batch 2) took 1.84 s in NCHW and 2.16 s in channels_last: oneDNN's channels_last convolution
    backward was ~1.35x slower there, while the forward gained little. Inference always runs
    channels_last (``optimize_for_inference``), where it is the faster layout.
    """
    return device.type == "cuda" if setting is None else setting
