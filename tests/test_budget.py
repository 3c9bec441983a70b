"""Time budgets (engine/budget.py): the epoch count that fits, a budgeted run that is the same
run as one given that count, and budgets too small for one epoch."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import pytest
import torch
import yaml

import segnet.engine.budget as budget_module
import segnet.engine.train as train_module
from segnet.cli import main
from segnet.engine.budget import MARGIN, Timing, epochs_within
from segnet.engine.checkpoint import read_checkpoint
from segnet.engine.config import TrainConfig
from segnet.engine.distributed import ALONE
from segnet.engine.prepare import make_scheduler
from segnet.engine.recipe import lr_factor
from segnet.engine.summary import format_start
from segnet.engine.train import fit
from segnet.errors import ArgumentError


def _config(tiny_folder, out, **extra) -> TrainConfig:
    values = dict(
        model="segnet_basic", dataset="folder", data=str(tiny_folder), num_classes=3,
        out=str(out), epochs=5, batch_size=2, lr=0.01, num_workers=0, crop=[32, 32],
        hflip=True, precision="fp32", schedule="poly", warmup_epochs=0.5, val_every=2,
    )  # fmt: skip
    values.update(extra)
    return TrainConfig(**values)


def _timing(*, step_s=1.0, validation_s=10.0, save_s=0.0, end_s=0.0, elapsed_s=0.0) -> Timing:
    return Timing(step_s=step_s, validation_s=validation_s, save_s=save_s, end_s=end_s,
                  elapsed_s=elapsed_s)  # fmt: skip


def test_the_count_is_the_most_epochs_whose_steps_and_validations_fit() -> None:
    # an epoch: 10 steps of 1 s and a 1 s save; validations (10 s, and a 1 s save of best.pt)
    # after epochs 3, 6, ... and after the last; 20 s before epoch 1, 5 s after the last
    timing = _timing(save_s=1.0, elapsed_s=20.0, end_s=5.0)

    def count(seconds: float, max_epochs: int = 100, done: int = 0) -> int:
        # the budget whose minutes leave `seconds` for epochs: what is left after the 20 s
        # spent, less the margin of it, less the end
        minutes = (20.0 + (seconds + 5.0) / (1 - MARGIN)) / 60
        return epochs_within(
            minutes, timing, steps_per_epoch=10, val_every=3, max_epochs=max_epochs, done=done
        )

    # 3 epochs: 3 x 11 + 1 x 11 = 44 s; 4 epochs: 4 x 11 + 2 x 11 = 66 s
    assert count(44.001) == 3
    assert count(65.999) == 3
    assert count(66.001) == 4
    assert count(1000, max_epochs=7) == 7  # never more than asked for
    assert count(21.999) == 0  # one epoch: 11 + 11 = 22 s
    assert count(22.001) == 1
    # 2 epochs done (their time is in elapsed_s): epoch 3 and its validation 22 s, epoch 4
    # and the last validation 22 s more; none more fits: the count stays at the epochs done
    assert count(43.999, done=2) == 3
    assert count(44.001, done=2) == 4
    assert count(21.999, done=2) == 2


def test_a_replanned_schedule_goes_on_from_the_rate_reached() -> None:
    config = TrainConfig(model="segnet_basic", dataset="synthetic", schedule="cosine",
                         warmup_epochs=1, epochs=10)  # fmt: skip
    planned = [lr_factor(config, step, 100, 10) for step in range(101)]
    # after epoch 4 (step 40) the plan becomes 6 epochs (60 steps), after epoch 5 then 5
    cut = [lr_factor(config, step, 100, 10, replans=((40, 60),)) for step in range(61)]
    assert cut[:41] == planned[:41]  # the same schedule up to the re-plan
    # the rest of the decay (90 steps from step 10, 30 done) squeezed into 20 steps
    assert cut[50] == pytest.approx(planned[70]) and cut[41] < planned[41]
    assert cut[60] == pytest.approx(0.0, abs=1e-12)  # ends where the new count ends
    assert all(a > b for a, b in itertools.pairwise(cut[10:]))  # falls without a jump
    twice = [lr_factor(config, step, 100, 10, replans=((40, 60), (50, 55))) for step in range(56)]
    assert twice[:51] == cut[:51] and twice[55] == pytest.approx(0.0, abs=1e-12)


def test_the_plan_follows_epochs_slower_or_faster_than_probed_and_resume_keeps_it(
    tiny_folder, tmp_path, monkeypatch, capsys
) -> None:
    """The probe says a step takes 100 s (an epoch: 2 steps), so 6 of 8 epochs fit in 1300 s.
    Epochs 1-2 then take 400 s (other work on the machine): after epoch 2 the plan is cut to
    the 3 more that fit. Epoch 3 takes 100 s (the work ended): after it, at 250 s an epoch, all
    8 fit again (the run's real seconds, a few, are in the budget too), and the rate reaches 0 at epoch 8. A launch killed after epoch 3 and resumed
    ends with the same weights (the schedule is rebuilt with both re-plans)."""
    monkeypatch.setattr(budget_module, "probe",
                        lambda run: _timing(step_s=100.0, validation_s=0.0))  # fmt: skip
    train_epoch = train_module._train_epoch

    def timed(run, epoch, *, progress):
        return train_epoch(run, epoch, progress=progress) | {
            "epoch_s": 400.0 if epoch < 2 else 100.0
        }

    monkeypatch.setattr(train_module, "_train_epoch", timed)
    minutes = (1300 / (1 - MARGIN)) / 60
    whole = _config(tiny_folder, tmp_path / "whole", epochs=8, time_budget=minutes)
    assert fit(whole)["epochs_run"] == 8
    out = capsys.readouterr().out
    assert "6 of at most 8 epochs fit" in out
    assert "ran 2.00x the probed steps (200.00 s a step), so 5 epochs" in out
    assert "ran 1.25x the probed steps (125.00 s a step), so 8 epochs" in out
    saved = read_checkpoint(tmp_path / "whole" / "last.pt")
    assert saved["train_config"]["epochs"] == 8
    assert saved["time_budget"]["epochs"] == 6
    assert saved["time_budget"]["replans"] == [{"after_epoch": 2, "epochs": 5, "step_s": 200.0},
                                               {"after_epoch": 3, "epochs": 8, "step_s": 125.0}]  # fmt: skip
    rates = [row["lr"] for row in saved["log"]]
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in itertools.pairwise(rates))  # no jump up at either re-plan
    start = json.loads((tmp_path / "whole" / "summary.json").read_text())["start"]
    assert "after epoch 3 re-planned to 8" in format_start(start) and start["epochs"] == 8

    run_epoch, calls = train_module._run_epoch, []

    def killed_after_three(*args, **kwargs):
        calls.append(run_epoch(*args, **kwargs))
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_run_epoch", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        fit(
            _config(tiny_folder, tmp_path / "killed", epochs=8, time_budget=minutes), progress=False
        )
    monkeypatch.setattr(train_module, "_run_epoch", run_epoch)
    monkeypatch.setattr(budget_module, "probe", lambda run: pytest.fail("probed"))
    resumed = TrainConfig.for_resume(tmp_path / "killed", config_file=None, overrides={})
    assert resumed.epochs == 8
    assert fit(resumed, resume=True, progress=False)["epochs_run"] == 5
    again = read_checkpoint(tmp_path / "killed" / "last.pt")
    for key, tensor in saved["state_dict"].items():
        assert torch.equal(tensor, again["state_dict"][key]), key


def test_a_budgeted_run_is_the_run_given_the_count_that_fits(
    tiny_folder, tmp_path, monkeypatch
) -> None:
    """The schedule is timed to the epochs kept (poly decay to 0 after epoch 2, not 5), and the
    probe draws nothing the run uses: the weights equal those of a run given epochs 2."""
    fit(_config(tiny_folder, tmp_path / "given", epochs=2), progress=False)
    # 4 images, batch 2: 2 steps an epoch; 2 epochs and 1 validation: 5 s; 3 epochs and 2: 8 s.
    # 0.12 min less the margin is 6.5 s, less the (sub-second) setup before the probe
    monkeypatch.setattr(budget_module, "probe",
                        lambda run: _timing(step_s=1.0, validation_s=1.0, end_s=0.0))  # fmt: skip
    budgeted = _config(tiny_folder, tmp_path / "budget", epochs=5, time_budget=0.12)
    result = fit(budgeted, progress=False)
    assert result["epochs_run"] == 2
    given = read_checkpoint(tmp_path / "given" / "last.pt")
    saved = read_checkpoint(tmp_path / "budget" / "last.pt")
    for key, tensor in given["state_dict"].items():
        assert torch.equal(tensor, saved["state_dict"][key]), key
    assert saved["train_config"]["epochs"] == 2 and saved["train_config"]["time_budget"] == 0.12
    assert saved["time_budget"]["epochs"] == 2 and saved["time_budget"]["max_epochs"] == 5
    assert yaml.safe_load((tmp_path / "budget" / "config.yaml").read_text())["epochs"] == 2
    start = json.loads((tmp_path / "budget" / "summary.json").read_text())["start"]
    assert start["epochs"] == 2 and start["time_budget"]["step_s"] == 1.0
    assert "time budget 0.12 min: 2 of at most 5 epochs fit" in format_start(start)
    # resumed: the count stays, nothing is probed again, the record comes back from last.pt
    monkeypatch.setattr(budget_module, "probe", lambda run: pytest.fail("probed"))
    resumed = TrainConfig.for_resume(tmp_path / "budget", config_file=None, overrides={})
    assert resumed.epochs == 2
    assert fit(resumed, resume=True, progress=False)["epochs_run"] == 0
    start = json.loads((tmp_path / "budget" / "summary.json").read_text())["start"]
    assert start["time_budget"]["epochs"] == 2


def test_the_real_probe_leaves_the_run_as_it_was(tiny_folder, tmp_path) -> None:
    """A budget every epoch fits: the probe trains and validates copies, so the weights equal
    those of the same run without a budget."""
    fit(_config(tiny_folder, tmp_path / "plain", epochs=2), progress=False)
    fit(_config(tiny_folder, tmp_path / "probed", epochs=2, time_budget=600), progress=False)
    plain = read_checkpoint(tmp_path / "plain" / "last.pt")["state_dict"]
    probed = read_checkpoint(tmp_path / "probed" / "last.pt")
    assert probed["time_budget"]["epochs"] == 2 and probed["time_budget"]["step_s"] > 0
    for key, tensor in plain.items():
        assert torch.equal(tensor, probed["state_dict"][key]), key


def test_a_budget_that_fits_no_epoch_stops_before_writing(
    tiny_folder, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(budget_module, "probe",
                        lambda run: _timing(step_s=100.0, validation_s=1.0))  # fmt: skip
    with pytest.raises(ArgumentError, match="time_budget.*fit 0 epoch"):
        fit(_config(tiny_folder, tmp_path / "api", time_budget=1), progress=False)
    out = tmp_path / "cli"
    code = main(["train", "--dataset", "folder", "--data", str(tiny_folder), "--num-classes", "3",
                 "--out", str(out), "--epochs", "3", "--time-budget", "1", "--num-workers", "0"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--time-budget 1 minutes fit 0 epoch(s)" in err[0] and "give more minutes" in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_budget_values_are_checked_and_kept_on_resume(tiny_folder, tmp_path) -> None:
    with pytest.raises(ArgumentError, match="time_budget"):
        _config(tiny_folder, tmp_path / "x", time_budget=-1)
    fit(_config(tiny_folder, tmp_path / "run", epochs=1), progress=False)
    with pytest.raises(ArgumentError, match="time_budget.*resuming keeps a run's recipe"):
        TrainConfig.for_resume(tmp_path / "run", config_file=None, overrides={"time_budget": 30})


@pytest.mark.parametrize(
    ("available_s", "planned"),
    [(75.0, 9), (85.0, 10), (95.0, 10), (105.0, 12), (1000.0, 20)],
)
def test_a_replan_cuts_whenever_needed_and_lengthens_by_two_or_more(available_s, planned) -> None:
    """Plan 10, 2 done, epochs of one 10 s step: 8 more need 80 s. 75 s fit 7 more (cut to 9);
    95 s fit 9 more, but one more epoch is within the epochs' noise (kept at 10); 105 s fit 10
    more (lengthened to 12); never past the run's `epochs` (20)."""
    config = TrainConfig(model="segnet_basic", dataset="synthetic", epochs=10, val_every=100,
                         time_budget=available_s / (1 - MARGIN) / 60, schedule="poly",
                         warmup_epochs=0)  # fmt: skip
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    budget = {"epochs": 10, "max_epochs": 20}
    run = SimpleNamespace(
        config=config, group=ALONE, log=[{"epoch_s": 10.0}] * 2, steps_per_epoch=1,
        budget=budget, optimizer=optimizer, summary={},
        scheduler=make_scheduler(config, optimizer, 1),
    )  # fmt: skip
    for _ in range(2):  # the two epochs done
        optimizer.step()
        run.scheduler.step()
    said = budget_module.replan(run, _timing(step_s=10.0, validation_s=0.0), done=2, elapsed_s=0.0)
    assert run.config.epochs == planned
    assert (said is None) == (planned == 10)
    if planned != 10:
        assert budget["replans"] == [{"after_epoch": 2, "epochs": planned, "step_s": 10.0}]
        assert run.scheduler.last_epoch == 2  # the rebuilt schedule goes on from step 2
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 2 / 10) ** 0.9)
