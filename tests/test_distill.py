"""Knowledge distillation (engine/distill.py): the loss, a student that learns from a teacher
alone, and the checks on the teacher."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from conftest import write_folder_dataset
from segnet.cli import main
from segnet.data.base import DatasetInfo
from segnet.data.folder import default_palette
from segnet.engine.checkpoint import ModelConfig, read_checkpoint, save_checkpoint
from segnet.engine.config import TrainConfig
from segnet.engine.distill import Distillation, load_teacher
from segnet.engine.train import fit
from segnet.errors import ArgumentError


def _config(tiny_folder, out, **extra) -> TrainConfig:
    values = dict(
        model="segnet_basic", dataset="folder", data=str(tiny_folder), num_classes=3,
        out=str(out), epochs=3, batch_size=2, lr=0.01, num_workers=0, crop=[32, 32],
        hflip=True, precision="fp32",
    )  # fmt: skip
    values.update(extra)
    return TrainConfig(**values)


def test_mix_is_kl_to_the_teacher_over_non_void_pixels_scaled_by_t_squared() -> None:
    torch.manual_seed(0)
    logits, teacher = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    masks = torch.randint(0, 3, (2, 4, 5))
    masks[0, :2] = 255  # void: not counted
    mix = Distillation(teacher=torch.nn.Identity(), weight=0.25, temperature=2.0, ignore_index=255)
    labels_loss = torch.tensor(1.5)
    expected_kl = F.kl_div(
        F.log_softmax(logits / 2, dim=1), F.log_softmax(teacher / 2, dim=1),
        reduction="none", log_target=True,
    ).sum(dim=1)[masks != 255].mean()  # fmt: skip
    got = mix.mix(labels_loss, logits, teacher, masks)
    assert torch.isclose(got, 0.75 * 1.5 + 0.25 * 4 * expected_kl)
    # the teacher's own logits are a perfect student: only the labels' share is left
    assert torch.isclose(mix.mix(labels_loss, teacher, teacher, masks), torch.tensor(0.75 * 1.5))


def test_a_student_taught_by_the_teacher_alone_learns(tmp_path) -> None:
    """distill_weight 1: the labels carry no gradient, so the student learns only if the soft
    targets reach it -- a student that learns nothing scores 0.1-0.2 mIoU here."""
    data = write_folder_dataset(tmp_path / "data", counts={"train": 12, "val": 2})
    recipe = dict(epochs=6, batch_size=4, optimizer="adamw", lr=0.003, class_weights="none",
                  hflip=False, crop=None)  # fmt: skip
    fit(_config(data, tmp_path / "teacher", **recipe), progress=False)
    teacher = tmp_path / "teacher" / "best.pt"
    assert read_checkpoint(teacher)["metrics"]["miou"] > 0.3
    student = _config(data, tmp_path / "student", model="fcn_basic", distill_from=str(teacher),
                      distill_weight=1.0, **recipe)  # fmt: skip
    result = fit(student, progress=False)
    assert result["best"]["miou"] > 0.3
    saved = read_checkpoint(tmp_path / "student" / "last.pt")
    assert saved["train_config"]["distill_from"] == str(teacher)
    start = json.loads((tmp_path / "student" / "summary.json").read_text())["start"]
    assert start["distill"] == {"from": str(teacher), "model": "segnet_basic", "weight": 1.0,
                                "temperature": 1.0}  # fmt: skip


def _model_config(name: str, class_names=("a", "b", "c"), **fields) -> ModelConfig:
    info = DatasetInfo(class_names=class_names, palette=default_palette(len(class_names)),
                       ignore_index=255)  # fmt: skip
    return replace(ModelConfig.for_dataset(name, info), **fields)


def _teacher_file(tmp_path, *, holdout_groups=None, **fields):
    config = _model_config("segnet_basic", **fields)
    path = tmp_path / "teacher.pt"
    trained = {"holdout_groups": holdout_groups}
    save_checkpoint(path, config=config, model=config.build(), train_config=trained)
    return path


def _student() -> ModelConfig:
    return _model_config("fcn_basic")


def test_a_teacher_that_trained_on_the_held_out_groups_is_refused(tmp_path) -> None:
    cpu = torch.device("cpu")
    path = _teacher_file(tmp_path, holdout_groups=None)  # trained on every group
    with pytest.raises(
        ArgumentError, match=r"^distill_from .*trained on seqA, which this run holds out"
    ):
        load_teacher(str(path), student=_student(), holdout_groups=["seqA"], device=cpu,
                     channels_last=False)  # fmt: skip
    path = _teacher_file(tmp_path, holdout_groups=["seqA", "seqB"])
    teacher, config = load_teacher(str(path), student=_student(), holdout_groups=["seqA"],
                                   device=cpu, channels_last=False)  # fmt: skip
    assert config.name == "segnet_basic" and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())


def test_a_teacher_of_other_classes_or_inputs_is_refused(tmp_path) -> None:
    cpu = torch.device("cpu")
    path = _teacher_file(tmp_path, class_names=("a", "b", "x"))
    with pytest.raises(ArgumentError, match=r"^distill_from .*predicts classes a, b, x"):
        load_teacher(str(path), student=_student(), holdout_groups=None, device=cpu,
                     channels_last=False)  # fmt: skip
    path = _teacher_file(tmp_path, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ArgumentError, match=r"^distill_from .*normalised with mean \[0.5"):
        load_teacher(str(path), student=_student(), holdout_groups=None, device=cpu,
                     channels_last=False)  # fmt: skip
    with pytest.raises(ArgumentError, match=r"^distill_from .*missing.pt: file not found"):
        load_teacher(str(tmp_path / "missing.pt"), student=_student(), holdout_groups=None,
                     device=cpu, channels_last=False)  # fmt: skip


def test_cli_bad_distillation_flags_are_one_line_and_write_nothing(
    tiny_folder, tmp_path, capsys
) -> None:
    flags = ["train", "--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3",
             "--epochs", "1", "--num-workers", "0", "--precision", "fp32"]  # fmt: skip
    out = tmp_path / "run"
    assert main([*flags, "--out", str(out), "--distill-from", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--distill-from" in err and "none.pt: file not found" in err
    assert not out.exists()
    assert main([*flags, "--out", str(out), "--distill-weight", "0"]) == 2
    assert "--distill-weight must be in (0, 1]" in capsys.readouterr().err
    assert main([*flags, "--out", str(out), "--distill-temperature", "-1"]) == 2
    assert "--distill-temperature must be positive" in capsys.readouterr().err
