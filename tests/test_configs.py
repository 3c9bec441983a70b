"""Every experiment config under configs/ loads as a TrainConfig and names a registered model;
one runs end to end through ``segnet train --config``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import segnet
from segnet.cli import main
from segnet.engine.checkpoint import load_model
from segnet.engine.config import TrainConfig
from segnet.errors import SegNetError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(CONFIGS.rglob("*.yaml"))
TABLE1 = ["bilinear_interpolation", "segnet_basic", "segnet_basic_encoder_addition",
          "segnet_basic_single_channel_decoder", "fcn_basic", "fcn_basic_no_addition",
          "fcn_basic_no_dim_reduction", "fcn_basic_no_addition_no_dim_reduction"]  # fmt: skip
NETWORKS = ["segnet", "fcn32s", "fcn16s", "fcn8s", "deeplab_largefov", "deconvnet", "unet",
            "segnet_resnet50", "bayesian_segnet", "bayesian_segnet_basic"]  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CONFIGS)) for p in FILES])
def test_config_loads_and_names_a_registered_model(path: Path) -> None:
    config = TrainConfig.from_sources(config_file=str(path), overrides={})
    assert config.model in segnet.list_models(), f"{path}: model {config.model!r} is not registered"
    assert config.lr is not None and config.lr > 0


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CONFIGS)) for p in FILES])
def test_imagenet_encoder_only_where_one_fits(path: Path) -> None:
    pretrained = pytest.importorskip("segnet.models.imagenet")
    values = yaml.safe_load(path.read_text())
    if values.get("encoder_weights") == "imagenet":
        assert values["model"] in pretrained.imagenet_encoders(), (
            f"{path}: no ImageNet encoder for {values['model']}"
        )
    elif values["model"] in pretrained.imagenet_encoders() and "encoder_weights" not in values:
        # from scratch only on purpose: the file says `encoder_weights: null`
        pytest.fail(
            f"{path}: {values['model']} has an ImageNet encoder; set encoder_weights: imagenet "
            "(or null, to train from scratch on purpose)"
        )


def test_every_paper_experiment_has_a_config() -> None:
    expected = {f"camvid/table1/{m}_{w}.yaml" for m in TABLE1 for w in ("median", "natural")}
    expected |= {f"camvid/{net}.yaml" for net in NETWORKS} | {"sunrgbd/segnet.yaml"}
    present = {str(p.relative_to(CONFIGS)) for p in FILES}
    assert expected <= present, sorted(expected - present)


def test_unknown_keys_are_rejected(tmp_path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("model: segnet_basic\ndataset: synthetic\nlearning_rate: 0.1\n")
    with pytest.raises(SegNetError, match="unknown key 'learning_rate'"):
        TrainConfig.from_sources(config_file=str(path), overrides={})


@pytest.mark.parametrize(
    "path", sorted((CONFIGS / "camvid" / "table1").glob("*.yaml")), ids=lambda p: p.stem
)
def test_table1_file_names_match_their_contents(path: Path) -> None:
    values = yaml.safe_load(path.read_text())
    assert path.stem == f"{values['model']}_{values['class_weights']}"
    assert values["dataset"] == "camvid" and values["optimizer"] == "sgd" and values["lr"] == 0.1


@pytest.mark.parametrize("with_matplotlib", [True, False], ids=["plots", "no-matplotlib"])
def test_train_from_config_end_to_end(
    tmp_path, tiny_folder, monkeypatch, capsys, with_matplotlib
) -> None:
    if with_matplotlib:
        pytest.importorskip("matplotlib")
    else:
        monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    out = tmp_path / "run"
    code = main([
        "train", "--config", str(CONFIGS / "camvid" / "table1" / "segnet_basic_median.yaml"),
        "--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3",
        "--max-batches", "1", "--epochs", "1", "--out", str(out),
        "--device", "cpu", "--precision", "fp32", "--num-workers", "0",
    ])  # fmt: skip
    assert code == 0
    for name in ("last.pt", "best.pt", "log.csv", "config.yaml"):
        assert (out / name).is_file(), name
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (
        saved["model"] == "segnet_basic" and saved["batch_size"] == 12 and saved["lr"] == 0.1
    )  # from the file
    assert saved["dataset"] == "folder" and saved["epochs"] == 1  # flags win
    _, config, payload = load_model(out / "best.pt")
    assert config.num_classes == 3 and payload["epoch"] == 1
    printed = capsys.readouterr()
    if with_matplotlib:
        assert (out / "curves.png").stat().st_size > 10_000
    else:
        assert not (out / "curves.png").exists()
        assert (printed.out + printed.err).count("matplotlib is not installed") == 1
