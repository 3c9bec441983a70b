"""Training engine: loss normalisation, checkpoints, logs, exact resume."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import write_folder_dataset
from segnet import SegNetError
from segnet.cli import main
from segnet.data import transforms
from segnet.data.transforms import AugmentedDataset, PadCollate
from segnet.deploy import runtime
from segnet.engine.averaging import FILE as AVERAGED_FILE
from segnet.engine.averaging import WeightAverage, window_start
from segnet.engine.bn import bn_layers, recompute_bn_statistics
from segnet.engine.checkpoint import load_model, read_checkpoint
from segnet.engine.config import TrainConfig
from segnet.engine.prepare import training_augment, training_splits
from segnet.engine.train import SegmentationLoss, fit
from segnet.errors import ArgumentError
from segnet.models import model_entry


def test_loss_is_normalised_by_non_void_pixels() -> None:
    logits = torch.randn(2, 3, 4, 4)
    masks = torch.randint(0, 3, (2, 4, 4))
    masks[0, 0] = 255
    weight = torch.tensor([1.0, 2.0, 0.5])
    loss = SegmentationLoss(weight, ignore_index=255)(logits, masks)
    per_pixel = F.cross_entropy(logits, masks, weight=weight, ignore_index=255, reduction="none")
    assert torch.isclose(loss, per_pixel.sum() / (masks != 255).sum())
    torch_mean = F.cross_entropy(logits, masks, weight=weight, ignore_index=255)
    assert not torch.isclose(loss, torch_mean)  # torch divides by the sum of weights instead


def test_paper_learning_rates() -> None:
    assert model_entry("segnet_basic").default_lr == 0.1 == model_entry("fcn_basic").default_lr
    assert model_entry("bilinear_interpolation").default_lr == 0.1
    assert model_entry("segnet").default_lr == 0.001 == model_entry("deconvnet").default_lr
    assert TrainConfig(dataset="synthetic").lr == 0.1


def test_config_errors_name_the_key_and_the_cli_names_the_flag() -> None:
    with pytest.raises(ArgumentError, match="^epochs must") as caught:
        TrainConfig(dataset="synthetic", epochs=0)
    assert caught.value.as_flag() == "--epochs must be at least 1"
    with pytest.raises(ArgumentError, match="^batch_size must") as caught:
        TrainConfig(dataset="synthetic", batch_size=0)
    assert caught.value.as_flag().startswith("--batch-size must")
    with pytest.raises(SegNetError, match="^data must"):
        TrainConfig(dataset="camvid")
    with pytest.raises(SegNetError, match="^crop must"):
        TrainConfig(dataset="synthetic", crop=[8, 8])


def _config(tiny_folder, out, **extra) -> TrainConfig:
    values = dict(
        model="segnet_basic",
        dataset="folder",
        data=str(tiny_folder),
        num_classes=3,
        out=str(out),
        epochs=2,
        batch_size=2,
        lr=0.01,
        num_workers=0,
        crop=[32, 32],
        hflip=True,
        precision="fp32",
    )
    values.update(extra)
    return TrainConfig(**values)


def test_fit_writes_checkpoints_and_log(tiny_folder, tmp_path) -> None:
    result = fit(_config(tiny_folder, tmp_path / "run"), progress=False)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"last.pt", "best.pt", "log.csv", "config.yaml"}
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[-1]["miou"] != ""
    last = read_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and "optimizer" in last and last["train_config"]["lr"] == 0.01
    _, config, best = load_model(run / "best.pt")
    assert config.name == "segnet_basic" and config.num_classes == 3
    # best.pt holds the epoch with the highest logged val mIoU, and says so
    logged = {int(r["epoch"]): float(r["miou"]) for r in rows}
    assert result["best"]["miou"] == max(logged.values()) == best["metrics"]["miou"]
    assert best["epoch"] == result["best"]["epoch"] and logged[best["epoch"]] == max(
        logged.values()
    )


def test_auto_precision_trains_in_bf16_on_a_cpu_with_amx(
    tiny_folder, tmp_path, monkeypatch
) -> None:
    # deploy/runtime.py: bf16 autocast ran a SegNet step 3.4x fp32 on a Xeon with AMX
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: True)
    fit(_config(tiny_folder, tmp_path / "amx", epochs=1, max_batches=1, precision="auto"))
    assert (
        json.loads((tmp_path / "amx" / "summary.json").read_text())["start"]["precision"] == "bf16"
    )


def test_start_summary_names_the_dropout_of_the_model(tiny_folder, tmp_path, capsys) -> None:
    # Bayesian SegNet-Basic's config names only the model; the summary says what dropout it has
    fit(_config(tiny_folder, tmp_path / "bayes", model="bayesian_segnet_basic", epochs=1,
                max_batches=1), progress=True)  # fmt: skip
    printed = capsys.readouterr().out
    assert "parameters; dropout 0.5 in 4 layer(s)) on folder" in printed
    start = json.loads((tmp_path / "bayes" / "summary.json").read_text())["start"]
    assert start["dropout"] == {"layers": 4, "rates": [0.5]}
    fit(_config(tiny_folder, tmp_path / "plain", epochs=1, max_batches=1), progress=True)
    assert "parameters) on folder" in capsys.readouterr().out
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["start"]["dropout"] is None


def test_resume_continues_exactly(tiny_folder, tmp_path) -> None:
    fit(_config(tiny_folder, tmp_path / "straight", epochs=3), progress=False)
    fit(_config(tiny_folder, tmp_path / "split", epochs=1), progress=False)
    fit(_config(tiny_folder, tmp_path / "split", epochs=3), resume=True, progress=False)
    a = read_checkpoint(tmp_path / "straight" / "last.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "split" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = list(csv.DictReader((tmp_path / "split" / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]


def test_time_limit_stops_resumable_and_resuming_ends_as_an_uninterrupted_run(
    tiny_folder, tmp_path, capsys
) -> None:
    """A limit shorter than one epoch: the launch still trains one (no epoch is ever skipped
    for lack of an estimate), saves it, says how to go on; a resume finishes exactly."""
    fit(_config(tiny_folder, tmp_path / "straight", epochs=3), progress=False)
    run = tmp_path / "limited"
    result = fit(_config(tiny_folder, run, epochs=3, time_limit=1e-6))
    assert result["stopped_at"] == 1 and result["epochs_run"] == 1
    assert "stopped by the time limit after epoch 1 of 3" in capsys.readouterr().out
    end = json.loads((run / "summary.json").read_text())["end"]
    assert end["time_limited"] and end["epochs"] == 1 and end["epochs_planned"] == 3
    assert read_checkpoint(run / "last.pt")["epoch"] == 1
    # a resumed launch gets the run's limit afresh ...
    assert main(["train", "--resume", str(run), "--num-workers", "0"]) == 0
    assert "stopped by the time limit after epoch 2 of 3" in capsys.readouterr().out
    # ... and may change it: it says how long a launch runs, not what the run learns
    assert main(["train", "--resume", str(run), "--time-limit", "0", "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "done: 3 epochs" in printed and "continue with" not in printed
    a = read_checkpoint(tmp_path / "straight" / "last.pt")["state_dict"]
    b = read_checkpoint(run / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_checkpoint(run / "last.pt")["train_config"]["time_limit"] == 0


def test_time_limit_cli_says_how_to_continue(tiny_folder, tmp_path, capsys) -> None:
    flags = ["--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3",
             "--num-workers", "0", "--crop", "32", "32", "--val-every", "2"]  # fmt: skip
    run = tmp_path / "run"
    assert main(["train", *flags, "--out", str(run), "--epochs", "3", "--time-limit", "1e-6"]) == 0
    printed = capsys.readouterr().out
    assert "no validation yet" in printed  # stopped before epoch 2's validation
    assert f"continue with: segnet train --resume {run}" in printed
    assert main(["train", *flags, "--out", str(tmp_path / "x"), "--time-limit", "-1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "segnet: error: --time-limit must be 0 (no limit) or more minutes, finite"
    )


def test_each_epoch_line_says_how_long_the_remaining_epochs_take(
    tiny_folder, tmp_path, capsys
) -> None:
    from segnet.engine.summary import format_duration

    fit(_config(tiny_folder, tmp_path / "run", epochs=2, max_batches=1))
    lines = [t for t in capsys.readouterr().out.splitlines() if t.startswith("epoch ")]
    assert "of epochs left" in lines[0] and "left" not in lines[1]  # none after the last
    assert [format_duration(s) for s in (40.4, 89, 3900, 7260)] == [
        "40 s",
        "1 min",
        "1 h 05 min",
        "2 h 01 min",
    ]


def test_step_bars_only_on_a_terminal(tiny_folder, tmp_path, monkeypatch, capsys) -> None:
    """A log file (nohup) gets the epoch lines but not every redraw of the step bar."""
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for name, stream in (("log", io.StringIO()), ("terminal", Terminal())):
        monkeypatch.setattr("sys.stderr", stream)
        fit(_config(tiny_folder, tmp_path / name, epochs=1, max_batches=2))
        assert ("it/s" in stream.getvalue()) == (name == "terminal"), name
        assert "epoch 1: loss" in capsys.readouterr().out, name  # the epoch line either way


def test_time_limit_is_judged_by_the_longest_epoch_so_far() -> None:
    from segnet.engine.distributed import ALONE
    from segnet.engine.train import _out_of_time

    assert not _out_of_time(0, elapsed=1e9, longest=1e9, group=ALONE)  # 0: no limit
    assert not _out_of_time(1.0, elapsed=50.0, longest=9.0, group=ALONE)  # ends at 59 s of 60
    assert _out_of_time(1.0, elapsed=50.0, longest=11.0, group=ALONE)  # would end at 61 s


def test_device_augment_trains_the_same_batches(tiny_folder, tmp_path, capsys) -> None:
    """Samples decoded once and augmented on the device (here the CPU): the loader's draws and
    order, so the weights match a loader run's bit for bit -- also when a run switches on resume."""
    jitter = dict(scale=[0.75, 1.25], brightness=0.3, hue=0.03, gamma=0.5, num_workers=1)
    fit(_config(tiny_folder, tmp_path / "loader", **jitter), progress=False)
    fit(_config(tiny_folder, tmp_path / "device", device_augment=True, **jitter))
    assert "decoded once, augmented on cpu" in capsys.readouterr().out
    fit(_config(tiny_folder, tmp_path / "switch", epochs=1, **jitter), progress=False)
    fit(_config(tiny_folder, tmp_path / "switch", device_augment=True, **jitter), resume=True,
        progress=False)  # fmt: skip
    a = read_checkpoint(tmp_path / "loader" / "last.pt")["state_dict"]
    for run in ("device", "switch"):
        b = read_checkpoint(tmp_path / run / "last.pt")["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), run


def test_device_augment_that_does_not_fit_stops_in_one_line(
    tiny_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(transforms, "_free_bytes", lambda device: 1000)
    flags = ["--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3"]
    out = tmp_path / "run"
    assert main(["train", *flags, "--out", str(out), "--epochs", "1", "--device-augment"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segnet: error: --device-augment the 4 training images need about")
    assert len(err.splitlines()) == 1 and not (out.exists() and any(out.iterdir()))


def test_training_learns(tmp_path) -> None:
    """Coloured class blocks: a few dozen steps must beat chance (mIoU ~0.2) clearly."""
    data = write_folder_dataset(tmp_path / "data", counts={"train": 12, "val": 2})
    cfg = _config(
        data,
        tmp_path / "run",
        epochs=6,
        batch_size=4,
        optimizer="adamw",
        lr=0.003,
        class_weights="none",
        hflip=False,
        crop=None,
    )
    result = fit(cfg, progress=False)
    losses = [float(r["train_loss"]) for r in csv.DictReader((tmp_path / "run" / "log.csv").open())]
    assert losses[-1] < 0.8 * losses[0]
    assert result["best"]["miou"] > 0.3  # a model that learns nothing scores 0.1-0.2


def test_init_weights_warm_starts_from_a_checkpoint(tiny_folder, tmp_path) -> None:
    fit(_config(tiny_folder, tmp_path / "stage1", epochs=1), progress=False)
    stage1 = read_checkpoint(tmp_path / "stage1" / "last.pt")["state_dict"]
    # max_batches=1 with lr ~0 (warm-up): the weights must start where stage 1 ended, not at init
    cfg = _config(
        tiny_folder,
        tmp_path / "stage2",
        epochs=1,
        lr=1e-12,
        max_batches=1,
        optimizer="adamw",
        init_weights=str(tmp_path / "stage1" / "last.pt"),
    )
    fit(cfg, progress=False)
    stage2 = read_checkpoint(tmp_path / "stage2" / "last.pt")
    conv = next(k for k in stage1 if k.endswith("weight") and stage1[k].dim() == 4)
    assert torch.allclose(stage2["state_dict"][conv], stage1[conv], atol=1e-6)
    assert {float(s["step"]) for s in stage2["optimizer"]["state"].values()} == {
        1.0
    }  # a fresh optimizer
    assert stage2["train_config"]["init_weights"].endswith("last.pt")


def test_init_weights_errors_name_the_flag(tiny_folder, tmp_path) -> None:
    with pytest.raises(SegNetError, match="init_weights .*missing.pt: file not found"):
        fit(
            _config(tiny_folder, tmp_path / "a", init_weights=str(tmp_path / "missing.pt")),
            progress=False,
        )
    fit(_config(tiny_folder, tmp_path / "basic", epochs=1, max_batches=1), progress=False)
    with pytest.raises(SegNetError, match="^init_weights .*holds a 'segnet_basic' model"):
        fit(_config(tiny_folder, tmp_path / "b", model="fcn_basic", init_weights=str(tmp_path / "basic" / "last.pt")),
            progress=False)  # fmt: skip
    assert not (tmp_path / "b").exists()  # nothing written for a run that never started


def test_images_of_different_sizes_train_in_padded_batches(tmp_path) -> None:
    root = write_folder_dataset(tmp_path / "mixed", counts={"train": 4, "val": 1})
    from PIL import Image  # one training pair of another size

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(
        root / "train/images/train_0.png"
    )
    Image.fromarray(rng.integers(0, 3, (40, 56), dtype=np.uint8)).save(
        root / "train/masks/train_0.png"
    )
    collate = PadCollate(ignore_index=255)
    images, masks = collate([(torch.ones(3, 32, 48), torch.zeros(32, 48, dtype=torch.long)),
                             (torch.ones(3, 40, 56), torch.ones(40, 56, dtype=torch.long))])  # fmt: skip
    assert images.shape == (2, 3, 40, 56) and masks.shape == (2, 40, 56)
    assert (
        (masks[0, 32:] == 255).all()
        and (masks[0, :, 48:] == 255).all()
        and (images[0, :, 32:] == 0).all()
    )
    config = _config(root, tmp_path / "run", epochs=1, batch_size=4, crop=None)
    assert fit(config, progress=False)["epochs_run"] == 1


def test_a_corrupt_val_image_stops_training_before_the_first_epoch(tiny_folder, tmp_path) -> None:
    (tiny_folder / "val" / "images" / "val_1.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(SegNetError, match=r"1 problem\(s\) in the data, the first: .*val_1.png"):
        fit(_config(tiny_folder, tmp_path / "run"), progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_weight_average_is_a_running_mean_that_restarts_when_its_window_moves() -> None:
    model = torch.nn.Linear(2, 1)
    average = WeightAverage()
    for epoch, value in ((3, 1.0), (4, 2.0), (5, 6.0)):
        torch.nn.init.constant_(model.weight, value)
        average.update(model, epoch=epoch, first=3)
    assert average.epochs == [3, 4, 5] and torch.allclose(average.mean["weight"], torch.tensor(3.0))
    average.update(model, epoch=6, first=4)  # a resumed run given more epochs: the window moved
    assert average.epochs == [6] and torch.allclose(average.mean["weight"], torch.tensor(6.0))
    assert (
        window_start(epochs=10, average_last=3) == 8 and window_start(epochs=2, average_last=5) == 1
    )


def test_average_last_saves_averaged_weights_with_recomputed_bn_and_resumes_exactly(
    tiny_folder, tmp_path, monkeypatch, capsys
) -> None:
    import segnet.engine.train as train

    config = dict(epochs=3, average_last=2, brightness=0.5)
    fit(_config(tiny_folder, tmp_path / "straight", **config), progress=True)
    printed = capsys.readouterr().out
    assert "weights averaged over the last 2 epoch(s)" in printed  # the start summary
    assert "weight average of epochs 2-3, BN over 4 augmented training images: val G" in printed
    assert "; weight average of epochs 2-3: G" in printed  # the end summary
    straight = read_checkpoint(tmp_path / "straight" / AVERAGED_FILE)
    assert straight["epoch"] == 3 and straight["metrics"]["averaged"]["epochs"] == [2, 3]
    assert 0.0 <= straight["metrics"]["miou"] <= 1.0

    # the same run killed during epoch 3, then resumed: the average continues from last.pt
    real_epoch = train._train_epoch

    def killed_in_epoch_3(run, epoch, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(run, epoch, **kwargs)

    monkeypatch.setattr(train, "_train_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        fit(_config(tiny_folder, tmp_path / "split", **config), progress=False)
    epoch_2 = read_checkpoint(tmp_path / "split" / "last.pt")
    assert epoch_2["average"]["epochs"] == [2] and not (tmp_path / "split" / AVERAGED_FILE).exists()
    monkeypatch.setattr(train, "_train_epoch", real_epoch)
    fit(_config(tiny_folder, tmp_path / "split", **config), resume=True, progress=False)
    split = read_checkpoint(tmp_path / "split" / AVERAGED_FILE)
    assert all(
        torch.equal(straight["state_dict"][k], split["state_dict"][k]) for k in split["state_dict"]
    )

    # the parameters are the mean of epoch 2's and epoch 3's; BN statistics are recomputed
    epoch_3 = read_checkpoint(tmp_path / "split" / "last.pt")
    w2, w3, averaged = epoch_2["state_dict"], epoch_3["state_dict"], split["state_dict"]
    model = load_model(tmp_path / "split" / AVERAGED_FILE)[0]
    for name, _ in model.named_parameters():
        assert torch.allclose(averaged[name], (w2[name] + w3[name]) / 2, atol=1e-6)
    means = [k for k in averaged if k.endswith("running_mean")]
    assert means and not any(torch.allclose(averaged[k], w3[k]) for k in means)
    # ... over the training samples as the last epoch (index 2) augmented them, not clean frames
    run = _config(tiny_folder, tmp_path / "split", **config)
    samples = AugmentedDataset(training_splits(run)[0], training_augment(run, ignore_index=255),
                               seed=run.seed)  # fmt: skip
    samples.set_epoch(2)
    recomputed, clean = copy.deepcopy(model), copy.deepcopy(model)
    for target, images in ((recomputed, samples), (clean, samples.dataset)):  # the run's batches
        recompute_bn_statistics(target, images, device=torch.device("cpu"), batch_size=2)
    for ours, theirs, frames in zip(bn_layers(model), bn_layers(recomputed), bn_layers(clean)):
        torch.testing.assert_close(ours.running_var, theirs.running_var)
        assert not torch.allclose(ours.running_var, frames.running_var, rtol=1e-3)
    assert split["metrics"]["averaged"]["bn_samples"] == "augmented"
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())["end"]
    assert summary["averaged"]["miou"] == pytest.approx(split["metrics"]["miou"])


def test_average_last_must_not_be_negative() -> None:
    with pytest.raises(ArgumentError, match="^average_last must be 0") as caught:
        TrainConfig(dataset="synthetic", average_last=-1)
    assert caught.value.as_flag().startswith("--average-last must")
