"""Datasets, augmentation and class weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segnet import SegNetError
from segnet.data import CamVid, open_dataset, transforms
from segnet.data.base import standardize
from segnet.data.stats import class_pixel_counts, median_frequency_weights, resolve_class_weights
from segnet.data.transforms import (
    Augment,
    AugmentedDataset,
    Photometric,
    ResidentDataset,
    _nearest,
)
from segnet.errors import ArgumentError


def _camvid_tree(root: Path, names=("a", "b"), *, with_list=True) -> Path:
    for split in ("train", "trainannot"):
        (root / split).mkdir(parents=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((8, 10, 3), 40 * i, np.uint8)).save(root / "train" / f"{name}.png")
        Image.fromarray(np.full((8, 10), i, np.uint8)).save(root / "trainannot" / f"{name}.png")
    if with_list:
        lines = [f"/SegNet/CamVid/train/{n}.png /SegNet/CamVid/trainannot/{n}.png" for n in names]
        (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def test_camvid_list_paths_resolve_against_root(tmp_path) -> None:
    data = CamVid(_camvid_tree(tmp_path), split="train")
    assert data.names == ["a", "b"]
    image, mask = data[1]
    assert image.shape == (3, 8, 10) and image.dtype == torch.float32
    assert mask.dtype == torch.int64 and mask.unique().tolist() == [1]


def test_camvid_without_list_pairs_folders(tmp_path) -> None:
    assert len(CamVid(_camvid_tree(tmp_path, with_list=False), split="train")) == 2


def test_camvid_missing_list_entry_names_line(tmp_path) -> None:
    root = _camvid_tree(tmp_path)
    (root / "trainannot" / "b.png").unlink()
    with pytest.raises(SegNetError, match=r"train\.txt:2: .*b\.png does not exist"):
        CamVid(root, split="train")


def test_real_camvid(camvid_root) -> None:
    train, val = CamVid(camvid_root, split="train"), CamVid(camvid_root, split="val")
    assert (len(train), len(val)) == (367, 101)
    image, mask = val.load(0)
    assert image.shape == (360, 480, 3) and mask.shape == (360, 480)
    assert mask.max() <= 11


def test_folder_dataset_and_colour_masks(tmp_path) -> None:
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    colors = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    labels = np.array([[0, 1], [1, 0]])
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(root / "images" / "x.jpg")
    Image.fromarray(colors[labels]).save(root / "masks" / "x.png")
    (root / "classes.json").write_text(
        '{"names": ["red", "green"], "palette": [[255,0,0],[0,255,0]]}'
    )
    data = open_dataset("folder", root=root, split="train")
    assert data.info.class_names == ("red", "green")
    assert data.load(0)[1].tolist() == labels.tolist()


def test_folder_errors(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(SegNetError, match="no images found"):
        open_dataset("folder", root=tmp_path, split="train", num_classes=2)
    with pytest.raises(SegNetError, match="num_classes"):
        open_dataset("folder", root=tmp_path, split="train")


def test_augment_keeps_labels_exact() -> None:
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.integers(0, 5, (40, 60), dtype=np.uint8))
    image = (mask * 50).expand(3, -1, -1)
    augment = Augment(crop_size=(32, 48), scale_range=(0.5, 1.5), hflip=True, ignore_index=255)
    for seed in range(10):
        out_image, out_mask = augment(image, mask, np.random.default_rng(seed))
        assert out_mask.shape == (32, 48) and out_image.shape == (3, 32, 48)
        assert out_mask.dtype == torch.int64 and out_image.dtype == torch.float32
        assert set(out_mask.unique().tolist()) <= {0, 1, 2, 3, 4, 255}  # nearest: no new labels


def test_nearest_resize_reads_window_centres() -> None:
    mask = torch.arange(6, dtype=torch.uint8).view(2, 3)
    assert _nearest(mask, (4, 6)).tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2
    assert _nearest(torch.arange(10, dtype=torch.uint8).view(1, 10), (1, 4)).tolist() == [
        [1, 3, 6, 8]  # source column floor((i + 0.5) * 10 / 4)
    ]


def test_augment_pads_small_images_with_void() -> None:
    image = torch.full((3, 10, 12), 200, dtype=torch.uint8)
    mask = torch.ones(10, 12, dtype=torch.uint8)
    out_image, out_mask = Augment(crop_size=(16, 16), hflip=False)(
        image, mask, np.random.default_rng(0)
    )
    assert (
        out_mask.shape == (16, 16)
        and (out_mask[10:] == 255).all()
        and (out_mask[:, 12:] == 255).all()
    )
    assert torch.allclose(out_image[:, 10:], standardize(torch.zeros(3, 6, 16)))  # black


def test_resident_dataset_gives_the_loaders_samples(tiny_folder) -> None:
    base = open_dataset("folder", root=tiny_folder, split="train", num_classes=3)
    augment = Augment(
        crop_size=(24, 40),
        scale_range=(0.75, 1.25),
        photometric=Photometric(0.3, 0.3, 0.3, 0.03, 0.5),
    )
    loader = AugmentedDataset(base, augment, seed=4)
    resident = ResidentDataset(base, augment, seed=4, device=torch.device("cpu"))
    for epoch in (0, 3):
        loader.set_epoch(epoch)
        resident.set_epoch(epoch)
        for index in range(len(base)):
            image, mask = resident[index]
            assert torch.equal(image, loader[index][0]) and torch.equal(mask, loader[index][1])
    image, mask = resident.raw(0)
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 48) and mask.shape == (32, 48)


def test_resident_dataset_refuses_what_does_not_fit(tiny_folder, monkeypatch) -> None:
    base = open_dataset("folder", root=tiny_folder, split="train", num_classes=3)
    monkeypatch.setattr(transforms, "_free_bytes", lambda device: 1000)
    with pytest.raises(ArgumentError, match=r"^device_augment.*4 training images need"):
        ResidentDataset(base, Augment(), seed=0, device=torch.device("cpu"))


def test_augmented_dataset_is_reproducible_per_epoch(tiny_folder) -> None:
    base = open_dataset("folder", root=tiny_folder, split="train", num_classes=3)
    data = AugmentedDataset(base, Augment(crop_size=(32, 32), hflip=True), seed=1)
    first = data[0][1]
    assert torch.equal(first, data[0][1])
    changed = False
    for epoch in range(1, 6):
        data.set_epoch(epoch)
        changed |= not torch.equal(first, data[0][1])
    assert changed


def test_median_frequency_weights_by_hand() -> None:
    # class 0: 30 px over images totalling 100 px; class 1: 10 px over 50; class 2: 5 px over 50
    weights = median_frequency_weights(np.array([30, 10, 5]), np.array([100, 50, 50]))
    freq = np.array([0.3, 0.2, 0.1])
    assert np.allclose(weights, 0.2 / freq)
    assert median_frequency_weights(np.array([4, 0]), np.array([4, 0])).tolist() == [1.0, 0.0]


def test_class_counts_exclude_void(tmp_path) -> None:
    root = tmp_path / "d"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for name, mask in (("p", [[0, 0], [1, 255]]), ("q", [[0, 0], [0, 0]])):
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(np.array(mask, np.uint8)).save(root / "masks" / f"{name}.png")
    data = open_dataset("folder", root=root, split="train", num_classes=2)
    class_pixels, image_pixels = class_pixel_counts(data)
    assert class_pixels.tolist() == [6, 1] and image_pixels.tolist() == [7, 3]
    assert resolve_class_weights("none", data) is None
    assert torch.allclose(
        resolve_class_weights("median", data),
        torch.tensor([(6 / 7 + 1 / 3) / 2 / (6 / 7), (6 / 7 + 1 / 3) / 2 / (1 / 3)]),
    )
    assert torch.allclose(
        resolve_class_weights("median_sqrt", data), resolve_class_weights("median", data).sqrt()
    )
    (tmp_path / "w.json").write_text("[1, 2, 3]")
    with pytest.raises(SegNetError, match="expected 2 non-negative weights"):
        resolve_class_weights(str(tmp_path / "w.json"), data)


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="reads Linux's /proc/meminfo")
def test_resident_dataset_reads_available_memory_on_linux() -> None:
    assert 0 < transforms._free_bytes(torch.device("cpu")) < 2**50
