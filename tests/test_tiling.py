"""Opt-in sliding-window inference: tiles of one shape cover the image, their softmax is blended
back; a model that looks at one pixel at a time gives the same map tiled or whole."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import segnet
from conftest import with_trained_bn
from segnet.cli import main
from segnet.engine.inference import (
    TestTimeAugmentation,
    Tiling,
    predict_probabilities,
    tile_starts,
)
from segnet.errors import ArgumentError

CPU = torch.device("cpu")


class Recording(nn.Module):
    """Wraps a model and records the (H, W) of every input it sees."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.sizes = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return self.model(x)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"),
    [(45, 16, 4), (45, 16, 0), (360, 128, 32), (33, 32, 31), (7, 16, 4)],
)
def test_tile_starts_cover_the_axis_with_full_tiles(length, tile, overlap) -> None:
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length  # first at 0, last at the far edge
    assert all(0 < b - a <= tile - overlap for a, b in itertools.pairwise(starts))  # no gap


def test_a_tile_as_large_as_the_image_is_one_pass() -> None:
    model = with_trained_bn(segnet.build_model("segnet_basic", num_classes=4)).eval()
    images = torch.randn(2, 3, 37, 45)
    whole = predict_probabilities(model, images, device=CPU).mean
    tiled = predict_probabilities(model, images, device=CPU, tiling=Tiling(size=(64, 64))).mean
    assert torch.equal(tiled, whole)


@pytest.mark.parametrize("overlap", [0, 4, 9])
def test_a_pixelwise_model_gives_the_same_map_tiled(overlap) -> None:
    torch.manual_seed(0)
    model = Recording(nn.Conv2d(3, 4, 1)).eval()  # no context: tiles cannot change a pixel
    images = torch.randn(2, 3, 37, 45)
    whole = predict_probabilities(model, images, device=CPU).mean
    model.sizes.clear()
    tiled = predict_probabilities(
        model, images, device=CPU, tiling=Tiling(size=(16, 20), overlap=overlap)
    ).mean
    assert torch.allclose(tiled, whole, atol=1e-6)
    assert len(model.sizes) > 4 and set(model.sizes) == {(16, 20)}  # every tile the same shape


class TileVotes(nn.Module):
    """Each call's map votes, everywhere, for the class numbered by the call: tile i says i."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.new_zeros(x.shape[0], 2, *x.shape[-2:])
        logits[:, self.calls] = 10.0
        self.calls += 1
        return logits


def test_across_an_overlap_the_nearer_tile_centre_wins() -> None:
    # Width 40, tiles 24 wide, overlap 8: tiles at columns 0-23 and 16-39 share 16-23. The
    # weights ramp linearly across the overlap, so columns 16-19 follow tile 0 and 20-23 tile 1
    # (equal weights would tie there and hand the whole overlap to one tile).
    labels = predict_probabilities(
        TileVotes(), torch.zeros(1, 3, 16, 40), device=CPU, tiling=Tiling(size=(16, 24), overlap=8)
    ).mean.argmax(1)[0]
    expected = torch.tensor([0] * 20 + [1] * 20)
    assert torch.equal(labels, expected.expand(16, 40))


def test_segnet_tiles_blend_into_one_softmax_with_views_and_samples() -> None:
    model = Recording(segnet.build_model("bayesian_segnet_basic", num_classes=3).eval())
    tiling = Tiling(size=(32, 32), overlap=8)
    probs = predict_probabilities(
        model, torch.randn(1, 3, 50, 70), device=CPU, mc_samples=2,
        tta=TestTimeAugmentation(flip=True), tiling=tiling,
    )  # fmt: skip
    assert probs.mean.shape == (1, 3, 50, 70) and probs.uncertainty.shape == (1, 50, 70)
    assert torch.allclose(probs.mean.sum(1), torch.ones(1, 50, 70), atol=1e-5)
    assert set(model.sizes) == {(32, 32)}
    assert len(model.sizes) == 2 * 2 * len(tiling.windows(50, 70))  # views x samples x tiles


@pytest.mark.parametrize(
    ("size", "overlap", "flag"), [((0, 16), 0, "tile"), ((16, 16), 16, "tile_overlap"),
                                  ((16, 16), -1, "tile_overlap")]
)  # fmt: skip
def test_bad_tiling_is_refused(size, overlap, flag) -> None:
    with pytest.raises(ArgumentError) as caught:
        Tiling(size=size, overlap=overlap)
    assert caught.value.name == flag


def test_cli_tiles_and_refuses_bad_values_in_one_line(checkpoint, tmp_path, capsys) -> None:
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8)).save(image)
    argv = ["predict", "--checkpoint", str(checkpoint), str(image), "--out", str(tmp_path / "o")]
    for bad, flag in (["--tile", "0x16"], "--tile"), (["--tile", "16x16", "--tile-overlap", "16"],
                                                       "--tile-overlap"):  # fmt: skip
        assert main([*argv, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and flag in err
        assert not (tmp_path / "o").exists()
    assert main([*argv, "--tile", "24x32", "--tile-overlap", "8"]) == 0
    assert np.asarray(Image.open(tmp_path / "o" / "a.png")).shape == (40, 56)


def test_evaluate_records_its_tiles(checkpoint, tiny_folder, tmp_path) -> None:
    out = tmp_path / "m.json"
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--data"]
    argv += [str(tiny_folder), "--num-classes", "3", "--out", str(out), "--tile", "16x16"]
    argv += ["--tile-overlap", "4"]
    assert main(argv) == 0
    metrics = json.loads(out.read_text())
    assert metrics["tile"] == [16, 16] and metrics["tile_overlap"] == 4
