"""Training and inference under faults: kills at any point (resume finishes bit for bit as an
uninterrupted run), divergence (stops, saves nothing non-finite), resumed flags (applied or
refused), run folders (never shared by accident), and Ctrl-C in predict and evaluate.

Faults are real: child processes are killed with SIGKILL (from outside after a random delay, or
by themselves from inside ``atomic_write`` via a small hook, half-way through a write or just
before its rename) and interrupted with SIGINT. The children run one thread each, like each
other, so that their floating-point results can be compared bit for bit.
"""

from __future__ import annotations

import csv
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segnet.cli import main
from segnet.engine.checkpoint import read_checkpoint
from segnet.engine.config import TrainConfig, check_resume
from segnet.engine.runs import new_run_dir
from segnet.engine.train import SegmentationLoss, TrainingDiverged, fit

# The child: `segnet ARGS...` with fault hooks chosen by environment variables.
DRIVER = """
import os, signal, sys, time
from pathlib import Path

# A suite started in the background (`cmd &` in a script) hands its children SIGINT ignored, and
# Python then never raises KeyboardInterrupt: take it back, as a terminal's Ctrl-C would reach it.
signal.signal(signal.SIGINT, signal.default_int_handler)

sys.modules["matplotlib"] = None  # no curves.png: faster; the run's own files are what count
import torch
import segnet.files
from segnet.cli import main
from segnet.engine import checkpoint

KILL_FILE, MODE = os.environ.get("FAULT_KILL_FILE"), os.environ.get("FAULT_MODE")
KILL_NTH = int(os.environ.get("FAULT_KILL_NTH", "1"))
MARKER, SLOW = os.environ.get("FAULT_MARKER"), float(os.environ.get("FAULT_SLOW_FORWARD", "0"))
original, writes = segnet.files.atomic_write, 0


def atomic_write(path, write):  # the KILL_NTH-th write of KILL_FILE dies (SIGKILL) in MODE
    global writes
    writes += Path(path).name == KILL_FILE
    if Path(path).name != KILL_FILE or writes != KILL_NTH:
        return original(path, write)
    if MODE == "before":  # after the previous file was renamed into place
        os.kill(os.getpid(), signal.SIGKILL)

    def dying(f):
        write(f)
        f.flush()
        if MODE == "partial":  # half the bytes on disk, as a kill in mid-write leaves them
            f.truncate(f.tell() // 2)
            f.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # "partial" or "complete": before the rename

    return original(path, dying)


def forward_hook(module, inputs, output):  # work has started; SLOW lets a signal land mid-work
    if MARKER and not os.path.exists(MARKER):
        Path(MARKER).write_text("working")
    time.sleep(SLOW)


segnet.files.atomic_write = checkpoint.atomic_write = atomic_write
torch.nn.modules.module.register_module_forward_hook(forward_hook)
sys.exit(main(sys.argv[1:]))
"""

TRAIN = ["--model", "segnet_basic", "--dataset", "folder", "--num-classes", "3", "--epochs", "3",
         "--batch-size", "2", "--lr", "0.01", "--crop", "32", "32", "--hflip", "--num-workers", "0",
         "--precision", "fp32", "--device", "cpu"]  # fmt: skip


class Child:
    """A ``segnet`` subprocess with fault hooks; output goes to a log file (no pipe to fill)."""

    count = 0

    def __init__(self, tmp_path: Path, argv: list[str], **faults: object) -> None:
        Child.count += 1
        driver = tmp_path / "driver.py"
        if not driver.exists():
            driver.write_text(DRIVER)
        self.log = tmp_path / f"child{Child.count}.log"
        self.marker = tmp_path / f"child{Child.count}.working"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "FAULT_MARKER": str(self.marker)}  # fmt: skip
        env.update({f"FAULT_{k.upper()}": str(v) for k, v in faults.items()})
        # No preexec_fn: Python code between fork and exec is unsafe while engine threads from
        # earlier tests run in this process (the driver takes SIGINT back itself).
        with self.log.open("w") as log:
            command = [sys.executable, str(driver), *argv]
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout: float = 300) -> int:
        return self.process.wait(timeout=timeout)

    def wait_until_working(self, timeout: float = 120) -> bool:
        """True once the child's first forward pass ran; False if it ended first."""
        deadline = time.monotonic() + timeout
        while not self.marker.exists():
            if self.process.poll() is not None:
                return False
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.02)
        return True

    def output(self) -> str:
        return self.log.read_text()

    def error_lines(self) -> list[str]:
        lines = self.output().replace("\r", "\n").splitlines()
        return [line for line in lines if line.startswith("segnet")]


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp")) if folder.is_dir() else []


def _log_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _all_finite(path: Path) -> bool:
    state = read_checkpoint(path)
    tensors = list(state["state_dict"].values())
    for slot in state.get("optimizer", {}).get("state", {}).values():
        tensors += [v for v in slot.values() if torch.is_tensor(v)]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


@pytest.fixture(autouse=True)
def _one_thread():
    """In-process runs on one thread too: tiny tensors gain nothing from two, and a busy
    machine's cores make a second thread wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- kills at random points, then --resume ------------------------------------------------


def _attempt(tmp_path: Path, run: Path, train: list[str], **faults: object) -> Child:
    """Starts the run in ``run``, or resumes it when a last.pt is there (what a user does)."""
    if (run / "last.pt").exists():
        return Child(tmp_path, ["train", "--resume", str(run)], **faults)
    # No last.pt yet: at most a best.pt or temp files of the killed first epoch are there.
    return Child(tmp_path, [*train, "--out", str(run), "--overwrite"], **faults)


def _epochs_done(run: Path) -> int:
    return read_checkpoint(run / "last.pt")["epoch"] if (run / "last.pt").exists() else 0


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_finishes_bit_identical(tiny_folder, tmp_path) -> None:
    train = ["train", *TRAIN, "--data", str(tiny_folder)]
    straight = tmp_path / "straight"
    reference = Child(tmp_path, [*train, "--out", str(straight)])
    assert reference.wait() == 0, reference.output()
    run, rng = tmp_path / "run", random.Random(2024)
    # Each epoch writes best.pt (when val mIoU improved), last.pt, config.yaml, log.csv; a
    # resumed run first rewrites config.yaml and log.csv. A kill at the 1st or 2nd write of a
    # file, or after a delay shorter than an epoch, lets the run gain an epoch at most, so the
    # first two planned write kills always land.
    plan = [("last.pt", "partial"), ("delay", ""), ("log.csv", "before"), ("config.yaml", "partial"),
            ("delay", ""), ("last.pt", "complete"), ("best.pt", "complete")]  # fmt: skip
    kills = 0
    for target, mode in plan:
        if _epochs_done(run) == 3:
            break
        if target == "delay":  # SIGKILL from outside, at a random moment of the work
            # 57 modules x 5 ms: >= 0.28 s a forward pass, > 1 s an epoch (2 steps, 2 val images)
            child = _attempt(tmp_path, run, train, slow_forward=0.005)
            if child.wait_until_working():
                time.sleep(rng.uniform(0.0, 0.8))
                child.process.kill()
            assert child.wait() in (0, -signal.SIGKILL), child.output()
            continue
        nth = rng.randint(1, 2)
        child = _attempt(tmp_path, run, train, kill_file=target, kill_nth=nth, mode=mode)
        code = child.wait()
        assert code in (0, -signal.SIGKILL), child.output()  # 0: fewer writes were left
        kills += code == -signal.SIGKILL
        if code and mode != "before":  # the killed write left its temp file
            assert _temp_files(run), f"{target} {mode} kill left no temp file"
    assert kills >= 2
    for _ in range(3):  # then resume to the end, without faults
        if _epochs_done(run) == 3:
            break
        child = _attempt(tmp_path, run, train)
        assert child.wait() == 0, child.output()
    _assert_same_run(run, straight)


def _assert_same_run(run: Path, straight: Path) -> None:
    assert _temp_files(run) == []  # every stale temp file was removed
    a, b = read_checkpoint(run / "last.pt"), read_checkpoint(straight / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert _same_tensors(a["state_dict"], b["state_dict"])
    for key, slot in b["optimizer"]["state"].items():
        assert _same_tensors(a["optimizer"]["state"][key], slot)
    best_a, best_b = read_checkpoint(run / "best.pt"), read_checkpoint(straight / "best.pt")
    assert best_a["epoch"] == best_b["epoch"]
    assert _same_tensors(best_a["state_dict"], best_b["state_dict"])
    rows_a, rows_b = _log_rows(run / "log.csv"), _log_rows(straight / "log.csv")
    assert [r["epoch"] for r in rows_a] == ["1", "2", "3"]  # each epoch once, none missing
    for key in ("lr", "train_loss", "global_accuracy", "miou", "bf"):
        assert [r[key] for r in rows_a] == [r[key] for r in rows_b], key
    config_a = yaml.safe_load((run / "config.yaml").read_text())
    config_b = yaml.safe_load((straight / "config.yaml").read_text())
    assert {**config_a, "out": None} == {**config_b, "out": None}


# -- divergence ------------------------------------------------------------------------------


def _config(tiny_folder: Path, out: Path, **extra: object) -> TrainConfig:
    values = dict(model="segnet_basic", dataset="folder", data=str(tiny_folder), num_classes=3,
                  out=str(out), epochs=3, batch_size=2, lr=0.01, num_workers=0, crop=[32, 32],
                  precision="fp32", device="cpu")  # fmt: skip
    return TrainConfig(**{**values, **extra})


def _poison_loss(monkeypatch, at_call: int) -> None:
    """The ``at_call``-th training loss becomes NaN (2 steps per epoch: call 3 opens epoch 2)."""
    calls, forward = [0], SegmentationLoss.forward

    def poisoned(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        loss = forward(self, logits, masks)
        return loss * float("nan") if calls[0] == at_call else loss

    monkeypatch.setattr(SegmentationLoss, "forward", poisoned)


def test_nan_loss_stops_and_names_the_last_good_checkpoint(tiny_folder, tmp_path, monkeypatch):
    _poison_loss(monkeypatch, at_call=3)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as caught:
        fit(_config(tiny_folder, run, epochs=2), progress=False)
    message = caught.value.as_flag()
    assert "loss became nan at step 1 of epoch 2/2" in message
    assert f"last good checkpoint is {run / 'last.pt'} (epoch 1)" in message
    assert "lower --lr than 0.01" in message and "--init-weights" in message
    assert read_checkpoint(run / "last.pt")["epoch"] == 1 and _all_finite(run / "last.pt")
    assert [r["epoch"] for r in _log_rows(run / "log.csv")] == ["1"]
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2


def test_divergence_before_any_checkpoint_writes_nothing(tiny_folder, tmp_path, monkeypatch):
    _poison_loss(monkeypatch, at_call=1)
    with pytest.raises(TrainingDiverged, match="no checkpoint was saved yet: start a new run"):
        fit(_config(tiny_folder, tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_non_finite_weights_after_a_finite_loss_are_not_saved(tiny_folder, tmp_path, monkeypatch):
    """The last step of an epoch breaks a weight; its loss, computed before, was finite."""
    step, steps = torch.optim.SGD.step, [0]

    def breaking_step(self, closure=None):
        result = step(self, closure)
        steps[0] += 1
        if steps[0] == 4:  # the second step of epoch 2
            self.param_groups[0]["params"][0].data.fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", breaking_step)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"the weight \S+ became non-finite in epoch 2/2"):
        fit(_config(tiny_folder, run, epochs=2), progress=False)
    assert read_checkpoint(run / "last.pt")["epoch"] == 1
    assert all(_all_finite(path) for path in run.glob("*.pt"))


def test_cli_divergence_exits_2_with_only_finite_checkpoints(tiny_folder, tmp_path, capsys):
    """The issue's cases: a huge rate with one step per epoch, and an infinite rate."""
    out, inf_out = tmp_path / "run", tmp_path / "inf"
    argv = ["train", *TRAIN, "--data", str(tiny_folder), "--max-batches", "1"]
    assert main([*argv, "--out", str(out), "--lr", "1e6"]) == 2
    err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert err.startswith("segnet: error: training diverged and stopped: ") and "--lr" in err
    saved = re.search(r"last good checkpoint is \S+ \(epoch (\d)\)", err)
    if saved:
        assert read_checkpoint(out / "last.pt")["epoch"] == int(saved.group(1))
    else:
        assert "no checkpoint was saved yet" in err and not list(out.glob("*.pt"))
    assert all(_all_finite(path) for path in out.glob("*.pt"))
    assert main([*argv, "--out", str(inf_out), "--lr", "inf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("segnet: error: ") and "--lr" in err
    assert not inf_out.exists()


# -- resume: flags applied or refused ---------------------------------------------------------


def _run_folder(tiny_folder: Path, tmp_path: Path, *extra: str) -> Path:
    """A one-epoch run (one step) made by the CLI."""
    out = tmp_path / "run"
    argv = ["train", *TRAIN, "--data", str(tiny_folder), "--out", str(out), "--epochs", "1",
            "--max-batches", "1", *extra]  # fmt: skip
    assert main(argv) == 0
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _fails(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert len([line for line in lines if line.startswith("segnet")]) == 1, lines
    assert lines[-1].startswith("segnet: error: ") and "Traceback" not in "".join(lines)
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def test_resume_refuses_a_new_recipe_and_applies_how_long_it_runs(tiny_folder, tmp_path, capsys):
    run = _run_folder(tiny_folder, tmp_path)
    before = _snapshot(run)
    resume = ["train", "--resume", str(run)]
    for flags, flag in [(["--lr", "0.001"], "--lr 0.001"), (["--batch-size", "4"], "--batch-size 4"),
                        (["--optimizer", "adamw"], "--optimizer 'adamw'"),
                        (["--crop", "64", "64"], "--crop [64, 64]"), (["--seed", "1"], "--seed 1")]:  # fmt: skip
        _fails(capsys, resume + flags, f"{flag} differs from", f"--init-weights {run / 'last.pt'}")
    config = tmp_path / "other.yaml"
    config.write_text("lr: 0.5\n")
    _fails(capsys, [*resume, "--config", str(config)], f"--config {config}: lr 0.5 differs")
    _fails(capsys, [*resume, "--out", str(tmp_path / "elsewhere")], "stays in --resume")
    _fails(capsys, [*resume, "--overwrite"], "--overwrite cannot be combined with --resume")
    assert _snapshot(run) == before  # nothing written or changed
    # Same values are fine; how long, how often and where it runs are applied and recorded.
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # a killed write's leftovers
    (run / ".log.csv.x.tmp").write_bytes(b"")
    (run / ".notes.tmp").write_text("not the run's")
    argv = [*resume, "--lr", "0.01", "--epochs", "2", "--val-every", "2", "--num-workers", "1"]
    assert main(argv) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["epochs"], saved["val_every"], saved["num_workers"], saved["lr"]) == (
        2,
        2,
        1,
        0.01,
    )
    assert read_checkpoint(run / "last.pt")["train_config"] == saved
    assert [r["epoch"] for r in _log_rows(run / "log.csv")] == ["1", "2"]
    assert _temp_files(run) == [".notes.tmp"]  # the run's temp files only
    _fails(capsys, [*resume, "--epochs", "1"], "--epochs must be at least 2")


def test_epochs_and_steps_cannot_re_time_a_schedule_under_way(tiny_folder) -> None:
    saved = _config(tiny_folder, Path("r"), schedule="cosine")
    check_resume(saved, _config(tiny_folder, Path("r"), schedule="cosine", device="auto"),
                 epochs_done=1, run_dir=Path("r"))  # fmt: skip
    for changed in ({"epochs": 6}, {"max_batches": 1}):
        with pytest.raises(ValueError, match="would re-time its cosine schedule"):
            check_resume(saved, _config(tiny_folder, Path("r"), schedule="cosine", **changed),
                         epochs_done=1, run_dir=Path("r"))  # fmt: skip
    warm = _config(tiny_folder, Path("r"), warmup_epochs=1.0)
    with pytest.raises(ValueError, match="would re-time its warm-up"):
        check_resume(warm, _config(tiny_folder, Path("r"), warmup_epochs=1.0, max_batches=1),
                     epochs_done=1, run_dir=Path("r"))  # fmt: skip
    check_resume(warm, _config(tiny_folder, Path("r"), warmup_epochs=1.0, epochs=9),
                 epochs_done=1, run_dir=Path("r"))  # fmt: skip


# -- run folders -------------------------------------------------------------------------------


def test_a_folder_holding_a_run_is_refused_before_any_work(tiny_folder, tmp_path, capsys):
    run = _run_folder(tiny_folder, tmp_path)
    (run / "notes.txt").write_text("mine")
    before = _snapshot(run)
    argv = ["train", *TRAIN, "--data", str(tiny_folder), "--out", str(run), "--epochs", "1"]
    _fails(capsys, argv, f"--out {run} already holds a run (last.pt, best.pt, log.csv, config.yaml",
           f"--resume {run}", "--overwrite")  # fmt: skip
    # Checked before the data is read: a missing data folder is not what it reports.
    missing = ["train", *TRAIN, "--data", str(tmp_path / "nowhere"), "--out", str(run)]
    _fails(capsys, missing, "already holds a run")
    assert _snapshot(run) == before
    # --overwrite replaces the old run's files (and only those).
    assert main([*argv, "--max-batches", "1", "--lr", "0.02", "--overwrite"]) == 0
    assert read_checkpoint(run / "last.pt")["train_config"]["lr"] == 0.02
    assert [r["epoch"] for r in _log_rows(run / "log.csv")] == ["1"]  # not appended to
    assert (run / "notes.txt").read_text() == "mine"


def test_default_out_is_a_new_folder_per_run(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", *TRAIN, "--data", str(tiny_folder), "--epochs", "1", "--max-batches", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    first = re.search(r"run folder: (\S+)", printed).group(1)
    assert re.fullmatch(r"runs/segnet_basic_folder_\d{8}-\d{6}(-\d+)?", first)
    assert (tmp_path / first / "last.pt").is_file()
    a, b = new_run_dir("m", "d", root=tmp_path / "r"), new_run_dir("m", "d", root=tmp_path / "r")
    assert a != b and a.is_dir() and b.is_dir()  # two runs in one second: two folders
    # A run that fails before writing anything leaves no folder behind.
    bad = [*argv, "--init-weights", str(tmp_path / "missing.pt")]
    _fails(capsys, bad, "--init-weights", "file not found")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [Path(first).name]


# -- Ctrl-C in predict and evaluate ------------------------------------------------------------


def _interrupt(child: Child, rng: random.Random) -> None:
    assert child.wait_until_working(), child.output()
    time.sleep(rng.uniform(0.0, 0.5))
    child.process.send_signal(signal.SIGINT)
    assert child.wait() == 130, child.output()
    assert child.error_lines()[-1].startswith("segnet: interrupted"), child.output()


def test_sigint_during_predict(checkpoint, tiny_folder, tmp_path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    source = np.asarray(Image.open(tiny_folder / "val" / "images" / "val_0.png"))
    for i in range(24):
        Image.fromarray(np.roll(source, i, axis=1)).save(images / f"frame_{i:02d}.png")
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(checkpoint), str(images), "--out", str(out),
            "--device", "cpu"]  # fmt: skip
    _interrupt(Child(tmp_path, argv, slow_forward=0.01), random.Random(1))
    written = sorted(out.iterdir()) if out.is_dir() else []
    assert len(written) < 3 * 24  # it was stopped, not finished
    assert not [p.name for p in written if p.name.startswith(".") or p.suffix != ".png"]
    for path in written:  # every file there is whole
        Image.open(path).load()


def test_sigint_during_evaluate(checkpoint, tiny_folder, tmp_path) -> None:
    out = tmp_path / "metrics"
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder",
            "--data", str(tiny_folder), "--num-classes", "3", "--out", str(out / "metrics.json"),
            "--device", "cpu"]  # fmt: skip
    out.mkdir()
    _interrupt(Child(tmp_path, argv, slow_forward=0.05), random.Random(2))
    assert list(out.iterdir()) == []  # no metrics.json, whole or partial, and no temp file
