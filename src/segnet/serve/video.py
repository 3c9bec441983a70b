"""Short videos: ``POST /api/segment-video`` with multipart field ``video`` -> the overlay as an
H.264 MP4 at the source's size and frame rate, made by ``segnet.engine.video`` (the streaming
decoder/encoder of ``segnet predict``; PyAV, the extra ``segnet[video]``).

A video holds a worker for its whole length, so the server takes at most ``max_frames`` frames of
it (the answer says how many in ``X-Frames``) and refuses frames over ``max_pixels``. The upload
is written to a private temp folder (PyAV reads files), which is removed when the job ends.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.io import VIDEO_SUFFIXES
from ..engine.predict import OverlayStyle, Segmenter
from ..errors import SegNetError
from .render import Rendered
from .upload import UploadError

FIELD = "video"
MP4 = "video/mp4"


def video_available() -> bool:
    """PyAV is installed (``segnet[video]``)."""
    return importlib.util.find_spec("av") is not None


@dataclass(frozen=True)
class VideoJob:
    data: bytes  # the encoded upload
    filename: str  # as the client named it: its suffix helps the demuxer
    style: OverlayStyle
    max_pixels: int
    max_frames: int
    queued_at: float  # time.perf_counter() when admitted


def run_video(segmenter: Segmenter, job: VideoJob) -> Rendered:
    """Runs on a pool worker: probe -> segment frame batches -> encode the overlay MP4."""
    from ..engine.video import VideoOptions, predict_video, probe_video

    timings = {"queue": round(1000 * (time.perf_counter() - job.queued_at), 2)}
    suffix = Path(job.filename).suffix.lower()
    with tempfile.TemporaryDirectory(prefix="segnet-serve-") as folder:
        source = Path(folder) / f"upload{suffix if suffix in VIDEO_SUFFIXES else '.mp4'}"
        source.write_bytes(job.data)
        start = time.perf_counter()
        try:
            info = probe_video(source)
            if info.width * info.height > job.max_pixels:
                raise UploadError(
                    413,
                    f"video frames are {info.width}x{info.height}; "
                    f"this server accepts at most {job.max_pixels:,} pixels",
                )
            options = VideoOptions(max_frames=job.max_frames, style=job.style)
            paths, frames = predict_video(
                segmenter, source, Path(folder), name="result", options=options, progress=False
            )
        except SegNetError as error:  # unreadable, damaged, no frames: the upload's fault
            raise UploadError(400, error.message.replace(str(source), "upload")) from None
        timings["video"] = round(1000 * (time.perf_counter() - start), 2)
        body = paths[0].read_bytes()
    rendered = Rendered(body, MP4, timings)
    rendered.headers["X-Frames"] = str(frames)
    return rendered
