"""Every verb under bad input: exit status 2, exactly one stderr line ``segnet[ VERB]: error: ...``
(no traceback, no usage block, no warning), and nothing written or changed on disk.

Each case is (verb-line with {placeholders} for files of the workspace, a fragment the error must
contain). The workspace is made once per module and checked unchanged after every case.
"""

from __future__ import annotations

import json
import re
import shlex
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_folder_dataset
from segnet.cli import main
from segnet.data.base import DatasetInfo
from segnet.data.folder import default_palette
from segnet.engine.checkpoint import ModelConfig, save_checkpoint

ONE_LINE = re.compile(r"^segnet( [a-z-]+)*: error: \S")


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels, with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))  # fmt: skip


def _broken_folder(root: Path, breakage: str) -> Path:
    """A tiny folder dataset with one kind of damage."""
    write_folder_dataset(root, counts={"train": 2, "val": 1})
    masks = root / "train" / "masks"
    if breakage == "mask_size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "train_0.png")
    elif breakage == "label_range":
        Image.fromarray(np.full((32, 48), 7, np.uint8)).save(masks / "train_0.png")
    elif breakage == "no_mask":
        (masks / "train_1.png").unlink()
    elif breakage == "no_images":
        for path in (root / "train" / "images").iterdir():
            path.unlink()
    elif breakage == "corrupt_val":
        (root / "val" / "images" / "val_0.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    elif breakage == "colour_masks":
        rgb = np.zeros((32, 48, 3), np.uint8)
        for split in ("train", "val"):
            for path in (root / split / "masks").iterdir():
                Image.fromarray(rgb).save(path)
    return root


def _checkpoints(ws: Path) -> None:
    info = DatasetInfo(class_names=("a", "b", "c"), palette=default_palette(3), ignore_index=255)
    config = ModelConfig.for_dataset("segnet_basic", info)
    save_checkpoint(ws / "model.pt", config=config, model=config.build())
    five = ModelConfig.for_dataset(
        "segnet_basic", DatasetInfo(tuple("abcde"), default_palette(5), 255)
    )
    save_checkpoint(ws / "five.pt", config=five, model=five.build())
    wrong = ModelConfig.for_dataset("segnet_basic", info)
    save_checkpoint(
        ws / "misfit.pt", config=wrong, model=ModelConfig.for_dataset("fcn_basic", info).build()
    )
    torch.save({"w": torch.zeros(3)}, ws / "plain.pt")
    torch.save({"format": "segnet-checkpoint"}, ws / "format_only.pt")
    payload = torch.load(ws / "model.pt", weights_only=True)
    del payload["data"]["palette"]
    torch.save(payload, ws / "no_palette.pt")
    (ws / "garbage.pt").write_bytes(b"\x00" * 64)
    torch.save({"model": torch.nn.Linear(2, 2)}, ws / "pickled.pth")  # needs unpickling: refused


def _files(ws: Path) -> None:
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(ws / "photo.png")
    (ws / "photos").mkdir()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(ws / "photos" / "p.png")
    (ws / "empty_folder").mkdir()
    (ws / "notes.txt").write_text("not an image\n")
    (ws / "clip.mp4").write_bytes(b"never decoded: the flags are refused first")
    (ws / "empty.png").write_bytes(b"")
    (ws / "truncated.png").write_bytes((ws / "photo.png").read_bytes()[:60])
    _png_header_only(ws / "bomb.png", 100_000, 100_000)
    (ws / "a_file").write_text("x")
    (ws / "a_folder").mkdir()
    yaml_cases = {
        "ten_epochs.yaml": 'epochs: "ten"\n', "half_batch.yaml": "batch_size: 2.5\n",
        "unknown_key.yaml": "learning_rate: 0.1\n", "a_list.yaml": "- 1\n- 2\n",
        "broken.yaml": "model: [unclosed\n", "inf_lr.yaml": "lr: .inf\n",
    }  # fmt: skip
    for name, text in yaml_cases.items():
        (ws / name).write_text(text)
    (ws / "weights3.json").write_text("[1.0, 2.0]\n")
    (ws / "classes_bad.json").write_text("{not json")
    (ws / "classes_short.json").write_text(
        json.dumps({"names": ["a", "b", "c"], "palette": [[0, 0, 0]]})
    )


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("bad_inputs")
    write_folder_dataset(ws / "data", counts={"train": 3, "val": 2})
    for breakage in (
        "mask_size",
        "label_range",
        "no_mask",
        "no_images",
        "corrupt_val",
        "colour_masks",
    ):
        _broken_folder(ws / breakage, breakage)
    camvid = ws / "camvid"
    (camvid / "train").mkdir(parents=True)
    (camvid / "train.txt").write_text("/SegNet/CamVid/train/x.png\n")
    (ws / "camvid_missing").mkdir()
    (ws / "camvid_missing" / "train.txt").write_text(
        "/SegNet/CamVid/train/x.png /SegNet/CamVid/trainannot/x.png\n"
    )
    _checkpoints(ws)
    _files(ws)
    return ws


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}  # fmt: skip


D = "--dataset folder --data {ws}/data --num-classes 3"
CK = "--checkpoint {ws}/model.pt"
SHIPPED = "--model segnet_basic --weights camvid"

CASES = [
    # -- images given to predict
    (f"predict {CK} {{ws}}/notes.txt --out {{ws}}/new", "not a readable image"),
    (f"predict {CK} {{ws}}/empty.png --out {{ws}}/new", "not a readable image"),
    (f"predict {CK} {{ws}}/truncated.png --out {{ws}}/new", "not a readable image"),
    (f"predict {CK} {{ws}}/bomb.png --out {{ws}}/new", "more pixels than this tool decodes"),
    (f"predict {CK} {{ws}}/missing.png --out {{ws}}/new", "no such file"),
    (f"predict {CK} {{ws}}/empty_folder --out {{ws}}/new", "folder has no images"),
    (f"predict {CK} '{{ws}}/*.nothing' --out {{ws}}/new", "no such file"),
    # -- predict outputs and flags
    (f"predict {CK} {{ws}}/photos --out {{ws}}/photos", "holds the input p.png"),
    (f"predict {CK} {{ws}}/photo.png --out {{ws}}/a_file", "--out"),
    (f"predict {CK} {{ws}}/photo.png --out {{ws}}/a_file/sub", "is a file, not a folder"),
    (f"predict {CK} {{ws}}/photo.png --out {{ws}}/new --mc-samples 0", "--mc-samples"),
    (f"predict {CK} {{ws}}/photo.png --out {{ws}}/new --mc-samples 2", "has no dropout"),
    ("predict {ws}/photo.png --out {ws}/new", "give either --checkpoint"),
    (f"predict {CK} {SHIPPED} {{ws}}/photo.png --out {{ws}}/new", "give either --checkpoint"),
    (
        "predict --model segnet_basic --weights nope {ws}/photo.png --out {ws}/new",
        "no shipped weights",
    ),
    ("predict --model nope --weights camvid {ws}/photo.png --out {ws}/new", "no shipped weights"),
    (f"predict {CK} {{ws}}/photo.png --out {{ws}}/new --device tpu", "--device tpu"),
    (f"predict {CK} {{ws}}/photo.png --out {{ws}}/new --precision fp16", "fp16 needs a GPU"),
    (f"predict {CK} {{ws}}/photo.png --out {{ws}}/new --precision fp8", "--precision"),
    ("predict --checkpoint {ws}/five.pt", "--out"),
    (f"predict {CK} {{ws}}/photo.png --out {{ws}}/new --adapt-bn 0", "--adapt-bn"),
    (f"predict {CK} {{ws}}/photo.png --out {{ws}}/new --adapt-bn 1.5", "--adapt-bn"),
    (f"predict {CK} {{ws}}/clip.mp4 --out {{ws}}/new --adapt-bn 1", "adapts to image INPUTs"),
    (
        f"predict {CK} {{ws}}/photo.png {{ws}}/notes.txt --out {{ws}}/new --adapt-bn 1",
        "notes.txt: not a readable image",
    ),
    # -- checkpoints
    (f"evaluate --checkpoint {{ws}}/missing.pt {D}", "missing.pt: file not found"),
    (f"evaluate --checkpoint {{ws}}/garbage.pt {D}", "not a readable checkpoint"),
    (f"evaluate --checkpoint {{ws}}/plain.pt {D}", "not a segnet checkpoint"),
    (f"evaluate --checkpoint {{ws}}/format_only.pt {D}", "incomplete segnet checkpoint"),
    (f"evaluate --checkpoint {{ws}}/no_palette.pt {D}", "no data.palette"),
    (f"evaluate --checkpoint {{ws}}/five.pt {D}", "trained for 5 classes"),
    (f"evaluate --checkpoint {{ws}}/misfit.pt {D}", "weights do not fit"),
    (f"evaluate --checkpoint {{ws}}/a_folder {D}", "file not found"),
    (
        "predict --checkpoint {ws}/plain.pt {ws}/photo.png --out {ws}/new",
        "not a segnet checkpoint",
    ),
    ("export --checkpoint {ws}/format_only.pt --out {ws}/m.onnx", "incomplete"),
    # -- evaluate flags and outputs
    (f"evaluate {CK} {D} --bf-tolerance 0", "--bf-tolerance must be in (0, 1)"),
    (f"evaluate {CK} {D} --bf-tolerance 1.5", "--bf-tolerance"),
    (f"evaluate {CK} {D} --out {{ws}}/a_folder", "is a folder"),
    (f"evaluate {CK} {D} --out {{ws}}/model.pt", "is an input of this command"),
    (f"evaluate {CK} {D} --plots {{ws}}/a_file", "is a file"),
    (f"evaluate {CK} {D} --split nope", "--split"),
    (f"evaluate {CK} {D} --groups nope", "no such group"),
    (f"evaluate {CK} --dataset nope --data {{ws}}/data", "--dataset"),
    (f"evaluate {CK} --dataset folder --data {{ws}}/nowhere", "folder not found"),
    (f"evaluate {CK} --dataset camvid", "--data ROOT is required"),
    (f"evaluate {CK} {D} --mc-samples 3", "has no dropout"),
    (f"evaluate {CK} {D} --adapt-bn -1", "--adapt-bn"),
    # -- datasets with damage
    (
        f"evaluate {CK} --dataset folder --data {{ws}}/mask_size --num-classes 3 --split train",
        "mask is 10x10",
    ),
    (
        f"evaluate {CK} --dataset folder --data {{ws}}/label_range --num-classes 3 --split train",
        "outside 0..2",
    ),
    (
        f"evaluate {CK} --dataset folder --data {{ws}}/no_mask --num-classes 3 --split train",
        "no mask named",
    ),
    (
        f"evaluate {CK} --dataset folder --data {{ws}}/no_images --num-classes 3 --split train",
        "no images found",
    ),
    (f"evaluate {CK} --dataset folder --data {{ws}}/data", "no classes.json"),
    (
        f"evaluate {CK} --dataset folder --data {{ws}}/data --palette {{ws}}/classes_bad.json",
        "not a valid class file",
    ),
    (
        f"evaluate {CK} --dataset folder --data {{ws}}/data --palette {{ws}}/classes_short.json",
        "palette",
    ),
    (f"evaluate {CK} --dataset folder --data {{ws}}/data --palette {{ws}}/nope.json", "--palette"),
    (
        f"evaluate {CK} --dataset camvid --data {{ws}}/camvid --split train",
        "expected 'IMAGE LABEL'",
    ),
    (
        f"evaluate {CK} --dataset camvid --data {{ws}}/camvid_missing --split train",
        "does not exist",
    ),
    ("data verify --dataset folder --data {ws}/corrupt_val --num-classes 3", "1 problem(s)"),
    ("data verify --dataset folder --data {ws}/label_range --num-classes 3", "1 problem(s)"),
    (
        "data stats --dataset folder --data {ws}/colour_masks --num-classes 3",
        "without one labelled pixel",
    ),
    # -- training configs and flags
    (
        "train --config {ws}/ten_epochs.yaml --dataset synthetic --out {ws}/run",
        "epochs must be an integer",
    ),
    (
        "train --config {ws}/half_batch.yaml --dataset synthetic --out {ws}/run",
        "batch_size must be an integer",
    ),
    (
        "train --config {ws}/unknown_key.yaml --dataset synthetic --out {ws}/run",
        "unknown key 'learning_rate'",
    ),
    ("train --config {ws}/a_list.yaml --dataset synthetic --out {ws}/run", "expected a mapping"),
    ("train --config {ws}/broken.yaml --dataset synthetic --out {ws}/run", "not valid YAML"),
    ("train --config {ws}/nope.yaml --dataset synthetic --out {ws}/run", "--config"),
    (
        "train --config {ws}/inf_lr.yaml --dataset synthetic --out {ws}/run",
        "lr must be positive and finite",
    ),
    ("train --dataset synthetic --lr inf --out {ws}/run", "--lr must be positive and finite"),
    ("train --dataset synthetic --lr -1 --out {ws}/run", "--lr must be positive"),
    ("train --dataset synthetic --lr fast --out {ws}/run", "--lr"),
    ("train --dataset synthetic --crop 8 8 --out {ws}/run", "--crop must be"),
    ("train --dataset synthetic --scale 2 1 --out {ws}/run", "--scale must be"),
    ("train --dataset synthetic --hue 0.9 --out {ws}/run", "--hue must be"),
    ("train --dataset synthetic --time-budget -5 --out {ws}/run", "--time-budget must be 0 (off)"),
    ("train --dataset synthetic --time-budget inf --out {ws}/run", "--time-budget must be 0 (off)"),
    ("train --dataset synthetic --epochs 0 --out {ws}/run", "--epochs"),
    ("train --dataset synthetic --model nope --out {ws}/run", "'nope' is not registered"),
    (f"train {D} --holdout-groups nope --out {{ws}}/run", "no such group"),
    (f"train {D} --class-weights {{ws}}/missing.json --out {{ws}}/run", "--class-weights"),
    (
        f"train {D} --class-weights {{ws}}/weights3.json --out {{ws}}/run",
        "expected 3 non-negative weights",
    ),
    (f"train {D} --init-weights {{ws}}/missing.pt --out {{ws}}/run", "--init-weights"),
    (f"train {D} --init-weights {{ws}}/five.pt --out {{ws}}/run", "--init-weights"),
    (
        f"train {D} --model segnet --encoder-weights {{ws}}/pickled.pth --out {{ws}}/run",
        "--encoder-weights",
    ),
    ("train --resume {ws}/nowhere", "--resume"),
    ("train --dataset synthetic --out {ws}/a_file", "--out"),
    # -- bn-stats, export, data stats, benchmark, demo
    (f"bn-stats {CK} {D} --out {{ws}}/model.pt", "is an input of this command"),
    (f"bn-stats {CK} {D} --batch-size 0", "--batch-size"),
    (f"bn-stats --checkpoint {{ws}}/five.pt {D}", "trained for 5 classes"),
    (f"bn-stats {CK} --images {{ws}}/missing.png", "no such file"),
    (f"bn-stats {CK} --images {{ws}}/empty_folder", "folder has no images"),
    (f"bn-stats {CK} --images {{ws}}/photo.png {{ws}}/notes.txt", "not a readable image"),
    (f"bn-stats {CK} --images {{ws}}/photos --out {{ws}}/photos/p.png", "is an input"),
    (f"bn-stats {CK} --images {{ws}}/photo.png --blend nan", "--blend"),
    (f"bn-stats {CK} --images {{ws}}/photo.png --blend 0", "--blend"),
    (f"bn-stats {CK} {D} --precise-bn augmented", "records no training config"),
    (f"bn-stats {CK} --images {{ws}}/photo.png --precise-bn", "give one of them"),
    (f"bn-stats {CK} {D} --precise-bn crops", "--precise-bn"),
    (f"evaluate {CK} {D} --precise-bn augmented", "records no training config"),
    (f"export {CK} --out {{ws}}/m.onnx --size big", "--size"),
    (f"export {CK} --out {{ws}}/m.onnx --size 360x480 --dynamic", "multiples of 32"),
    (f"export {CK} --out {{ws}}/a_folder", "is a folder"),
    (f"export {CK} --out {{ws}}/m.onnx --format tflite", "--format"),
    (f"data stats {D} --out {{ws}}/a_file/stats.json", "is a file, not a folder"),
    ("benchmark --models nope --size 32x32", "'nope' is not registered"),
    ("benchmark --models segnet_basic --size 32x32 --json {ws}/a_folder", "is a folder"),
    ("benchmark --models segnet_basic --size 32x32 --batch 0", "--batch"),
    ("benchmark --models segnet_basic --size axb", "--size"),
    ("demo --out {ws}/a_file", "--out"),
    ("frobnicate", "invalid choice"),
]


@pytest.mark.parametrize(
    "line, fragment", CASES, ids=[c[0].split(" --")[0][:40] + f"#{i}" for i, c in enumerate(CASES)]
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    ws: Path, line: str, fragment: str, capfd
) -> None:
    before = _snapshot(ws)
    argv = shlex.split(line.format(ws=ws))
    with _no_warnings():
        code = main(argv)
    captured = capfd.readouterr()
    lines = captured.err.replace("\r", "\n").strip().splitlines()
    lines = [ln for ln in lines if ln.strip() and not _progress(ln)]
    assert code == 2, (argv, captured.err)
    assert len(lines) == 1 and ONE_LINE.match(lines[0]), lines
    assert fragment in lines[0], lines[0]
    assert _snapshot(ws) == before, "a bad input changed the workspace"


def _progress(line: str) -> bool:
    """tqdm bars (on stderr, overwritten in place) are not error lines."""
    return bool(re.match(r"^\s*[\w ]+:\s+\d+%\|", line))


class _no_warnings:
    """Fails the case if any Python warning is issued (they would print extra stderr lines)."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc) -> None:
        self._catch.__exit__(*exc)
        assert not self._seen, [str(w.message)[:120] for w in self._seen]


def test_there_are_at_least_60_cases_across_every_verb() -> None:
    verbs = {
        line.split()[0] + (" " + line.split()[1] if line.startswith("data") else "")
        for line, _ in CASES
    }
    assert len(CASES) >= 60
    assert {"predict", "evaluate", "train", "bn-stats", "export", "benchmark", "demo",
            "data stats", "data verify"} <= verbs  # fmt: skip
