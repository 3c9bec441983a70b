"""Logit adjustment (engine/adjust.py): the offsets, where the class weights come from, one
evaluation pass scoring several taus, and an export that folds them in. Every model's fold is
in test_all_models.py."""

from __future__ import annotations

import json

import pytest
import torch

from segnet.cli import main
from segnet.data import open_dataset
from segnet.data.stats import resolve_class_weights
from segnet.engine.adjust import adjust_model, logit_offsets, training_class_weights
from segnet.engine.checkpoint import load_model, read_checkpoint
from segnet.engine.evaluate import evaluate
from segnet.errors import ArgumentError


def test_offsets_undo_the_weights_up_to_a_constant() -> None:
    weights = torch.tensor([0.5, 2.0, 0.0, 1.0])
    assert torch.equal(logit_offsets(weights, 0.0), torch.zeros(4))
    offsets = logit_offsets(weights, 1.0)
    assert offsets[2] == 0  # a class absent from training: no weight to undo
    present = torch.tensor([0, 1, 3])
    assert offsets[present].sum().abs() < 1e-6  # centred
    # log(w_c) + offset_c is the same for every weighted class: the re-weighting is gone
    undone = weights[present].log() + offsets[present]
    torch.testing.assert_close(undone, undone[:1].expand(3))
    torch.testing.assert_close(logit_offsets(weights, -0.5), -0.5 * offsets)
    with pytest.raises(ArgumentError, match="every class weight is 0"):
        logit_offsets(torch.zeros(3), 1.0)


def _train(tiny_folder, out, *extra: str) -> None:
    assert main(["train", "--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3",
                 "--out", str(out), "--epochs", "1", "--num-workers", "0", *extra]) == 0  # fmt: skip


@pytest.fixture
def trained(tiny_folder, tmp_path):
    """A 1-epoch SegNet-Basic on the tiny folder data with median-frequency weights."""
    _train(tiny_folder, tmp_path / "run", "--class-weights", "median")
    return tmp_path / "run" / "last.pt"


def test_class_weights_are_stored_or_recomputed(trained, tiny_folder, capsys) -> None:
    payload = read_checkpoint(trained)
    expected = resolve_class_weights("median", open_dataset("folder", root=tiny_folder, split="train",
                                                            num_classes=3))  # fmt: skip
    torch.testing.assert_close(torch.tensor(payload["class_weights"]), expected)
    older = {k: v for k, v in payload.items() if k != "class_weights"}  # before 2026-12-07
    torch.testing.assert_close(training_class_weights(older, path=trained), expected)
    moved = {**older, "train_config": {**older["train_config"], "data": str(tiny_folder / "gone")}}
    with pytest.raises(ArgumentError, match="predates stored class weights.*not usable here"):
        training_class_weights(moved, path=trained)
    natural = {**older, "train_config": {**older["train_config"], "class_weights": "natural"}}
    with pytest.raises(ArgumentError, match="trained without class weights"):
        training_class_weights(natural, path=trained)


def test_one_pass_scores_each_offset(trained, tiny_folder) -> None:
    model, _, _ = load_model(trained)
    val = open_dataset("folder", root=tiny_folder, split="val", num_classes=3)
    toward_b = torch.tensor([0.0, 1e3, 0.0])  # every pixel becomes class 1
    metrics = evaluate(model, val, device=torch.device("cpu"), progress=False,
                       offsets=[torch.zeros(3), toward_b])  # fmt: skip
    same, all_b = metrics["adjusted"]
    assert same["confusion_matrix"] == metrics["confusion_matrix"] and same["bf"] == metrics["bf"]
    matrix = torch.tensor(all_b["confusion_matrix"])  # [target][pred]
    assert matrix[:, 1].sum() == matrix.sum() > 0
    assert "adjusted" not in evaluate(model, val, device=torch.device("cpu"), progress=False)


def test_evaluate_sweeps_and_export_folds_the_chosen_tau(trained, tiny_folder, tmp_path, capsys):
    data = ["--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3"]
    sweep = tmp_path / "sweep.json"
    assert main(["evaluate", "--checkpoint", str(trained), *data, "--out", str(sweep),
                 "--logit-adjust", "0", "3"]) == 0  # fmt: skip
    assert "logit adjustment:" in capsys.readouterr().out
    found = json.loads(sweep.read_text())
    assert [row["tau"] for row in found["logit_adjust"]] == [0, 3]
    assert found["logit_adjust"][0]["confusion_matrix"] == found["confusion_matrix"]

    # tau 3 folded into fp16 weights scores what the sweep's tau 3 scored (to fp16 rounding)
    small = tmp_path / "small.pt"
    assert main(["export", "--checkpoint", str(trained), "--format", "weights", "--out",
                 str(small), "--logit-adjust", "3"]) == 0  # fmt: skip
    payload = read_checkpoint(small)
    assert payload["logit_adjust"]["tau"] == 3 and payload["logit_adjust"]["layer"] == "classifier"
    assert payload["class_weights"] == pytest.approx(read_checkpoint(trained)["class_weights"])
    scored = tmp_path / "small.json"
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(small), *data, "--out", str(scored),
                 "--logit-adjust", "0"]) == 0  # fmt: skip
    assert f"(on top of the tau 3 folded into {small})" in capsys.readouterr().out
    predicted = torch.tensor(json.loads(scored.read_text())["confusion_matrix"]).sum(0)  # per class
    swept = torch.tensor(found["logit_adjust"][1]["confusion_matrix"]).sum(0)
    plain = torch.tensor(found["confusion_matrix"]).sum(0)
    # an untrained net's near-ties move a few pixels under fp16; tau 3 moves over 10% of them
    assert (predicted - swept).abs().sum() <= 0.01 * swept.sum()
    assert (plain - swept).abs().sum() >= 0.1 * swept.sum()

    # an adjusted file adjusted again adds to its tau; its stored weights need no data
    model, config, _ = load_model(small)
    record = adjust_model(model, config, {**payload, "train_config": {}}, tau=-1.0, path=small)
    assert record["tau"] == 2
    torch.testing.assert_close(
        torch.tensor(record["offsets"]),
        logit_offsets(torch.tensor(payload["class_weights"]), 2.0), atol=1e-5, rtol=0,
    )  # fmt: skip


def test_onnx_export_records_its_adjustment(trained, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from segnet.deploy.export import read_metadata

    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(trained), "--out", str(out), "--size", "32x32",
                 "--logit-adjust", "0.5"]) == 0  # fmt: skip
    assert read_metadata(out)["logit_adjust"]["tau"] == 0.5


@pytest.mark.parametrize("value", ["nan", "inf", "x"])
def test_bad_tau_is_one_line(trained, tmp_path, capsys, value: str) -> None:
    code = main(["export", "--checkpoint", str(trained), "--out", str(tmp_path / "m.pt"),
                 "--format", "weights", "--logit-adjust", value])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--logit-adjust" in err[0]
    assert not (tmp_path / "m.pt").exists()


def test_model_without_class_weights_is_refused_before_any_work(tiny_folder, tmp_path, capsys):
    _train(tiny_folder, tmp_path / "run", "--class-weights", "natural")
    code = main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--dataset",
                 "folder", "--data", str(tiny_folder), "--num-classes", "3", "--logit-adjust", "1",
                 "--out", str(tmp_path / "m.json")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--logit-adjust" in err and "trained without class weights" in err
    assert not (tmp_path / "m.json").exists()
