"""Precise BN: recomputed statistics are the population moments of every BN layer's inputs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import segnet
from segnet.cli import main
from segnet.data import open_dataset
from segnet.data.unlabeled import ImageFiles
from segnet.engine.bn import bn_layers, recompute_bn_statistics
from segnet.engine.checkpoint import ModelConfig, load_model, read_checkpoint, save_checkpoint
from segnet.errors import ArgumentError

CPU = torch.device("cpu")


def _briefly_trained(name: str, dataset) -> nn.Module:
    """A few SGD steps in train mode: running stats are now momentum averages, not the truth."""
    model = segnet.build_model(name, num_classes=dataset.info.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for start in (0, 2, 0):
        images, masks = zip(*(dataset[i] for i in (start, start + 1)))
        loss = F.cross_entropy(model(torch.stack(images)), torch.stack(masks), ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def _direct_moments(
    model: nn.Module, dataset, batches: list[list[int]]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Mean and unbiased variance of each BN layer's inputs, gathered by hooks, in float64."""
    model = copy.deepcopy(model).eval()
    layers = bn_layers(model)
    for bn in layers:
        bn.train()  # normalise with batch statistics, as during training; dropout stays off
    seen: dict[nn.Module, list[torch.Tensor]] = {bn: [] for bn in layers}
    hooks = [
        bn.register_forward_pre_hook(lambda m, x: seen[m].append(x[0].double())) for bn in layers
    ]
    for batch in batches:
        model(torch.stack([dataset[i][0] for i in batch]))
    for hook in hooks:
        hook.remove()
    moments = []
    for bn in layers:
        values = torch.cat([x.transpose(0, 1).reshape(x.shape[1], -1) for x in seen[bn]], dim=1)
        moments.append((values.mean(dim=1), values.var(dim=1)))
    return moments


def test_recomputed_statistics_are_population_moments(tmp_path) -> None:
    from conftest import write_folder_dataset

    root = write_folder_dataset(tmp_path / "data", counts={"train": 4})
    odd = root / "train" / "images" / "train_0.png"  # one image of another size: its own batch
    Image.open(odd).resize((40, 40)).save(root / "train" / "images" / "train_9.png")
    Image.open(root / "train" / "masks" / "train_0.png").resize((40, 40), Image.NEAREST).save(
        root / "train" / "masks" / "train_9.png"
    )
    dataset = open_dataset("folder", root=root, split="train", num_classes=3)
    # Bayesian SegNet-Basic: dropout must be off during the pass, or the moments are random.
    model = _briefly_trained("bayesian_segnet_basic", dataset)
    before = [bn.running_mean.clone() for bn in bn_layers(model)]
    expected = _direct_moments(model, dataset, [[0, 1], [2, 3], [4]])  # batch_size=2, size break

    stats = recompute_bn_statistics(model, dataset, device=CPU, batch_size=2)

    layers = bn_layers(model)
    assert stats == {"layers": len(layers), "images": 5} and len(layers) == 8
    for bn, (mean, var), old in zip(layers, expected, before):
        torch.testing.assert_close(bn.running_mean, mean.float(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bn.running_var, var.float(), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(bn.running_mean, old, atol=1e-3)  # really replaced
        assert bn.momentum == 0.1  # restored
    assert not model.training and not any(m.training for m in model.modules())


def test_max_images_and_modes(tiny_folder) -> None:
    dataset = open_dataset("folder", root=tiny_folder, split="train", num_classes=3)
    model = segnet.build_model("segnet_basic", num_classes=3).train()
    stats = recompute_bn_statistics(model, dataset, device=CPU, max_images=2)
    assert stats["images"] == 2
    assert all(m.training for m in model.modules())  # mode it came in
    no_bn = nn.Sequential(nn.Conv2d(3, 3, 1))
    assert recompute_bn_statistics(no_bn, dataset, device=CPU) == {"layers": 0, "images": 0}


def _checkpoint(tmp_path, root) -> tuple:
    dataset = open_dataset("folder", root=root, split="train", num_classes=3)
    model = _briefly_trained("segnet_basic", dataset)
    config = ModelConfig.for_dataset("segnet_basic", dataset.info)
    path = tmp_path / "run" / "best.pt"
    save_checkpoint(
        path, config=config, model=model, epoch=3, metrics={"miou": 0.1}, optimizer={"x": 1}
    )
    return path, model, dataset


def test_bn_stats_cli_writes_loadable_checkpoint(tmp_path, tiny_folder, capsys) -> None:
    path, model, dataset = _checkpoint(tmp_path, tiny_folder)
    flags = [
        "--dataset",
        "folder",
        "--data",
        str(tiny_folder),
        "--num-classes",
        "3",
        "--device",
        "cpu",
    ]
    assert main(["bn-stats", "--checkpoint", str(path), *flags]) == 0
    out = path.with_name("best_precise_bn.pt")
    assert str(out) in capsys.readouterr().out
    loaded, config, payload = load_model(out)
    recompute_bn_statistics(model, dataset, device=CPU)
    for mine, theirs in zip(bn_layers(model), bn_layers(loaded)):
        torch.testing.assert_close(theirs.running_mean, mine.running_mean)
        torch.testing.assert_close(theirs.running_var, mine.running_var)
    assert config.name == "segnet_basic" and payload["epoch"] == 3 and "optimizer" not in payload
    assert payload["precise_bn"]["images"] == 4 and payload["precise_bn"]["split"] == "train"
    assert "precise_bn" not in read_checkpoint(path)  # the source is left alone

    custom = tmp_path / "elsewhere" / "bn.pt"
    assert (
        main(
            [
                "bn-stats",
                "--checkpoint",
                str(path),
                *flags,
                "--out",
                str(custom),
                "--max-images",
                "2",
            ]
        )
        == 0
    )
    assert read_checkpoint(custom)["precise_bn"]["images"] == 2


def test_evaluate_with_precise_bn(tmp_path, tiny_folder, capsys) -> None:
    path, _, _ = _checkpoint(tmp_path, tiny_folder)
    flags = ["--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3",
             "--device", "cpu", "--precision", "fp32"]  # fmt: skip
    metrics = tmp_path / "m.json"
    assert (
        main(["evaluate", "--checkpoint", str(path), *flags, "--precise-bn", "--out", str(metrics)])
        == 0
    )
    assert "precise BN: 8 BN layers recomputed over 4 training images" in capsys.readouterr().out
    assert json.loads(metrics.read_text())["precise_bn"] == "frames"  # the flag alone
    assert "precise_bn" not in read_checkpoint(path)  # evaluate never writes the checkpoint


def test_bn_stats_errors(tmp_path, tiny_folder, capsys) -> None:
    path, _, _ = _checkpoint(tmp_path, tiny_folder)
    code = main(["bn-stats", "--checkpoint", str(path), "--dataset", "folder", "--data", str(tiny_folder),
                 "--num-classes", "4", "--device", "cpu"])  # fmt: skip
    assert code == 2 and "trained for 3 classes" in capsys.readouterr().err
    assert main(["bn-stats", "--checkpoint", str(path), "--batch-size", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "segnet bn-stats: error: argument --batch-size: must be >= 1, got 0"


def test_blend_keeps_part_of_the_previous_statistics(tiny_folder) -> None:
    dataset = open_dataset("folder", root=tiny_folder, split="train", num_classes=3)
    model = _briefly_trained("segnet_basic", dataset)
    replaced, blended = copy.deepcopy(model), copy.deepcopy(model)
    recompute_bn_statistics(replaced, dataset, device=CPU)
    recompute_bn_statistics(blended, dataset, device=CPU, blend=0.25)
    for old, new, mixed in zip(bn_layers(model), bn_layers(replaced), bn_layers(blended)):
        shift = (new.running_mean - old.running_mean).square()
        # the mixture 0.25 * new + 0.75 * old: its mean, and its variance with the means' spread
        mean = 0.25 * new.running_mean + 0.75 * old.running_mean
        var = 0.25 * new.running_var + 0.75 * old.running_var + 0.25 * 0.75 * shift
        torch.testing.assert_close(mixed.running_mean, mean)
        torch.testing.assert_close(mixed.running_var, var)
    with pytest.raises(ArgumentError, match="blend"):
        recompute_bn_statistics(model, dataset, device=CPU, blend=0.0)


def test_unlabeled_images_give_the_datasets_statistics(tiny_folder) -> None:
    dataset = open_dataset("folder", root=tiny_folder, split="train", num_classes=3)
    files = ImageFiles(sorted((tiny_folder / "train" / "images").iterdir()))
    assert files.names == list(dataset.names) and torch.equal(files[1], dataset[1][0])
    model = _briefly_trained("segnet_basic", dataset)
    from_files, from_dataset = copy.deepcopy(model), copy.deepcopy(model)
    recompute_bn_statistics(from_files, files, device=CPU, batch_size=3)
    recompute_bn_statistics(from_dataset, dataset, device=CPU, batch_size=3)
    for a, b in zip(bn_layers(from_files), bn_layers(from_dataset)):
        assert torch.equal(a.running_mean, b.running_mean)
        assert torch.equal(a.running_var, b.running_var)


def test_bn_stats_adapts_a_checkpoint_to_unlabeled_images(tmp_path, tiny_folder, capsys) -> None:
    path, _, _ = _checkpoint(tmp_path, tiny_folder)
    data = ["--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3"]
    assert main(["bn-stats", "--checkpoint", str(path), *data, "--device", "cpu"]) == 0
    precise = path.with_name("best_precise_bn.pt")
    images = tiny_folder / "val" / "images"
    argv = ["bn-stats", "--checkpoint", str(precise), "--images", str(images), "--blend", "0.5",
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "adapted BN: 8 BN layers recomputed over 2 images to adapt to, 50%" in printed
    out = path.with_name("best_precise_bn_adapted.pt")
    assert str(out) in printed

    expected, _, _ = load_model(precise)
    recompute_bn_statistics(expected, ImageFiles(sorted(images.iterdir())), device=CPU, blend=0.5)
    loaded, _, payload = load_model(out)
    for mine, theirs in zip(bn_layers(expected), bn_layers(loaded)):
        torch.testing.assert_close(theirs.running_mean, mine.running_mean)
        torch.testing.assert_close(theirs.running_var, mine.running_var)
    record = payload["bn_adapted"]
    assert record["images"] == 2 and record["blend"] == 0.5 and record["source"] == str(precise)
    assert "precise_bn" not in payload  # the statistics it described are gone
    packed = tmp_path / "adapted_weights.pt"
    assert (
        main(["export", "--checkpoint", str(out), "--format", "weights", "--out", str(packed)]) == 0
    )
    assert read_checkpoint(packed)["bn_adapted"] == record  # the fp16 weights say so too


def test_evaluate_and_predict_adapt_as_bn_stats_does(tmp_path, tiny_folder) -> None:
    path, _, _ = _checkpoint(tmp_path, tiny_folder)
    images = tiny_folder / "val" / "images"
    adapted = tmp_path / "adapted.pt"
    argv = ["bn-stats", "--checkpoint", str(path), "--images", str(images), "--out", str(adapted),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    scored = {}
    for name, checkpoint, extra in [("plain", path, []), ("saved", adapted, []),
                                    ("flag", path, ["--adapt-bn", "1"])]:  # fmt: skip
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--data",
                     str(tiny_folder), "--num-classes", "3", "--device", "cpu", "--precision",
                     "fp32", "--out", str(out), *extra]) == 0  # fmt: skip
        scored[name] = json.loads(out.read_text())
    assert scored["flag"]["confusion_matrix"] == scored["saved"]["confusion_matrix"]
    assert scored["flag"]["confusion_matrix"] != scored["plain"]["confusion_matrix"]
    assert scored["flag"]["adapt_bn"] == 1 and scored["plain"]["adapt_bn"] is None

    labels = {}
    for name, checkpoint, extra in [("saved", adapted, []), ("flag", path, ["--adapt-bn", "1"])]:
        out = tmp_path / f"predicted_{name}"
        assert main(["predict", "--checkpoint", str(checkpoint), str(images), "--out", str(out),
                     "--device", "cpu", *extra]) == 0  # fmt: skip
        labels[name] = [np.array(Image.open(p)) for p in sorted(out.glob("val_?.png"))]
    assert len(labels["flag"]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(labels["flag"], labels["saved"]))


def test_precise_bn_over_the_runs_augmented_samples(tmp_path, tiny_folder, capsys) -> None:
    from segnet.data.transforms import AugmentedDataset
    from segnet.engine.config import TrainConfig
    from segnet.engine.prepare import training_augment

    dataset = open_dataset("folder", root=tiny_folder, split="train", num_classes=3)
    model = _briefly_trained("segnet_basic", dataset)
    run = TrainConfig(dataset="folder", data=str(tiny_folder), num_classes=3, crop=[32, 32],
                      scale=[0.8, 1.2], hflip=True, brightness=0.5, gamma=0.5, seed=3)  # fmt: skip
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, config=ModelConfig.for_dataset("segnet_basic", dataset.info),
                    model=model, train_config=run.to_dict())  # fmt: skip
    data = ["--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3",
            "--device", "cpu"]  # fmt: skip
    outs = {samples: tmp_path / f"{samples}.pt" for samples in ("frames", "augmented")}
    for samples, out in outs.items():
        argv = ["bn-stats", "--checkpoint", str(path), *data, "--precise-bn", samples,
                "--out", str(out)]  # fmt: skip
        assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "as its run augmented them: flips, 0.8-1.2x scale, 32x32 crops, colour jitter " \
        "(brightness 0.5, gamma 0.5)" in printed  # fmt: skip

    # The run's own augmentation with its seed's first-epoch draws: the statistics it tracked.
    augmented = AugmentedDataset(dataset, training_augment(run, ignore_index=255), seed=3)
    recompute_bn_statistics(model, augmented, device=CPU)
    loaded, _, payload = load_model(outs["augmented"])
    plain, _, frames_payload = load_model(outs["frames"])
    for mine, theirs in zip(bn_layers(model), bn_layers(loaded)):
        torch.testing.assert_close(theirs.running_mean, mine.running_mean)
        torch.testing.assert_close(theirs.running_var, mine.running_var)
    first = bn_layers(plain)[0].running_var, bn_layers(loaded)[0].running_var
    assert not torch.allclose(*first, rtol=1e-2)  # jittered inputs: other statistics
    assert payload["precise_bn"]["samples"] == "augmented"
    assert frames_payload["precise_bn"]["samples"] == "frames"

    metrics = tmp_path / "m.json"
    argv = ["evaluate", "--checkpoint", str(path), *data, "--precision", "fp32",
            "--precise-bn", "augmented", "--out", str(metrics)]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(metrics.read_text())["precise_bn"] == "augmented"


def test_augmented_precise_bn_needs_the_runs_config(tmp_path, tiny_folder, capsys) -> None:
    path, _, _ = _checkpoint(tmp_path, tiny_folder)  # saved without a train_config
    data = ["--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3"]
    assert main(["bn-stats", "--checkpoint", str(path), *data, "--precise-bn", "augmented"]) == 2
    err = capsys.readouterr().err.strip()
    assert "records no training config" in err and "--precise-bn frames" in err
    argv = ["bn-stats", "--checkpoint", str(path), "--images", str(tiny_folder), "--precise-bn"]
    assert main(argv) == 2
    assert "give one of them" in capsys.readouterr().err
    assert not list(path.parent.glob("*_precise_bn.pt")) + list(path.parent.glob("*_adapted.pt"))
