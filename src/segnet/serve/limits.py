"""What the server accepts and how much work it takes on at once: the one home of these
defaults (``segnet serve`` reads its flag defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ArgumentError

# ?output= of POST /api/segment; the first is the default.
OUTPUTS = ("overlay", "color", "labels", "uncertainty", "json")

# Seconds uvicorn waits on SIGTERM for admitted requests to finish before cancelling them: a
# full default queue of 360x480 images at 1-2 s each on 2 CPU cores (SegNet-Basic) fits.
DRAIN_SECONDS = 60.0


@dataclass(frozen=True)
class Limits:
    """Per-request and per-server limits; a request past one gets a 4xx (413) or, when the queue
    is full, a 503 with Retry-After -- never a crash."""

    max_bytes: int = 20 * 2**20  # an uploaded file; a 12 MP phone JPEG is 3-8 MB
    # Decoded pixels: Full HD. SegNet-Basic at 1920x1080 grew the process by 1.1 GB and took
    # 18 s on 2 shared CPU cores (measured): larger images are refused, not queued for minutes.
    max_pixels: int = 1920 * 1080
    # Frames of an uploaded video (the rest is cut off): 5 s at 30 fps. SegNet-Basic takes
    # 0.5-2 s a 360x480 frame on 2 CPU cores, and a video holds its worker throughout.
    max_frames: int = 150
    workers: int = 1  # inference threads; each has its own model copy and torch threads
    queue: int = 16  # requests admitted beyond those running; more get 503 + Retry-After

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_frames", "workers"):
            if getattr(self, name) < 1:
                raise ArgumentError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.queue < 0:
            raise ArgumentError("queue", f"must be >= 0, got {self.queue}")

    @property
    def capacity(self) -> int:
        """Requests admitted at once: running plus waiting."""
        return self.workers + self.queue
