"""The command line end to end, and every bad input: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

import segnet
from segnet.cli import main
from segnet.data.base import DatasetInfo
from segnet.data.folder import default_palette
from segnet.engine.checkpoint import ModelConfig, save_checkpoint


def _fails(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    # Progress bars (carriage-return lines) may precede the error; the error is one line.
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    err = lines[-1]
    assert re.match(r"segnet( [a-z-]+)*: error: ", err), lines
    assert not any("Traceback" in line for line in lines)
    for needle in needles:
        assert needle in err, err
    return err


def test_predict_writes_three_files_per_input(checkpoint, tiny_folder, tmp_path) -> None:
    out = tmp_path / "pred"
    images = tiny_folder / "val" / "images"
    assert main(["predict", "--checkpoint", str(checkpoint), str(images), "--out", str(out)]) == 0
    for stem in ("val_0", "val_1"):
        labels = np.asarray(Image.open(out / f"{stem}.png"))
        assert labels.shape == (32, 48) and labels.dtype == np.uint8 and labels.max() < 3
        assert np.asarray(Image.open(out / f"{stem}_color.png").convert("RGB")).shape == (32, 48, 3)
        assert (out / f"{stem}_overlay.png").is_file()


def test_predict_glob(checkpoint, tiny_folder, tmp_path) -> None:
    pattern = str(tiny_folder / "train" / "images" / "train_[01].png")
    assert (
        main(["predict", "--checkpoint", str(checkpoint), pattern, "--out", str(tmp_path / "p")])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "p").glob("*_color.png")) == [
        "train_0_color.png",
        "train_1_color.png",
    ]


def test_evaluate_writes_metrics_json(checkpoint, tiny_folder, tmp_path, capsys) -> None:
    out = tmp_path / "m.json"
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--data", str(tiny_folder),
            "--num-classes", "3", "--split", "val", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads(out.read_text())
    for key in ("global_accuracy", "class_accuracy", "miou", "bf"):
        assert 0.0 <= metrics[key] <= 1.0
    assert [c["name"] for c in metrics["per_class"]] == ["class_0", "class_1", "class_2"]
    assert "mIoU" in capsys.readouterr().out


def test_data_stats(tiny_folder, tmp_path) -> None:
    out = tmp_path / "s.json"
    assert main(["data", "stats", "--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3",
                 "--out", str(out)]) == 0  # fmt: skip
    stats = json.loads(out.read_text())
    assert len(stats["median_frequency_weights"]) == 3 and stats["num_images"] == 4


def test_corrupt_image(checkpoint, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    _fails(
        capsys,
        ["predict", "--checkpoint", str(checkpoint), str(bad), "--out", str(tmp_path / "o")],
        "bad.png",
    )
    assert not (tmp_path / "o").exists()


def test_half_bad_input_writes_nothing(checkpoint, tiny_folder, tmp_path, capsys) -> None:
    bad = tmp_path / "zz.png"
    bad.write_bytes(b"\x89PNG truncated")
    good = tiny_folder / "val" / "images" / "val_0.png"
    _fails(
        capsys,
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            str(good),
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert not (tmp_path / "o").exists()


def test_mask_size_mismatch(checkpoint, tiny_folder, capsys) -> None:
    mask = tiny_folder / "val" / "masks" / "val_0.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--data", str(tiny_folder),
                    "--num-classes", "3"], "val_0.png", "must match")  # fmt: skip


def test_label_out_of_range(checkpoint, tiny_folder, capsys) -> None:
    mask = tiny_folder / "val" / "masks" / "val_1.png"
    Image.fromarray(np.full((32, 48), 7, np.uint8)).save(mask)
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--data", str(tiny_folder),
                    "--num-classes", "3"], "val_1.png", "[7]")  # fmt: skip


def test_empty_folder(checkpoint, tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    _fails(capsys, ["predict", "--checkpoint", str(checkpoint), str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
           "no images")  # fmt: skip


def test_missing_list_entry(tmp_path, capsys) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train.txt").write_text(
        "/SegNet/CamVid/train/x.png /SegNet/CamVid/trainannot/x.png\n"
    )
    _fails(capsys, ["data", "stats", "--data", str(tmp_path)], "train.txt:1", "does not exist")


def test_checkpoint_of_other_class_count(checkpoint, tmp_path, capsys) -> None:
    data = tmp_path / "d5"
    from conftest import write_folder_dataset

    write_folder_dataset(data, num_classes=5)
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--data", str(data),
                    "--num-classes", "5"], "3 classes")  # fmt: skip


def test_checkpoint_of_other_model(checkpoint, capsys, tmp_path) -> None:
    from segnet.engine.checkpoint import load_model

    with pytest.raises(segnet.SegNetError, match="not 'segnet'"):
        load_model(checkpoint, expect_model="segnet")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 10)
    _fails(
        capsys,
        ["predict", "--checkpoint", str(garbage), str(garbage), "--out", str(tmp_path / "o")],
    )


def test_unknown_model(tiny_folder, tmp_path, capsys) -> None:
    _fails(capsys, ["train", "--model", "segnet_xl", "--dataset", "folder", "--data", str(tiny_folder),
                    "--num-classes", "3", "--out", str(tmp_path / "r")], "segnet_basic")  # fmt: skip
    assert not (tmp_path / "r").exists()


def test_unknown_config_key(tmp_path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model: segnet_basic\nlearning_rate: 0.1\n")
    _fails(capsys, ["train", "--config", str(config)], "learning_rate")


def test_mc_samples_must_be_positive(checkpoint, tmp_path, capsys) -> None:
    argv = ["predict", "--checkpoint", str(checkpoint), "x.png", "--out", "o", "--mc-samples", "0"]
    err = _fails(capsys, argv, "argument --mc-samples: must be >= 1")
    assert err.startswith("segnet predict: error: ")


def test_bayesian_mc_prediction_writes_uncertainty(tmp_path, tiny_folder) -> None:
    info = DatasetInfo(class_names=("a", "b", "c"), palette=default_palette(3), ignore_index=255)
    config = ModelConfig.for_dataset("bayesian_segnet_basic", info)
    ckpt = tmp_path / "bayes.pt"
    save_checkpoint(ckpt, config=config, model=config.build())
    image = tiny_folder / "val" / "images" / "val_0.png"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                str(image),
                "--out",
                str(tmp_path / "o"),
                "--mc-samples",
                "3",
            ]
        )
        == 0
    )
    uncertainty = np.load(tmp_path / "o" / "val_0_uncertainty.npy")
    assert (
        uncertainty.shape == (32, 48) and uncertainty.dtype == np.float32 and uncertainty.max() > 0
    )
    assert (tmp_path / "o" / "val_0_uncertainty.png").is_file()


def test_camvid_without_data_flag(checkpoint, capsys) -> None:
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "camvid"], "--data")


def test_bf_flags(checkpoint, tiny_folder, tmp_path, capsys) -> None:
    base = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--data", str(tiny_folder),
            "--num-classes", "3"]  # fmt: skip
    _fails(capsys, base + ["--bf-tolerance", "1.5"], "--bf-tolerance")
    scores = []
    for extra in ([], ["--bf-tolerance", "0.2"]):
        out = tmp_path / f"m{len(extra)}.json"
        assert main(base + extra + ["--out", str(out)]) == 0
        scores.append(json.loads(out.read_text())["bf"])
    assert scores[1] > scores[0]  # a wider match distance can only match more boundary pixels
