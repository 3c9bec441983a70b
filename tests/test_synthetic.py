"""Procedural road scenes: contract, determinism, class coverage, difficulty, folder export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segnet.data.classes import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID
from segnet.data.synthetic import SyntheticRoadScenes, render_scene, write_synthetic_dataset
from segnet.errors import SegNetError

ROAD = CAMVID_CLASSES.index("Road")


def _scenes(count: int, *, seed: int = 0, height: int = 120, width: int = 160) -> list:
    dataset = SyntheticRoadScenes(num_images=count, height=height, width=width, seed=seed)
    return [dataset.load(i) for i in range(count)]


@pytest.mark.parametrize("size", [(120, 160), (45, 61), (32, 32)])
def test_render_shapes_and_dtypes(size) -> None:
    image, mask = render_scene(np.random.default_rng(0), height=size[0], width=size[1])
    assert image.shape == (*size, 3) and image.dtype == np.uint8
    assert mask.shape == size and mask.dtype == np.uint8
    assert mask.max() <= CAMVID_VOID


def test_dataset_contract() -> None:
    dataset = SyntheticRoadScenes(num_images=3, height=48, width=64)
    assert dataset.names == ["synthetic_0000", "synthetic_0001", "synthetic_0002"]
    assert len(dataset) == 3
    assert dataset.info.class_names == CAMVID_CLASSES and dataset.info.palette == CAMVID_PALETTE
    assert dataset.info.ignore_index == CAMVID_VOID and dataset.info.num_classes == 11
    image, mask = dataset[1]
    assert image.shape == (3, 48, 64) and image.dtype == torch.float32
    assert mask.shape == (48, 64) and mask.dtype == torch.int64
    assert np.array_equal(dataset.load(-1)[1], dataset.load(2)[1])
    with pytest.raises(IndexError):
        dataset.load(3)


def test_deterministic_per_seed_and_index() -> None:
    first = SyntheticRoadScenes(num_images=4, height=48, width=64, seed=7)
    again = SyntheticRoadScenes(num_images=4, height=48, width=64, seed=7)
    other = SyntheticRoadScenes(num_images=4, height=48, width=64, seed=8)
    late = again.load(3)  # loading out of order changes nothing
    for a, b in zip(first.load(3), late):
        assert np.array_equal(a, b)
    for a, b in zip(first.load(0), again.load(0)):
        assert np.array_equal(a, b)
    assert not np.array_equal(first.load(0)[0], other.load(0)[0])
    assert not np.array_equal(first.load(0)[0], first.load(1)[0])


def test_scenes_cover_the_classes() -> None:
    masks = np.stack([mask for _, mask in _scenes(20)])
    assert masks.max() <= CAMVID_VOID
    present = np.bincount(masks.ravel(), minlength=CAMVID_VOID + 1)[:CAMVID_VOID] > 0
    assert present.sum() >= 9, [name for name, seen in zip(CAMVID_CLASSES, present) if not seen]
    assert (masks == ROAD).mean() > 0.1  # a road scene: plenty of road


def test_colour_is_not_a_function_of_the_label() -> None:
    scenes = _scenes(6, height=60, width=80)
    road = np.concatenate([image[mask == ROAD] for image, mask in scenes]).astype(np.float32)
    assert road.std(axis=0).min() > 8  # texture, markings, lighting, noise
    means = np.stack([image[mask == ROAD].mean(0) for image, mask in scenes])
    assert np.ptp(means, axis=0).max() > 10  # each scene draws its own asphalt and light

    images = np.concatenate([image.reshape(-1, 3) for image, _ in scenes]).astype(np.float32)
    masks = np.concatenate([mask.ravel() for _, mask in scenes])
    palette = np.asarray(CAMVID_PALETTE, np.float32)
    nearest = ((images[:, None] - palette[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == masks).mean() < 0.5  # the palette colour is no shortcut


@pytest.mark.parametrize(
    "arguments, flag",
    [
        ({"num_images": 0}, "num_images"),
        ({"num_images": 2, "height": 16}, "height"),
        ({"num_images": 2, "width": 31}, "width"),
        ({"num_images": 2, "seed": -1}, "seed"),
    ],
)
def test_bad_arguments_name_the_argument(arguments, flag) -> None:
    with pytest.raises(SegNetError, match=flag):
        SyntheticRoadScenes(**arguments)


def test_render_rejects_small_sizes() -> None:
    with pytest.raises(SegNetError, match="height"):
        render_scene(np.random.default_rng(0), height=8, width=64)


def test_write_synthetic_dataset(tmp_path) -> None:
    root = write_synthetic_dataset(
        tmp_path / "demo", num_train=2, num_val=1, height=40, width=56, seed=3
    )
    assert root == tmp_path / "demo"
    spec = json.loads((root / "classes.json").read_text())
    assert spec["names"] == list(CAMVID_CLASSES) and spec["ignore_index"] == CAMVID_VOID
    assert [tuple(colour) for colour in spec["palette"]] == list(CAMVID_PALETTE)
    expected = {"train": ["synthetic_0000", "synthetic_0001"], "val": ["synthetic_0002"]}
    scenes = SyntheticRoadScenes(num_images=3, height=40, width=56, seed=3)
    for split, names in expected.items():
        assert sorted(p.stem for p in (root / split / "images").iterdir()) == names
        assert sorted(p.stem for p in (root / split / "masks").iterdir()) == names  # no temp files
        for name in names:
            image = Image.open(root / split / "images" / f"{name}.png")
            mask = Image.open(root / split / "masks" / f"{name}.png")
            assert image.mode == "RGB" and mask.mode == "L"
            assert image.size == mask.size == (56, 40)
            expected_image, expected_mask = scenes.load(scenes.names.index(name))
            assert np.array_equal(np.asarray(image), expected_image)
            assert np.array_equal(np.asarray(mask), expected_mask)
    with pytest.raises(SegNetError, match="num_train"):
        write_synthetic_dataset(tmp_path / "bad", num_train=0, num_val=1)
