"""Video in, video out: clips are made here with PyAV (no data committed), segmented through the
CLI, and the outputs decoded back: frame count, size, rate, and frame k of the lossless label
video against predicting decoded frame k as an image."""

from __future__ import annotations

import inspect
import itertools
import re
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from segnet.cli import main
from segnet.data.base import DatasetInfo
from segnet.data.folder import default_palette
from segnet.engine.checkpoint import ModelConfig, save_checkpoint
from segnet.engine.predict import Segmenter
from segnet.engine.video import VideoInfo, VideoOptions, batched, encode_video, read_frames
from segnet.engine.weights import load_for_inference

ONE_LINE = re.compile(r"^segnet( [a-z-]+)*: error: \S")
CODECS = {".mp4": "libx264", ".mkv": "ffv1", ".gif": "gif", ".avi": "mpeg4"}


def make_clip(path: Path, *, frames: int = 12, size: tuple[int, int] = (64, 96), rate: int = 15):
    """A green block moving over a red/blue split with a little noise, encoded after the suffix."""
    height, width = size
    rng = np.random.default_rng(0)
    container = av.open(str(path), "w")
    stream = container.add_stream(CODECS[path.suffix], rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = {"gif": "rgb8", "ffv1": "yuv444p"}.get(stream.codec_context.name, "yuv420p")
    if stream.codec_context.name == "libx264" and (width % 2 or height % 2):
        stream.pix_fmt = "yuv444p"
    container.start_encoding()  # the header, even for frames=0 (PyAV writes it lazily)
    for k in range(frames):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, : width // 2], image[:, width // 2 :] = (200, 40, 40), (40, 40, 200)
        image[5 + 2 * k : 25 + 2 * k, 10 + 4 * k : 30 + 4 * k] = (40, 200, 40)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(stream.encode(None))
    container.close()
    return path


def decode(path: Path, fmt: str = "rgb24") -> tuple[list[np.ndarray], Fraction, str]:
    """Every frame (as ``fmt``), the stream's frame rate and pixel format."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format=fmt) for f in container.decode(video=0)]
        return frames, stream.average_rate, stream.codec_context.pix_fmt


def predict(checkpoint: Path, *args: str) -> int:
    return main(["predict", "--checkpoint", str(checkpoint), *args])


def _fails(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert ONE_LINE.match(lines[-1]) and not any("Traceback" in line for line in lines), lines
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def test_video_outputs_keep_count_size_rate_and_labels_match_images(checkpoint, tmp_path) -> None:
    clip = make_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    argv = [str(clip), "--out", str(out), "--video-outputs", "overlay,color,labels"]
    assert predict(checkpoint, *argv, "--batch-size", "5") == 0  # 5 + 5 + 2: a partial batch
    assert sorted(p.name for p in out.iterdir()) == [
        "clip_color.mp4", "clip_labels.mkv", "clip_overlay.mp4"
    ]  # fmt: skip
    source, rate, _ = decode(clip)
    for name in ("clip_overlay.mp4", "clip_color.mp4"):
        frames, out_rate, pix_fmt = decode(out / name)
        assert len(frames) == 12 and frames[0].shape == (64, 96, 3)
        assert out_rate == rate == 15 and pix_fmt == "yuv420p"
    labels, _, _ = decode(out / "clip_labels.mkv", "gray")
    assert len(labels) == 12 and labels[0].shape == (64, 96)
    assert (labels[0] != labels[11]).any()  # the labels follow the moving block
    # Frame k predicted as an image: the label video must hold exactly its labels.
    stills = tmp_path / "stills"
    stills.mkdir()
    for k, frame in enumerate(source):
        Image.fromarray(frame).save(stills / f"frame{k:02d}.png")
    assert predict(checkpoint, str(stills), "--out", str(tmp_path / "still_out")) == 0
    for k in range(12):
        expected = np.asarray(Image.open(tmp_path / "still_out" / f"frame{k:02d}.png"))
        assert np.array_equal(labels[k], expected), f"frame {k}"


def test_mixed_folder_of_images_and_a_video(checkpoint, tmp_path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    make_clip(inputs / "clip.avi", frames=4)
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(inputs / "photo.png")
    assert predict(checkpoint, str(inputs), "--out", str(tmp_path / "out")) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "clip_overlay.mp4", "photo.png", "photo_color.png", "photo_overlay.png"
    ]  # fmt: skip
    assert len(decode(tmp_path / "out" / "clip_overlay.mp4")[0]) == 4


def test_gif_is_a_video_not_its_first_frame(checkpoint, tmp_path) -> None:
    clip = make_clip(tmp_path / "anim.gif", frames=6, rate=10)
    assert predict(checkpoint, str(clip), "--out", str(tmp_path / "out")) == 0
    frames, rate, _ = decode(tmp_path / "out" / "anim_overlay.mp4")
    assert len(frames) == 6 and frames[0].shape == (64, 96, 3) and rate == decode(clip)[1]


def test_odd_frame_size_is_kept_exactly(checkpoint, tmp_path) -> None:
    clip = make_clip(tmp_path / "odd.mkv", frames=3, size=(63, 95))
    out = tmp_path / "out"
    assert (
        predict(checkpoint, str(clip), "--out", str(out), "--video-outputs", "overlay,labels") == 0
    )
    frames, _, pix_fmt = decode(out / "odd_overlay.mp4")
    assert len(frames) == 3 and frames[0].shape == (63, 95, 3) and pix_fmt == "yuv444p"
    assert decode(out / "odd_labels.mkv", "gray")[0][0].shape == (63, 95)


def test_bayesian_model_writes_an_uncertainty_video(tmp_path) -> None:
    info = DatasetInfo(class_names=("a", "b", "c"), palette=default_palette(3), ignore_index=255)
    config = ModelConfig.for_dataset("bayesian_segnet_basic", info)
    save_checkpoint(tmp_path / "bayes.pt", config=config, model=config.build())
    clip = make_clip(tmp_path / "clip.mp4", frames=3)
    argv = [str(clip), "--out", str(tmp_path / "out"), "--mc-samples", "3"]
    assert predict(tmp_path / "bayes.pt", *argv) == 0
    frames, _, _ = decode(tmp_path / "out" / "clip_uncertainty.mp4", "gray")
    assert len(frames) == 3 and frames[0].shape == (64, 96) and max(f.max() for f in frames) > 0


def _overlay_frame(checkpoint: Path, clip: Path, out: Path, *flags: str) -> np.ndarray:
    assert predict(checkpoint, str(clip), "--out", str(out), *flags) == 0
    return decode(out / "clip_overlay.mp4")[0][0].astype(int)


def test_opacity_and_legend_change_video_overlays(checkpoint, tmp_path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    source = decode(clip)[0][0].astype(int)
    invisible = _overlay_frame(checkpoint, clip, tmp_path / "o0", "--opacity", "0")
    plain = _overlay_frame(checkpoint, clip, tmp_path / "o5")
    legend = _overlay_frame(checkpoint, clip, tmp_path / "ol", "--legend")
    assert np.abs(invisible - source).mean() < 3  # only H.264's loss between them
    assert np.abs(plain - source).mean() > 20
    corner, rest = (slice(0, 12), slice(0, 12)), (slice(40, None), slice(60, None))
    # The legend box is drawn in the corner (~55 apart); elsewhere only H.264's loss (~6).
    assert np.abs(legend[corner] - plain[corner]).mean() > 35
    assert np.abs(legend[rest] - plain[rest]).mean() < 12


def test_opacity_and_legend_on_images(checkpoint, tmp_path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")

    def overlay(*flags: str) -> np.ndarray:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert predict(checkpoint, str(tmp_path / "x.png"), "--out", str(out), *flags) == 0
        return np.asarray(Image.open(out / "x_overlay.png")).astype(int), out

    assert np.array_equal(overlay("--opacity", "0")[0], image)
    full, out = overlay("--opacity", "1")
    assert np.array_equal(full, np.asarray(Image.open(out / "x_color.png").convert("RGB")))
    plain, legend = overlay()[0], overlay("--legend")[0]
    assert not np.array_equal(plain[:10, :10], legend[:10, :10])
    assert np.array_equal(plain[40:, 60:], legend[40:, 60:])


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 50, "truncated", "no frames"])
def test_corrupt_video_fails_in_one_line_with_nothing_written(
    checkpoint, tmp_path, capsys, content
) -> None:
    bad = tmp_path / "in" / "bad.mp4"
    bad.parent.mkdir()
    if content == "truncated":  # the first quarter of a real clip: no index, no frames
        data = make_clip(tmp_path / "good.mp4").read_bytes()
        content = data[: len(data) // 4]
    if content == "no frames":  # a video stream with nothing in it: AVI bytes under .mp4
        # (FFmpeg probes the content, not the suffix; an MP4 without samples has no stream at all)
        content = make_clip(tmp_path / "empty.avi", frames=0).read_bytes()
    bad.write_bytes(content)
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(bad.parent / "fine.png")
    _fails(capsys, ["predict", "--checkpoint", str(checkpoint), str(bad.parent),
                    "--out", str(tmp_path / "out")], str(bad))  # fmt: skip
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_without_pyav_videos_name_the_extra_and_images_still_work(
    checkpoint, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    clip = tmp_path / "in" / "clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"never decoded")
    argv = ["predict", "--checkpoint", str(checkpoint), str(clip), "--out", str(tmp_path / "o")]
    _fails(capsys, argv, "pip install 'segnet[video]'")
    assert not (tmp_path / "o").exists()
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "x.png")
    assert predict(checkpoint, str(tmp_path / "x.png"), "--out", str(tmp_path / "o")) == 0


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--opacity", "1.5"], "--opacity"),
        (["--video-outputs", "overlay,sparkles"], "--video-outputs"),
        (["--camera", "3"], "--camera"),  # a camera and inputs at once
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_video_flags(checkpoint, tmp_path, capsys, flags, needle) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=1)
    argv = ["predict", "--checkpoint", str(checkpoint), str(clip), "--out", str(tmp_path / "o")]
    _fails(capsys, argv + flags, needle)
    assert not (tmp_path / "o").exists()


def test_missing_camera_is_one_line(checkpoint, tmp_path, capsys) -> None:
    if Path("/dev/video57").exists():
        pytest.skip("this machine has a /dev/video57")
    argv = ["predict", "--checkpoint", str(checkpoint), "--camera", "57", "--out", str(tmp_path)]
    _fails(capsys, argv, "--camera 57: cannot open /dev/video57")
    assert not any(tmp_path.glob("camera*"))


def test_camera_recording_is_finished_on_ctrl_c(checkpoint, tmp_path, monkeypatch) -> None:
    def frames():  # a camera whose user presses Ctrl-C after 5 frames
        yield from read_frames(make_clip(tmp_path / "cam.mp4", frames=5))
        raise KeyboardInterrupt

    info = VideoInfo(width=96, height=64, rate=Fraction(30), frames=None)
    monkeypatch.setattr("segnet.engine.video.open_camera", lambda index: (frames(), info))
    out = tmp_path / "out"
    assert predict(checkpoint, "--camera", "0", "--out", str(out), "--batch-size", "1") == 0
    assert [p.name for p in out.iterdir()] == ["camera0_overlay.mp4"]
    frames_written, rate, _ = decode(out / "camera0_overlay.mp4")
    assert len(frames_written) == 5 and rate == 30


def test_ctrl_c_on_a_file_leaves_no_video(checkpoint, tmp_path, monkeypatch) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=6)
    calls = itertools.count()
    segment = Segmenter.segment

    def interrupted(self, images, **kwargs):
        if next(calls) == 1:
            raise KeyboardInterrupt
        return segment(self, images, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", interrupted)
    argv = [str(clip), "--out", str(tmp_path / "out"), "--batch-size", "2"]
    assert predict(checkpoint, *argv, "--video-outputs", "overlay,labels") == 130
    assert not any((tmp_path / "out").iterdir())  # no video, no temp file


def test_frames_stream_through_in_batches(checkpoint, tmp_path) -> None:
    """Memory stays flat: frames are decoded lazily and segmented as soon as a batch is full."""
    assert inspect.isgenerator(read_frames(make_clip(tmp_path / "c.mp4", frames=2)))
    assert next(batched(itertools.repeat(np.zeros((4, 4, 3), np.uint8)), 3)).shape == (3, 4, 4, 3)
    pulled = 0

    def frames():
        nonlocal pulled
        for _ in range(10):
            pulled += 1
            yield np.zeros((32, 32, 3), np.uint8)

    model, config = load_for_inference(checkpoint=str(checkpoint), model=None, weights=None)
    segmenter = Segmenter(model, config, device=torch.device("cpu"))
    seen = []
    segment = segmenter.segment
    segmenter.segment = lambda batch, **kw: (
        seen.append((len(batch), pulled)) or segment(batch, **kw)
    )
    info = VideoInfo(width=32, height=32, rate=Fraction(10), frames=None)
    _, count = encode_video(segmenter, frames(), info, tmp_path, "x",
                            options=VideoOptions(batch_size=3), progress=False)  # fmt: skip
    assert count == 10 and seen == [(3, 3), (3, 6), (3, 9), (1, 10)]
