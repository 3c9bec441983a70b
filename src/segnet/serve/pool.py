"""Inference off the event loop, bounded: ``workers`` threads, each with its own model copy, and
at most ``workers + queue`` requests admitted at once; one more is refused with :class:`Busy`
(503 + Retry-After) instead of piling up memory and latency.

Each worker owns a :class:`Segmenter` because Monte-Carlo dropout switches the model's dropout
layers on and off around its samples: two threads sharing one model would switch them under each
other. The torch intra-op threads are split among the workers (``threads_per_worker``), so
``workers`` concurrent forwards do not oversubscribe the cores.
"""

from __future__ import annotations

import asyncio
import math
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from ..engine.predict import Segmenter

T = TypeVar("T")


class Busy(Exception):
    """Every worker is busy and the queue is full; try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"server busy: all workers and queue slots taken; retry in {retry_after} s"
        )
        self.retry_after = retry_after


def threads_per_worker(workers: int, threads: int | None = None) -> int:
    """torch intra-op threads for each of ``workers``: the process's threads shared out."""
    return max(1, (threads or torch.get_num_threads()) // workers)


class InferencePool:
    """Runs ``job(segmenter)`` on a free worker; ``await pool.run(job)`` from the event loop."""

    def __init__(self, segmenters: Sequence[Segmenter], *, queue_size: int, threads: int) -> None:
        self._free: queue.SimpleQueue[Segmenter] = queue.SimpleQueue()
        for segmenter in segmenters:
            self._free.put(segmenter)
        self.workers, self.capacity = len(segmenters), len(segmenters) + queue_size
        self.admitted = 0  # running + waiting; changed only on the event loop, so no lock
        self.served = 0
        self._seconds = 1.0  # running mean of a job's time, for Retry-After
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers,
            thread_name_prefix="segnet-infer",
            initializer=torch.set_num_threads,
            initargs=(threads,),
        )

    def check_capacity(self) -> None:
        """Raises :class:`Busy` when no slot is free: called before an upload is read too, so a
        full server does not first take in the bytes it will refuse."""
        if self.admitted >= self.capacity:
            raise Busy(self.retry_after())

    async def run(self, job: Callable[[Segmenter], T]) -> T:
        self.check_capacity()
        self.admitted += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(self._call, job))
        finally:
            self.admitted -= 1
            self.served += 1

    def _call(self, job: Callable[[Segmenter], T]) -> T:
        segmenter = self._free.get_nowait()  # as many segmenters as threads: one is free
        start = time.perf_counter()
        try:
            return job(segmenter)
        finally:
            self._free.put(segmenter)
            self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - start)

    def retry_after(self) -> int:
        """Seconds until the queue has likely moved on by one worker's share: at least 1."""
        return max(1, math.ceil(self._seconds * self.capacity / self.workers))

    def close(self) -> None:
        """Waits for the jobs already submitted (SIGTERM drains them), then stops the threads."""
        self._executor.shutdown(wait=True)
