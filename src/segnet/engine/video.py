"""Segmenting videos and cameras as a stream, so memory stays flat for any length:

    decode (PyAV) -> batches of ``batch_size`` RGB frames (N, H, W, 3) uint8 -> Segmenter.segment
    -> one encoder per output, fed frame by frame

For ``clip.mp4`` (or .avi .mov .mkv .webm .gif; a camera is named ``camera<N>``):

    clip_overlay.mp4      H.264, the overlay (opacity and legend as for images)
    clip_color.mp4        H.264, the colour map                  (outputs: color)
    clip_labels.mkv       FFV1 gray8, lossless: decoded frame k equals the class indices of frame k
    clip_uncertainty.mp4  H.264 grey, with mc_samples > 0: uncertainty / its largest possible value

at the source's frame rate and size (a .gif gives an .mp4 too). H.264 is stored as yuv420p, which
plays everywhere but needs an even width and height; an odd size is kept exact and stored as
yuv444p (some browsers do not play 4:4:4). Audio is dropped. Each output is encoded into a temp
file and renamed into place once complete: an error or Ctrl-C leaves nothing half-written. PyAV
(the extra ``segnet[video]``; its wheels ship FFmpeg with libx264) is imported lazily, here only.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from ..data.io import VIDEO_SUFFIXES
from ..errors import ArgumentError, SegNetError
from ..files import atomic_path
from .checkpoint import ModelConfig
from .predict import OverlayStyle, Segmenter, colorize, predict_files, unique_names

VIDEO_OUTPUTS = ("overlay", "color", "labels")  # what may be asked for; uncertainty follows MC
DEFAULT_VIDEO_OUTPUTS = ("overlay",)
DEFAULT_BATCH_SIZE = 4  # frames per forward pass: enough to amortize overheads on a CPU
CAMERA_RATE = Fraction(30)  # frames per second written when a camera reports none
INSTALL_HINT = "pip install 'segnet[video]'"
SUFFIXES = {
    "overlay": "_overlay.mp4",
    "color": "_color.mp4",
    "labels": "_labels.mkv",
    "uncertainty": "_uncertainty.mp4",
}


def import_av() -> ModuleType:
    """PyAV, or a one-line error naming the extra."""
    try:
        import av
    except ImportError:
        raise SegNetError(f"video needs PyAV, which is not installed: {INSTALL_HINT}") from None
    return av


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoOptions:
    """What to write for each video, and how to run the model over it."""

    outputs: tuple[str, ...] = DEFAULT_VIDEO_OUTPUTS  # any of VIDEO_OUTPUTS
    batch_size: int = DEFAULT_BATCH_SIZE
    max_frames: int | None = None  # stop after this many frames (None: the whole video)
    mc_samples: int = 0  # > 0: Monte-Carlo dropout, and an uncertainty video
    style: OverlayStyle = field(default_factory=OverlayStyle)

    def __post_init__(self) -> None:
        unknown = [o for o in self.outputs if o not in VIDEO_OUTPUTS]
        if unknown or not self.outputs:
            raise ArgumentError(
                "video_outputs", f"must be one or more of {', '.join(VIDEO_OUTPUTS)}, got "
                f"{', '.join(self.outputs) or 'nothing'}",
            )  # fmt: skip
        for name in ("batch_size", "max_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ArgumentError(name, f"must be >= 1, got {value}")

    def kinds(self) -> tuple[str, ...]:
        """The outputs in a fixed order, uncertainty last when sampling."""
        kinds = tuple(k for k in VIDEO_OUTPUTS if k in self.outputs)
        return kinds + ("uncertainty",) * (self.mc_samples > 0)


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    rate: Fraction  # frames per second
    frames: int | None  # frame count when the container states it


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _open(av: ModuleType, path: Path, **kwargs: Any) -> Any:
    """An input container with a video stream, or a one-line error naming the file."""
    try:
        container = av.open(str(path), **kwargs)
    except (av.FFmpegError, OSError, ValueError) as error:
        reason = _reason(error)
        raise SegNetError(
            f"{path}: not a readable video ({reason}); replace or remove it"
        ) from None
    if not container.streams.video:
        container.close()
        raise SegNetError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # decode on several threads where the codec allows
    return container


def _decode(av: ModuleType, container: Any, label: str | Path) -> Iterator[np.ndarray]:
    """Frames as (H, W, 3) uint8 RGB, one at a time; the container is closed when the generator
    ends or is closed."""
    try:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as error:
        raise SegNetError(
            f"{label}: decoding failed ({_reason(error)}); the file is damaged"
        ) from None
    finally:
        container.close()


def probe_video(path: Path) -> VideoInfo:
    """Size, rate and frame count, after decoding the first frame: a corrupt or empty file fails
    here, before anything is written."""
    av = import_av()
    container = _open(av, path)
    stream = container.streams.video[0]
    frames = _decode(av, container, path)
    first = next(frames, None)  # None: the decoder ran dry and has closed the container
    if first is None:
        raise SegNetError(f"{path}: has no frames; replace or remove it")
    # Read the stream's figures while the container is open: PyAV >= 18.1.1 refuses them after.
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    count = stream.frames or None
    frames.close()  # closes the container
    if not rate:
        raise SegNetError(f"{path}: states no frame rate; re-encode it (e.g. ffmpeg -r 25)")
    return VideoInfo(first.shape[1], first.shape[0], Fraction(rate), count)


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of a video file, decoded one at a time as (H, W, 3) uint8 RGB."""
    av = import_av()
    return _decode(av, _open(av, path), path)


def batched(frames: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Frames -> (N, H, W, 3) stacks of at most ``size``, pulled lazily; a frame of another
    size (a stream may change resolution) starts a new stack."""
    batch: list[np.ndarray] = []
    for frame in frames:
        if batch and frame.shape != batch[0].shape:
            yield np.stack(batch)
            batch = []
        batch.append(frame)
        if len(batch) == size:  # yield at once: a full batch never waits for the next frame
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _encoding(av: ModuleType, kind: str, width: int, height: int) -> tuple[str, str, str]:
    """(container format, codec, pixel format) of an output."""
    if kind == "labels":
        return "matroska", "ffv1", "gray"  # lossless 8-bit: decoded values are the labels
    if "libx264" not in av.codecs_available:  # a PyAV built on an FFmpeg without x264
        return "mp4", "mpeg4", "yuv420p"
    even = width % 2 == 0 and height % 2 == 0
    return "mp4", "libx264", "yuv420p" if even else "yuv444p"  # 4:2:0 needs even sizes


class VideoWriter:
    """One output video, encoded frame by frame into ``path`` (a temp file; see ``_writer``)."""

    def __init__(self, path: Path, kind: str, info: VideoInfo) -> None:
        self.av = av = import_av()
        container_format, codec, pixel_format = _encoding(av, kind, info.width, info.height)
        self.container = av.open(str(path), "w", format=container_format)
        self.stream = self.container.add_stream(codec, rate=info.rate)
        self.stream.width, self.stream.height = info.width, info.height
        self.stream.pix_fmt = pixel_format

    def write(self, array: np.ndarray) -> None:
        """(H, W) uint8 grey or (H, W, 3) uint8 RGB; the encoder converts to its pixel format."""
        source = "gray" if array.ndim == 2 else "rgb24"
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=source)
        self.container.mux(self.stream.encode(frame))

    def finish(self) -> None:
        self.container.mux(self.stream.encode(None))  # flush the frames the encoder holds
        self.container.close()


@contextlib.contextmanager
def _writer(path: Path, kind: str, info: VideoInfo) -> Iterator[VideoWriter]:
    """A writer on a temp file beside ``path``: renamed into place after a clean finish, removed
    on any error or Ctrl-C."""
    with atomic_path(path) as tmp:
        writer = VideoWriter(tmp, kind, info)
        try:
            yield writer
        except BaseException:
            with contextlib.suppress(Exception):
                writer.container.close()
            raise
        try:
            writer.finish()
        except writer.av.FFmpegError as error:
            raise SegNetError(f"{path}: encoding failed ({_reason(error)})") from None


def render(
    kind: str,
    image: np.ndarray,
    labels: np.ndarray,
    uncertainty: np.ndarray | None,
    *,
    config: ModelConfig,
    style: OverlayStyle,
) -> np.ndarray:
    """One output frame: (H, W, 3) uint8 for overlay/color, (H, W) uint8 for labels/uncertainty."""
    if kind == "labels":
        return labels
    if kind == "uncertainty":
        # The mean per-class variance of probabilities is at most (K - 1) / K^2 (sum over classes
        # of m(1 - m) <= 1 - 1/K): one fixed scale, so brightness means the same in every frame.
        top = max((config.num_classes - 1) / config.num_classes**2, 1e-12)
        return np.clip(uncertainty / top * 255, 0, 255).round().astype(np.uint8)
    colors = colorize(labels, config.palette)
    if kind == "color":
        return colors
    return style.render(image, colors, class_names=config.class_names, palette=config.palette)


def _segment_stream(
    segmenter: Segmenter,
    frames: Iterable[np.ndarray],
    writers: dict[str, VideoWriter],
    options: VideoOptions,
) -> Iterator[None]:
    """Runs the model over ``frames`` batch by batch and feeds every writer; yields once per
    frame written."""
    for batch in batched(frames, options.batch_size):
        labels, uncertainty = segmenter.segment(batch, mc_samples=options.mc_samples)
        for k, image in enumerate(batch):
            frame_uncertainty = None if uncertainty is None else uncertainty[k]
            for kind, writer in writers.items():
                writer.write(
                    render(kind, image, labels[k], frame_uncertainty,
                           config=segmenter.config, style=options.style)
                )  # fmt: skip
            yield


def encode_video(
    segmenter: Segmenter,
    frames: Iterable[np.ndarray],
    info: VideoInfo,
    out_dir: Path,
    name: str,
    *,
    options: VideoOptions = VideoOptions(),
    live: bool = False,
    progress: bool = True,
) -> tuple[list[Path], int]:
    """Segments ``frames`` into ``out_dir/name_<kind>.*`` -> (paths written, frames). ``live``
    (a camera): Ctrl-C ends the recording and the videos are finished, not discarded."""
    paths = {kind: out_dir / f"{name}{SUFFIXES[kind]}" for kind in options.kinds()}
    frames = itertools.islice(frames, options.max_frames)
    total = min(filter(None, (info.frames, options.max_frames)), default=None)
    with contextlib.ExitStack() as stack:
        writers = {kind: stack.enter_context(_writer(p, kind, info)) for kind, p in paths.items()}
        bar = stack.enter_context(
            tqdm(total=total, desc=name, unit="frame", disable=not progress or None, leave=False)
        )
        count = 0
        try:
            for _ in _segment_stream(segmenter, frames, writers, options):
                count += 1
                bar.update(1)
        except KeyboardInterrupt:
            if not live:
                raise
        if count == 0:
            raise SegNetError(f"{name}: no frame was read; nothing written")
    return list(paths.values()), count


def predict_video(
    segmenter: Segmenter,
    path: Path,
    out_dir: Path,
    *,
    name: str | None = None,
    options: VideoOptions = VideoOptions(),
    progress: bool = True,
) -> tuple[list[Path], int]:
    """Segments the video file ``path`` -> (paths written, frames segmented)."""
    info = probe_video(path)
    return encode_video(
        segmenter, read_frames(path), info, out_dir, name or path.stem,
        options=options, progress=progress,
    )  # fmt: skip


def open_camera(index: int) -> tuple[Iterator[np.ndarray], VideoInfo]:
    """Frames of the local camera ``/dev/video<index>`` (Linux, v4l2) and their size and rate."""
    av = import_av()
    device = Path(f"/dev/video{index}")
    try:
        container = av.open(str(device), format="v4l2")
    except (av.FFmpegError, OSError, ValueError) as error:
        raise ArgumentError("camera", f"{index}: cannot open {device} ({_reason(error)})") from None
    stream = container.streams.video[0]
    frames = _decode(av, container, device)
    first = next(frames, None)
    if first is None:
        raise ArgumentError("camera", f"{index}: {device} gave no frame")
    rate = Fraction(stream.average_rate or stream.guessed_rate or CAMERA_RATE)
    info = VideoInfo(first.shape[1], first.shape[0], rate, None)
    return itertools.chain([first], frames), info


def record_camera(
    segmenter: Segmenter,
    index: int,
    out_dir: Path,
    *,
    options: VideoOptions = VideoOptions(),
    progress: bool = True,
) -> tuple[list[Path], int]:
    """Segments camera ``index`` until Ctrl-C (or ``options.max_frames``) into
    ``out_dir/camera<index>_overlay.mp4`` (and the other outputs asked for)."""
    frames, info = open_camera(index)
    return encode_video(
        segmenter, frames, info, out_dir, f"camera{index}",
        options=options, live=True, progress=progress,
    )  # fmt: skip


class MediaResult(NamedTuple):
    written: list[Path]
    images: int
    videos: int
    frames: int  # video frames segmented


def predict_media(
    segmenter: Segmenter,
    paths: list[Path],
    out_dir: Path,
    *,
    options: VideoOptions = VideoOptions(),
    progress: bool = True,
) -> MediaResult:
    """Images and videos alike (``is_video`` tells them apart). Every video is probed and every
    image read before anything is written, so a corrupt input fails with nothing written."""
    videos = [p for p in paths if is_video(p)]
    images = [p for p in paths if not is_video(p)]
    infos = [probe_video(p) for p in videos]
    written = predict_files(
        segmenter, images, out_dir, mc_samples=options.mc_samples, style=options.style,
        progress=progress,
    ) if images else []  # fmt: skip
    frames = 0
    for path, name, info in zip(videos, unique_names(videos), infos):
        paths_written, count = encode_video(
            segmenter, read_frames(path), info, out_dir, name, options=options, progress=progress
        )
        written += paths_written
        frames += count
    return MediaResult(written, len(images), len(videos), frames)
