"""Held-out sequences (data/groups.py) and photometric jitter (data/transforms.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import write_folder_dataset
from segnet.cli import main
from segnet.data import open_dataset
from segnet.data.base import standardize
from segnet.data.groups import group_counts, group_of, select_groups, split_groups
from segnet.data.transforms import Augment, Photometric
from segnet.engine.checkpoint import read_checkpoint
from segnet.engine.config import TrainConfig
from segnet.engine.train import fit, training_splits
from segnet.errors import ArgumentError


@pytest.fixture
def sequences(tmp_path):
    """A folder dataset whose train split holds three 'drives': seqA (3), seqB (2), seqC (1)."""
    root = write_folder_dataset(tmp_path / "data", counts={"train": 6, "val": 2})
    names = ["seqA_0", "seqA_1", "seqA_2", "seqB_0", "seqB_1", "seqC_0"]
    for sub in ("images", "masks"):
        for i, name in enumerate(names):
            (root / "train" / sub / f"train_{i}.png").rename(root / "train" / sub / f"{name}.png")
    return root


def test_group_of_reads_the_sequence_from_the_name() -> None:
    assert group_of("0001TP_006690") == "0001TP" and group_of("Seq05VD_f00000") == "Seq05VD"
    assert group_of("no-underscore") == "no-underscore"
    assert group_of("cam3-0042", r"^(cam\d+)-") == "cam3"


def test_split_groups_holds_out_whole_sequences(sequences) -> None:
    train = open_dataset("folder", root=sequences, split="train", num_classes=3)
    assert group_counts(train) == {"seqA": 3, "seqB": 2, "seqC": 1}
    rest, held = split_groups(train, ["seqB"])
    assert held.names == ["seqB_0", "seqB_1"] and rest.names == [
        "seqA_0",
        "seqA_1",
        "seqA_2",
        "seqC_0",
    ]
    image, mask = held.load(1)
    assert np.array_equal(mask, train.load(4)[1]) and image.shape[:2] == mask.shape
    assert held[0][0].shape == (3, 32, 48)  # tensors through the base dataset's transform
    assert select_groups(train, ["seqC", "seqA"]).names == ["seqA_0", "seqA_1", "seqA_2", "seqC_0"]


def test_group_errors_name_the_groups_there_are(sequences) -> None:
    train = open_dataset("folder", root=sequences, split="train", num_classes=3)
    with pytest.raises(
        ArgumentError, match=r"seqX: no such group .*seqA \(3\), seqB \(2\), seqC \(1\)"
    ):
        split_groups(train, ["seqX"])
    with pytest.raises(ArgumentError, match="every sample"):
        split_groups(train, ["seqA", "seqB", "seqC"])
    with pytest.raises(ArgumentError, match="^group_pattern"):
        split_groups(train, ["seqA"], pattern="([")


def test_training_validates_on_the_held_out_sequences(sequences, tmp_path) -> None:
    config = TrainConfig(
        model="segnet_basic", dataset="folder", data=str(sequences), num_classes=3,
        out=str(tmp_path / "run"), epochs=1, batch_size=2, lr=0.01, num_workers=0,
        holdout_groups=["seqA"], precision="fp32", class_weights="none",
    )  # fmt: skip
    train, val = training_splits(config)
    assert train.names == ["seqB_0", "seqB_1", "seqC_0"] and val.names == [
        "seqA_0",
        "seqA_1",
        "seqA_2",
    ]
    fit(config, progress=False)
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert best["train_config"]["holdout_groups"] == ["seqA"]


def test_cli_groups_and_evaluate_on_groups(sequences, tmp_path, capsys) -> None:
    flags = ["--dataset", "folder", "--data", str(sequences), "--num-classes", "3"]
    assert main(["data", "groups", *flags]) == 0
    assert "seqA" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", *flags, "--out", str(run), "--epochs", "1", "--num-workers", "0",
                 "--holdout-groups", "seqC", "--precision", "fp32"]) == 0  # fmt: skip
    out = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), *flags, "--split", "train",
                 "--groups", "seqB", "--out", str(out)]) == 0  # fmt: skip
    assert '"num_images": 2' in out.read_text() and '"seqB"' in out.read_text()
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), *flags, "--groups", "nope"]) == 2
    assert "--groups nope: no such group" in capsys.readouterr().err
    # precise BN sees what training saw: the held-out drive stays unseen
    assert main(["bn-stats", "--checkpoint", str(run / "best.pt"), *flags, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "without the held-out groups seqC" in printed and "over 5 training images" in printed


def test_photometric_jitter_changes_colours_not_labels() -> None:
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 40, 50), dtype=np.uint8))
    mask = torch.from_numpy(np.random.default_rng(1).integers(0, 3, (40, 50), dtype=np.uint8))
    off = Augment(hflip=False)
    on = Augment(hflip=False, photometric=Photometric(0.3, 0.3, 0.3, 0.05, 0.5))
    image_off, mask_off = off(image, mask, np.random.default_rng(5))
    image_on, mask_on = on(image, mask, np.random.default_rng(5))
    assert torch.allclose(image_off, standardize(image.float() / 255))  # no jitter: unchanged
    assert torch.equal(mask_on, mask_off) and torch.equal(mask_on, mask.long())
    assert (image_on - image_off).abs().mean() > 0.05
    again, _ = on(image, mask, np.random.default_rng(5))
    assert torch.equal(again, image_on)  # seeded: resume-exact


@pytest.mark.parametrize(
    "jitter, check",
    [
        (Photometric(brightness=0.5), lambda a, b: b.mean() != a.mean()),
        (
            Photometric(saturation=0.9),
            lambda a, b: np.ptp(b, axis=0).mean() != np.ptp(a, axis=0).mean(),
        ),
        (Photometric(hue=0.25), lambda a, b: not np.array_equal(np.argmax(a, 0), np.argmax(b, 0))),
    ],
)
def test_each_jitter_does_what_it_says(jitter, check) -> None:
    image = torch.from_numpy(np.random.default_rng(2).uniform(0.12, 0.86, (3, 20, 20)))
    assert check(image.numpy(), jitter(image, np.random.default_rng(3)).numpy())


def test_grey_stays_grey_under_hue_and_saturation() -> None:
    grey = torch.full((3, 4, 4), 0.5)
    out = Photometric(saturation=0.5, hue=0.5)(grey, np.random.default_rng(0))
    assert (out - 0.5).abs().max() <= 1e-5


def test_jitter_strengths_are_validated() -> None:
    with pytest.raises(ArgumentError, match="^hue"):
        TrainConfig(dataset="synthetic", hue=0.7)
    with pytest.raises(ArgumentError, match="^brightness"):
        TrainConfig(dataset="synthetic", brightness=1.0)
