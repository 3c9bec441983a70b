"""SUN RGB-D loader on a tiny fake tree: layout, list files, label shift, val fallback, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segnet.cli import build_parser
from segnet.data import SUNRGBD, open_dataset
from segnet.data.classes import SUNRGBD_CLASSES
from segnet.engine.config import TrainConfig
from segnet.errors import SegNetError

SIZES = {"train": [(24, 32), (20, 28)], "test": [(24, 32)]}  # SUN RGB-D sizes vary per sensor


def _raw_labels(shape: tuple[int, int], seed: int) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, 38, shape).astype(np.uint8)
    labels.flat[:38] = np.arange(38)  # every raw value 0..37 appears
    return labels


def fake_sunrgbd(root: Path, *, label_dtype=np.uint8) -> Path:
    for split, shapes in SIZES.items():
        for sub in ("image", "label"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i, shape in enumerate(shapes):
            name = f"img-{i:06d}"
            image = np.random.default_rng(i).integers(0, 256, (*shape, 3), dtype=np.uint8)
            suffix = ".jpg" if i == 0 else ".png"  # the usual release has JPEG images
            Image.fromarray(image).save(root / split / "image" / f"{name}{suffix}")
            Image.fromarray(_raw_labels(shape, i).astype(label_dtype)).save(
                root / split / "label" / f"{name}.png"
            )
    return root


def test_folder_layout_and_label_shift(tmp_path) -> None:
    root = fake_sunrgbd(tmp_path / "SUNRGBD")
    dataset = open_dataset("sunrgbd", root=root, split="train")
    assert isinstance(dataset, SUNRGBD) and len(dataset) == 2
    assert dataset.names == ["img-000000", "img-000001"]
    info = dataset.info
    assert info.num_classes == 37 and info.ignore_index == 255 and len(info.palette) == 37
    assert (
        info.class_names[0] == "wall"
        and info.class_names[-1] == "bag"
        and info.class_names == SUNRGBD_CLASSES
    )
    for index, shape in enumerate(SIZES["train"]):
        image, mask = dataset.load(index)
        raw = _raw_labels(shape, index)
        assert image.shape == (*shape, 3) and mask.shape == shape and mask.dtype == np.uint8
        assert (mask[raw == 0] == 255).all()  # raw 0 = void
        assert np.array_equal(mask[raw > 0], raw[raw > 0] - 1)  # classes 1..37 -> 0..36
    image, mask = dataset[1]
    assert tuple(image.shape) == (3, 20, 28) and mask.max() == 255 and mask[mask != 255].max() == 36


def test_sixteen_bit_labels(tmp_path) -> None:
    root = fake_sunrgbd(tmp_path / "SUNRGBD", label_dtype=np.uint16)
    _, mask = SUNRGBD(root, split="test").load(0)
    raw = _raw_labels(SIZES["test"][0], 0)
    assert np.array_equal(mask[raw > 0], raw[raw > 0] - 1)


def test_list_file_with_foreign_absolute_paths(tmp_path) -> None:
    root = fake_sunrgbd(tmp_path / "SUNRGBD")
    (root / "train.txt").write_text(
        "/SegNet/SUNRGBD/train/image/img-000001.png /SegNet/SUNRGBD/train/label/img-000001.png\n\n"
        "train/image/img-000000.jpg train/label/img-000000.png\n"
    )
    dataset = SUNRGBD(root, split="train")
    assert dataset.names == ["img-000001", "img-000000"]  # list order, not folder order
    assert dataset.load(0)[1].shape == SIZES["train"][1]
    (root / "train.txt").write_text("train/image/nope.jpg train/label/nope.png\n")
    with pytest.raises(SegNetError, match=r"train.txt:1: train/image/nope.jpg does not exist"):
        SUNRGBD(root, split="train")
    (root / "train.txt").write_text("only-one-field.png\n")
    with pytest.raises(SegNetError, match="expected 'IMAGE LABEL'"):
        SUNRGBD(root, split="train")


def test_val_falls_back_to_test(tmp_path) -> None:
    root = fake_sunrgbd(tmp_path / "SUNRGBD")
    with pytest.warns(UserWarning, match="no val split"):
        val = SUNRGBD(root, split="val")
    assert [p for p, _ in val.pairs] == [p for p, _ in SUNRGBD(root, split="test").pairs]


def test_errors(tmp_path) -> None:
    root = fake_sunrgbd(tmp_path / "SUNRGBD")
    with pytest.raises(SegNetError, match="folder not found"):
        SUNRGBD(tmp_path / "missing", split="train")
    with pytest.raises(SegNetError, match="^split "):
        SUNRGBD(root, split="extra")
    Image.fromarray(np.full((24, 32), 40, np.uint8)).save(
        root / "test" / "label" / "img-000000.png"
    )
    with pytest.raises(SegNetError, match=r"raw label values \[40\] outside 0..37"):
        SUNRGBD(root, split="test").load(0)
    (root / "train" / "label" / "img-000001.png").unlink()
    with pytest.raises(SegNetError, match="no label named img-000001"):
        SUNRGBD(root, split="train")
    with pytest.raises(SegNetError, match="required"):
        open_dataset("sunrgbd", root=None, split="train")


def test_registered_in_config_and_cli(tmp_path) -> None:
    assert TrainConfig(dataset="sunrgbd", data=str(tmp_path)).dataset == "sunrgbd"
    args = build_parser().parse_args(
        ["evaluate", "--checkpoint", "x.pt", "--dataset", "sunrgbd", "--data", "d"]
    )
    assert args.dataset == "sunrgbd"
    with pytest.raises(SegNetError, match="sunrgbd"):
        open_dataset("nyu", root=tmp_path, split="train")
