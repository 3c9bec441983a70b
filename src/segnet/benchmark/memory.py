"""Peak memory of one forward or one training step, and the pooling indices autograd keeps.

On CPU the figure is the growth of the process's resident set (its peak counter reset through
``/proc/self/clear_refs``); on CUDA the allocator's peak. Decimal megabytes, as the paper
(SegNet: 117 MB of fp32 weights).
"""

from __future__ import annotations

import ctypes
import gc
import os

import torch
from torch import nn

MB = 1e6


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
