"""Device and numeric precision: where a model runs and in which dtype.

``precision="auto"`` is fp16 autocast on CUDA; on CPU it is fp32 for inference, and for training
bf16 autocast on CPUs with AMX, fp32 on others. Measured (``benchmarks/README.md``): on an AVX2
EPYC (emulated bf16) convolutions were ~100x slower than fp32, and on an AVX512-BF16 Xeon without
AMX a 3x3 convolution was 1.2-2x slower and SegNet inference 0.65-0.82x the fp32 speed; on a Xeon
with AMX a SegNet training step ran 3.4x our fp32 step in bf16 (4.2x the plain PyTorch SegNet),
and the CPU recipe's held-out twin trained 6x faster than in fp32 on a Zen 4 to the same
figures (mIoU 31.8 against 31.9 on the held-out drive; docs/results.md). bf16 inference is
opt-in even there (``--precision bf16``: 3.6x fp32 with torch, 6.3x with OpenVINO) because it
moves some labels off the fp32 ones; ``backend="auto"`` tries it on AMX CPUs and keeps it only
where it agrees (``choose.py``). All threads are used on CPU (PyTorch's default is the physical
core count).
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

from ..errors import ArgumentError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # training and the torch backend
# Inference adds int8: statically quantized, calibrated, on the onnxruntime/openvino backends.
INFERENCE_PRECISIONS = PRECISIONS + ("int8",)
# int8's plans: which convolutions stay fp32 (quantize.py): the speed-first default, or more of
# the fp32 labels kept for some speed.
INT8_PLANS = ("fast", "accurate")
DEFAULT_INT8_PLAN = "fast"


def check_int8_plan(plan: str) -> str:
    if plan not in INT8_PLANS:
        raise ArgumentError("int8_plan", f"must be one of {', '.join(INT8_PLANS)}, got {plan!r}")
    return plan


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ArgumentError("device", f"{name}: no CUDA GPU is available here; use `device` cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ArgumentError("device", f"{name}: not a device (use cpu, cuda or cuda:N)") from None


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_vnni() -> bool:
    """int8 dot products with 32-bit accumulation (AVX512-VNNI or AVX-VNNI), from /proc/cpuinfo."""
    try:
        flags = next(
            (
                line
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("flags")
            ),
            "",
        )
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni"))


def cpu_has_native_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_has_amx() -> bool:
    """Intel AMX tiles (Sapphire Rapids and later), where bf16 matrix work runs ~4x fp32 here."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private; absent in old torch
    return bool(probe and probe())


def cpu_has_avx512() -> bool:
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_precision(precision: str, device: torch.device, *, training: bool = False) -> str:
    if precision not in INFERENCE_PRECISIONS:
        raise ArgumentError(
            "precision", f"must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}"
        )
    if precision == "int8" and device.type != "cpu":
        raise ArgumentError(
            "precision", "int8 runs on CPU (onnxruntime, openvino); on CUDA use fp16 or bf16"
        )
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        # measured (module docstring): bf16 pays on CPU only with AMX, and labels are not
        # changed by default at inference
        return "bf16" if training and cpu_has_amx() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ArgumentError("precision", "fp16 needs a GPU; on CPU use bf16 or fp32")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for a resolved precision (no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def resolve_channels_last(setting: bool | None, device: torch.device) -> bool:
    """Training memory layout; ``None`` (auto) is channels_last on CUDA and on AVX-512 CPUs, NCHW
    on other CPUs.

    Measured on two 2-core CPUs, fp32, SegNet-Basic training step at 224x288: on an AVX2 EPYC
    (batch 2) 1.84 s in NCHW and 2.16 s in channels_last (oneDNN's channels_last convolution
    backward was ~1.35x slower there); on an AVX-512 Xeon (batch 4) 2.22 s in channels_last and
    2.4-3.3 s in NCHW (SegNet at 360x480, batch 1: ~3.1 s against 3.4-5.9 s). Inference always
    runs channels_last (``optimize_for_inference``).
    """
    if setting is not None:
        return setting
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_avx512())
