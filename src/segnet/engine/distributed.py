"""Several processes, one run: ``torchrun`` launches them, DistributedDataParallel trains.

``torchrun --nproc_per_node N -m segnet train ...`` starts N processes per machine and gives
each ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address. :func:`start` joins
them in one process group: gloo carries CPU tensors and, when CUDA is present, NCCL carries
CUDA tensors (``cpu:gloo,cuda:nccl``), so training on GPUs reduces gradients over NCCL while
the small CPU tensors (confusion matrices, agreed errors) go over gloo. A process training on
CUDA uses ``cuda:LOCAL_RANK`` (:meth:`Distributed.device`). Without torchrun (``WORLD_SIZE``
unset or 1) nothing here communicates: one process, as before.

Who does what: every process trains on its shard of each epoch (``DistributedSampler``,
seeded by (seed, epoch)) and validates its shard of the val split; the confusion matrix and
the BF sums are then added over the processes, so the metrics are those of one process
evaluating the same weights. Only rank 0 writes (run folder, logs, checkpoints, TensorBoard).

Faults end in one line, never a hang:

* setup (config, run folder, data, model) runs in every process, and :meth:`Distributed.agree`
  stops every process if any one failed; rank 0 prints that failure (``rank R: ...``), the
  others exit quietly (:class:`Stopped`).
* later, a process that fails prints its own line and exits; torchrun then stops the other
  processes of its machine, and processes on other machines see the connection close (gloo)
  or time out (every collective waits at most ``timeout_s``; NCCL's watchdog aborts then).
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..deploy.runtime import resolve_device
from ..errors import ArgumentError, SegNetError

T = TypeVar("T")

# How long a collective waits for the slowest process. Rank 0 writes checkpoints while the
# others wait at the next step, and validation shards differ by an image: minutes, not hours.
DEFAULT_TIMEOUT_S = 600.0


class Stopped(SegNetError):
    """An error every process knows of (a failure during setup, a diverged loss): rank 0
    prints it, this process stays quiet. Errors rank 0 raises for all carry ``agreed = True``,
    so :func:`session` does not prefix them with the rank."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: rank among ``world_size`` processes, GPU ``local_rank``
    on its machine. The default is one process alone."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes."""
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """Where this process trains: ``name`` as :func:`resolve_device` reads it, and on CUDA
        under torchrun the GPU of this process's local rank (``torch.cuda.set_device``)."""
        device = resolve_device(name)
        if not self.enabled or device.type != "cuda":
            return device
        if device.index is not None:
            raise ArgumentError(
                "device", f"{name}: under torchrun each process takes cuda:LOCAL_RANK; give cuda"
            )
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise ArgumentError(
                "device", f"cuda: this machine has {count} GPUs, so start at most {count} "
                f"processes on it (torchrun --nproc_per_node), not {self.local_rank + 1} or more",
            )  # fmt: skip
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def backend(self, device: torch.device) -> str | None:
        """The backend that carries this run's gradients (None: one process)."""
        if not self.enabled:
            return None
        return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"

    def shard(self, size: int) -> range:
        """This process's indices of ``size`` items for evaluation: every ``world_size``-th,
        none repeated (the shards' sums are the whole split's)."""
        return range(self.rank, size, self.world_size)

    def shard_size(self, size: int) -> int:
        """Training samples per process and epoch (``DistributedSampler`` pads to equal shards)."""
        return math.ceil(size / self.world_size)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` added over all processes (a new tensor; the same one in one process)."""
        if not self.enabled:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def max(self, value: float) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` in every process (any picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, step: Callable[[], T]) -> T:
        """Runs ``step`` here; if it raised :class:`SegNetError` in any process, every process
        raises: rank 0 the failure (with its rank when another process failed), the others
        :class:`Stopped`. Every process calls ``agree`` at the same points of the setup."""
        try:
            result, failure = step(), None
        except SegNetError as error:
            if not self.enabled:
                raise
            result, failure = None, error
        if not self.enabled:
            return result
        messages: list[str | None] = [None] * self.world_size
        dist.all_gather_object(messages, None if failure is None else failure.message)
        failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
        if not failed:
            return result
        if not self.is_main:
            raise Stopped(f"rank {failed[0][0]} failed: {failed[0][1]}")
        if failure is not None and all(message == failure.message for _, message in failed):
            failure.agreed = True  # rank 0's own error (every rank that failed says the same)
            raise failure
        rank, message = next((r, m) for r, m in failed if r != 0)
        error = SegNetError(f"rank {rank}: {message}")
        error.agreed = True
        raise error

    def close(self, *, failed: bool = False) -> None:
        """Leaves the process group; after a failure, aborts NCCL's pending work rather than
        waiting for it."""
        if not self.enabled or not dist.is_initialized():
            return
        try:
            if failed and _has_nccl():
                dist.distributed_c10d._abort_process_group()
            else:
                dist.destroy_process_group()
        except Exception:  # leaving anyway: a dead peer's group may refuse to close cleanly
            pass


ALONE = Distributed()  # one process, no torchrun


def _has_nccl() -> bool:
    return "nccl" in str(dist.get_backend())  # "gloo" or "cpu:gloo,cuda:nccl"


def start(*, timeout_s: float = DEFAULT_TIMEOUT_S) -> Distributed:
    """This process's :class:`Distributed`: the process group already joined, or the torchrun
    one joined now when ``WORLD_SIZE`` > 1, else one process alone."""
    if dist.is_available() and dist.is_initialized():
        return Distributed(
            rank=dist.get_rank(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            world_size=dist.get_world_size(),
        )
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise SegNetError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers: launch with torchrun"
        ) from None
    if world <= 1:
        return ALONE
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        torch.cuda.set_device(local)  # before NCCL's first use: its communicator binds a GPU
    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    try:
        dist.init_process_group(
            "cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s)
        )
    except ValueError as error:  # env:// without MASTER_ADDR etc.: not started by torchrun
        raise SegNetError(f"WORLD_SIZE is {world} but {error}: launch with torchrun") from None
    return Distributed(rank=rank, local_rank=local, world_size=world)


@contextmanager
def session(*, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Distributed]:
    """:func:`start`, then errors named by rank and the group closed (aborted on failure).

    Under torchrun an error becomes ``rank R: ...``; a collective that failed because another
    process is gone becomes one line saying so, not a traceback.
    """
    group = start(timeout_s=timeout_s)
    failed = True
    try:
        yield group
        failed = False
    except Stopped:
        raise
    except SegNetError as error:
        if not group.enabled or getattr(error, "agreed", False):  # said once, for every process
            raise
        raise SegNetError(f"rank {group.rank}: {error.message}") from None
    except RuntimeError as error:
        if not (group.enabled and lost_peer(error)):
            raise
        # "[.../pair.cc:553] Connection closed by peer [IP]:PORT. This is typically ...": the cause
        first = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip().splitlines()[0]).split(". ")[0]
        why = "failed or was stopped (see its error)"
        if "timed out" in first.lower():
            why = f"did not answer within `dist_timeout` {timeout_s:g} s"
        raise SegNetError(
            f"rank {group.rank}: stopped: another process {why} ({first[:200]})"
        ) from None
    finally:
        group.close(failed=failed)


def lost_peer(error: BaseException) -> bool:
    """A collective's error that means another process is gone (closed or timed out)."""
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        hint in text for hint in ("gloo", "NCCL", "Connection closed", "Timed out", "timed out")
    )


def wrap(model: nn.Module, *, group: Distributed, device: torch.device) -> nn.Module:
    """The module the training steps call: ``model`` itself in one process, else DDP over it
    (a collective: rank 0's weights and buffers are copied to every process). BN buffers are
    not sent again at every forward: :func:`average_buffers` evens them out after each epoch,
    so every process validates and rank 0 saves the same statistics."""
    if not group.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    # The weights and buffers are copied from rank 0 at the start either way; newer PyTorch
    # names "no buffer copy at each forward" forward_sync_buffers.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def convert_sync_bn(model: nn.Module, *, group: Distributed, device: torch.device) -> nn.Module:
    """``sync_bn``: BN layers that take batch statistics over every process's batch."""
    if not group.enabled:
        return model  # one process: its batch statistics are already the global ones
    if device.type != "cuda":
        raise ArgumentError(
            "sync_bn", "needs CUDA: PyTorch's SyncBatchNorm does not run on CPU; leave it off"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


@torch.no_grad()
def average_buffers(model: nn.Module, group: Distributed) -> None:
    """Every floating-point buffer (BN running mean/var) set to its mean over the processes."""
    if not group.enabled:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            buffer.copy_(group.sum(buffer) / group.world_size)


def check_world_size(saved: int, *, group: Distributed, run_dir: object) -> None:
    """A run resumes with the number of processes it was trained with: its data shards, global
    batch and schedule all depend on it."""
    if saved == group.world_size:
        return
    how = ("without torchrun (one process)" if saved == 1
           else f"with {saved} processes in all (torchrun --nnodes x --nproc_per_node)")  # fmt: skip
    raise ArgumentError(
        "resume", f"{run_dir} was trained by {saved} process(es), this launch has "
        f"{group.world_size}: resume it {how}, or start a new run from it with `init_weights`",
    )  # fmt: skip
