"""Training in several processes (torchrun, DDP over gloo on CPU) and runs you can watch
(TensorBoard, summaries).

The launches are real: ``python -m torch.distributed.run`` on 127.0.0.1, two processes of one
thread each. A small driver script runs ``segnet`` in each process and, for the tests that
need it, saves each rank's final weights or makes one rank fail, hang or slow down (chosen by
environment variables only these tests set).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import write_folder_dataset
from segnet.cli import main
from segnet.engine.checkpoint import read_checkpoint
from segnet.engine.config import TrainConfig
from segnet.engine.distributed import ALONE, Distributed, check_world_size, convert_sync_bn
from segnet.engine.train import fit
from segnet.errors import ArgumentError

DRIVER = """
import functools, os, sys, time
from pathlib import Path

sys.modules["matplotlib"] = None  # no curves.png: faster; the run's own files are what count
import torch
from torch.nn.parallel import DistributedDataParallel
from segnet.cli import main
from segnet.errors import SegNetError

RANK = int(os.environ["RANK"])
models, init = [], DistributedDataParallel.__init__


@functools.wraps(init)
def capture(self, module, *args, **kwargs):  # the module each rank trains
    models.append(module)
    init(self, module, *args, **kwargs)


DistributedDataParallel.__init__ = capture
if os.environ.get("TEST_FAIL_RANK") == str(RANK):
    from segnet.data.transforms import AugmentedDataset
    from segnet.engine import prepare

    mode, epoch = os.environ["TEST_FAIL_MODE"], int(os.environ.get("TEST_FAIL_EPOCH", "0"))
    get = AugmentedDataset.__getitem__

    def failing(self, index):
        if self.epoch >= epoch and mode == "raise":
            raise SegNetError(f"injected failure reading image {index}")
        if self.epoch >= epoch and mode == "hang":
            time.sleep(3600)
        return get(self, index)

    def no_data(*args, **kwargs):
        raise SegNetError("data/: injected: no such folder on this node")

    AugmentedDataset.__getitem__ = failing
    if mode == "setup":
        prepare.open_dataset = no_data
if os.environ.get("TEST_SLOW_FORWARD"):
    pause = float(os.environ["TEST_SLOW_FORWARD"])
    torch.nn.modules.module.register_module_forward_hook(lambda *_: time.sleep(pause))
code = main(sys.argv[1:])
if os.environ.get("TEST_WEIGHTS_DIR") and models:
    torch.save(models[0].state_dict(), Path(os.environ["TEST_WEIGHTS_DIR"]) / f"rank{RANK}.pt")
sys.exit(code)
"""

# Two processes of batch 2 (global batch 4): 8 train images make 2 steps per epoch and
# process; 3 val images split 2 + 1 over the processes. Weight averaging of epochs 2-3.
TRAIN = ["train", "--model", "segnet_basic", "--dataset", "folder", "--num-classes", "3",
         "--epochs", "3", "--batch-size", "2", "--lr", "0.01", "--crop", "32", "32", "--hflip",
         "--num-workers", "0", "--precision", "fp32", "--device", "cpu", "--average-last", "2"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launch:
    """A ``torchrun`` launcher; its output (and its workers') goes to a log file."""

    def __init__(
        self, folder: Path, argv: list[str], *, launcher: list[str] | None = None,
        driver: bool = False, name: str = "launch", **env: object,
    ) -> None:  # fmt: skip
        if launcher is None:
            launcher = ["--nproc_per_node", "2", "--master-addr", "127.0.0.1",
                        "--master-port", str(free_port())]  # fmt: skip
        script = [str(folder / "driver.py")] if driver else ["-m", "segnet"]
        if driver:
            (folder / "driver.py").write_text(DRIVER)
        self.log = folder / f"{name}.log"
        environ = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        environ.update({k: str(v) for k, v in env.items()})
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", *launcher, *script, *argv],
                stdout=log, stderr=subprocess.STDOUT, env=environ,
            )  # fmt: skip

    def wait(self, timeout: float = 240) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the launch hung for {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text()

    def errors(self) -> list[str]:
        lines = self.output().replace("\r", "\n").splitlines()
        return [line for line in lines if line.startswith("segnet: error")]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _log_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    return write_folder_dataset(root, counts={"train": 8, "val": 3})


@pytest.fixture(scope="module")
def two_processes(data, tmp_path_factory) -> Path:
    """A 3-epoch run of two processes with TensorBoard; each rank's final weights saved."""
    folder = tmp_path_factory.mktemp("ddp")
    run, ranks = folder / "run", folder / "ranks"
    ranks.mkdir()
    argv = [*TRAIN, "--data", str(data), "--out", str(run), "--tensorboard"]
    launch = Launch(folder, argv, driver=True, TEST_WEIGHTS_DIR=ranks)
    assert launch.wait() == 0, launch.output()
    return run


# -- two processes on one machine -----------------------------------------------------------


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(two_processes) -> None:
    ranks = two_processes.parent / "ranks"
    rank0, rank1 = torch.load(ranks / "rank0.pt"), torch.load(ranks / "rank1.pt")
    assert _same(rank0, rank1)  # weights and BN statistics alike
    last = read_checkpoint(two_processes / "last.pt")
    assert _same(last["state_dict"], rank0) and last["epoch"] == 3 and last["world_size"] == 2
    start = json.loads((two_processes / "summary.json").read_text())["start"]
    assert (start["world_size"], start["batch_size"], start["global_batch"]) == (2, 2, 4)
    assert start["steps_per_epoch"] == 2 and start["backend"] == "gloo"  # 8 images: 4 each
    assert [r["epoch"] for r in _log_rows(two_processes / "log.csv")] == ["1", "2", "3"]


@pytest.mark.slow
def test_distributed_validation_equals_single_process_evaluation(two_processes, data, capsys):
    """Rank 0 scored val images 0 and 2, rank 1 image 1; `segnet evaluate` scores all three."""
    out = two_processes.parent / "metrics.json"
    argv = ["evaluate", "--checkpoint", str(two_processes / "last.pt"), "--dataset", "folder",
            "--data", str(data), "--num-classes", "3", "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    single, distributed = (
        json.loads(out.read_text()),
        read_checkpoint(two_processes / "last.pt")["metrics"],
    )
    assert single["confusion_matrix"] == distributed["confusion_matrix"]
    assert single["num_images"] == distributed["num_images"] == 3
    for key in ("global_accuracy", "class_accuracy", "miou"):
        assert single[key] == distributed[key], key
    assert single["bf"] == pytest.approx(distributed["bf"], rel=1e-12, abs=1e-15)


@pytest.mark.slow
def test_distributed_weight_average_equals_single_process_evaluation(two_processes, data):
    """Each rank averages and recomputes BN alike; their sharded validation of averaged.pt
    equals `segnet evaluate` of the file rank 0 wrote."""
    out = two_processes.parent / "averaged.json"
    averaged = read_checkpoint(two_processes / "averaged.pt")
    argv = ["evaluate", "--checkpoint", str(two_processes / "averaged.pt"), "--dataset", "folder",
            "--data", str(data), "--num-classes", "3", "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    single = json.loads(out.read_text())
    assert averaged["metrics"]["averaged"]["epochs"] == [2, 3]
    assert single["confusion_matrix"] == averaged["metrics"]["confusion_matrix"]


@pytest.mark.slow
def test_tensorboard_events_hold_the_scalars_and_images(two_processes) -> None:
    events = EventAccumulator(str(two_processes / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars, images = events.Tags()["scalars"], events.Tags()["images"]
    for tag in (
        "train/loss",
        "train/lr",
        "train/images_per_s",
        "val/G",
        "val/C",
        "val/mIoU",
        "val/BF",
    ):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    rows = _log_rows(two_processes / "log.csv")
    assert [e.value for e in events.Scalars("val/mIoU")] == pytest.approx(
        [float(r["miou"]) for r in rows]
    )
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(
        [float(r["train_loss"]) for r in rows]
    )
    iou_tags = {t for t in scalars if t.startswith("val_iou/")}
    assert iou_tags and iou_tags <= {f"val_iou/class_{c}" for c in range(3)}
    assert len(images) == 3 and all(t.startswith("val_images/val_") for t in images)
    panel = events.Images(images[0])[-1]
    assert (panel.width, panel.height) == (2 * 48, 32)  # ground truth beside prediction


@pytest.mark.slow
def test_resume_refuses_another_world_size(two_processes, capsys) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in two_processes.iterdir()}
    assert main(["train", "--resume", str(two_processes), "--epochs", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"segnet: error: --resume {two_processes} was "), err
    assert "trained by 2 process(es), this launch has 1: resume it with 2 processes" in err[0]
    assert {p.name: p.stat().st_mtime_ns for p in two_processes.iterdir()} == before


@pytest.mark.slow
def test_killed_launcher_then_resume_continues_as_if_uninterrupted(two_processes, data, tmp_path):
    run = tmp_path / "run"
    argv = [*TRAIN, "--data", str(data), "--out", str(run), "--tensorboard"]
    # ~57 modules x 10 ms: >= 0.6 s a forward, several seconds an epoch
    launch = Launch(tmp_path, argv, driver=True, name="killed", TEST_SLOW_FORWARD=0.01)
    deadline = time.monotonic() + 180
    while not (run / "last.pt").exists():  # epoch 1 saved: kill it in epoch 2
        assert launch.process.poll() is None and time.monotonic() < deadline, launch.output()
        time.sleep(0.05)
    launch.process.send_signal(signal.SIGTERM)  # as a scheduler stops a job
    assert launch.wait() != 0
    assert read_checkpoint(run / "last.pt")["epoch"] < 3
    resumed = Launch(tmp_path, ["train", "--resume", str(run)], name="resumed")
    assert resumed.wait() == 0, resumed.output()
    a, b = read_checkpoint(run / "last.pt"), read_checkpoint(two_processes / "last.pt")
    assert a["epoch"] == 3 and _same(a["state_dict"], b["state_dict"])
    assert _same(read_checkpoint(run / "averaged.pt")["state_dict"],
                 read_checkpoint(two_processes / "averaged.pt")["state_dict"])  # fmt: skip
    assert [r["epoch"] for r in _log_rows(run / "log.csv")] == ["1", "2", "3"]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()  # a repeated epoch's events are hidden: each step once
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]


@pytest.mark.slow
def test_time_limit_stops_every_process_after_the_same_epoch(two_processes, data, tmp_path):
    """The limit is judged on the slowest process's clocks, so both ranks leave the loop after
    epoch 1 together (one rank going on alone would hang in its next collective)."""
    run = tmp_path / "run"
    argv = [*TRAIN, "--data", str(data), "--out", str(run), "--tensorboard", "--time-limit", "1e-6"]
    launch = Launch(tmp_path, argv, driver=True, name="limited")
    assert launch.wait() == 0, launch.output()
    assert "stopped by the time limit after epoch 1 of 3" in launch.output()
    assert read_checkpoint(run / "last.pt")["epoch"] == 1
    resumed = Launch(tmp_path, ["train", "--resume", str(run), "--time-limit", "0"], name="resumed")
    assert resumed.wait() == 0, resumed.output()
    a, b = read_checkpoint(run / "last.pt"), read_checkpoint(two_processes / "last.pt")
    assert a["epoch"] == 3 and _same(a["state_dict"], b["state_dict"])


# -- two machines on loopback -----------------------------------------------------------------


@pytest.mark.slow
def test_two_nodes_on_loopback_train_as_two_processes_do(two_processes, data, tmp_path) -> None:
    """Two launchers of one process each meet at a c10d rendezvous on 127.0.0.1."""
    run, port = tmp_path / "run", free_port()
    argv = [*TRAIN, "--data", str(data), "--out", str(run)]
    nodes = [
        Launch(tmp_path, argv, name=f"node{rank}", launcher=[
            "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "loopback"])
        for rank in (0, 1)
    ]  # fmt: skip
    for node in nodes:
        assert node.wait() == 0, node.output()
    a, b = read_checkpoint(run / "last.pt"), read_checkpoint(two_processes / "last.pt")
    assert a["world_size"] == 2 and a["epoch"] == 3
    assert _same(a["state_dict"], b["state_dict"])  # the same run as two processes on one node


# -- faults: one clear error, no hang ---------------------------------------------------------


@pytest.mark.slow
def test_a_failing_rank_stops_the_run_with_its_error(data, tmp_path) -> None:
    run = tmp_path / "run"
    argv = [*TRAIN, "--data", str(data), "--out", str(run), "--dist-timeout", "60"]
    launch = Launch(tmp_path, argv, driver=True, TEST_FAIL_RANK=1, TEST_FAIL_MODE="raise",
                    TEST_FAIL_EPOCH=1)  # fmt: skip
    assert launch.wait(timeout=120) != 0
    errors = launch.errors()
    assert [e for e in errors if "rank 1: injected failure reading image" in e], launch.output()
    assert all("rank 1: injected" in e or "rank 0: stopped: another process" in e for e in errors)
    assert "Traceback" not in "".join(
        line for line in launch.output().splitlines() if "segnet" in line
    )
    assert read_checkpoint(run / "last.pt")["epoch"] == 1  # epoch 1 stays as saved


@pytest.mark.slow
def test_a_setup_failure_on_one_rank_is_reported_once(data, tmp_path) -> None:
    run = tmp_path / "run"
    argv = [*TRAIN, "--data", str(data), "--out", str(run)]
    launch = Launch(tmp_path, argv, driver=True, TEST_FAIL_RANK=1, TEST_FAIL_MODE="setup")
    assert launch.wait(timeout=120) == 2 or launch.process.returncode != 0
    assert launch.errors() == [
        "segnet: error: rank 1: data/: injected: no such folder on this node"
    ], launch.output()
    assert not run.exists()  # nothing written


@pytest.mark.slow
def test_a_hanging_rank_times_out(data, tmp_path) -> None:
    argv = [*TRAIN, "--data", str(data), "--out", str(tmp_path / "run"), "--dist-timeout", "8"]
    launch = Launch(tmp_path, argv, driver=True, TEST_FAIL_RANK=1, TEST_FAIL_MODE="hang",
                    TEST_FAIL_EPOCH=1)  # fmt: skip
    assert launch.wait(timeout=150) != 0
    errors = launch.errors()  # rank 1 is stuck, so rank 0 alone speaks
    assert len(errors) == 1, launch.output()
    assert errors[0].startswith(
        "segnet: error: rank 0: stopped: another process did not answer within --dist-timeout 8 s ("
    )


# -- in one process -------------------------------------------------------------------------


def _config(data: Path, out: Path, **extra: object) -> TrainConfig:
    values = dict(model="segnet_basic", dataset="folder", data=str(data), num_classes=3,
                  out=str(out), epochs=2, batch_size=2, lr=0.01, num_workers=0, crop=[32, 32],
                  precision="fp32", device="cpu", max_batches=1)  # fmt: skip
    return TrainConfig(**{**values, **extra})


@pytest.mark.slow
def test_summary_and_tensorboard_of_a_run_and_its_resume(tiny_folder, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    fit(_config(tiny_folder, run, tensorboard=True), progress=True)
    printed = capsys.readouterr().out
    assert "run: segnet_basic (1,416,067 parameters) on folder" in printed
    assert (
        "batch 2 per process, 2 global" in printed and "class weights median: class_0 " in printed
    )
    assert "done: 2 epochs" in printed and "best val at epoch" in printed
    summary = json.loads((run / "summary.json").read_text())
    assert summary["start"]["world_size"] == 1 and summary["start"]["images"] == {
        "train": 4,
        "val": 2,
    }
    best = read_checkpoint(run / "best.pt")
    assert summary["end"]["best_epoch"] == best["epoch"]
    assert summary["end"]["best_metrics"]["miou"] == pytest.approx(best["metrics"]["miou"])
    fit(_config(tiny_folder, run, tensorboard=True, epochs=3), resume=True, progress=False)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/mIoU")] == [1, 2, 3]
    assert json.loads((run / "summary.json").read_text())["start"]["start_epoch"] == 2
    # --overwrite removes the old run's events with its files
    fit(_config(tiny_folder, run, tensorboard=True, epochs=1), overwrite=True, progress=False)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/mIoU")] == [1]


def test_tensorboard_without_the_extra_is_one_line(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    out = tmp_path / "run"
    argv = [*TRAIN, "--data", str(tiny_folder), "--out", str(out), "--tensorboard"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["segnet: error: --tensorboard needs TensorBoard: pip install "
                   "'segnet[tensorboard]' (or pip install tensorboard)"]  # fmt: skip
    assert not out.exists()


def test_shards_cover_the_split_once() -> None:
    for world in (1, 2, 3, 8):
        shards = [Distributed(rank=r, world_size=world).shard(10) for r in range(world)]
        assert sorted(i for shard in shards for i in shard) == list(range(10))
    assert Distributed(rank=1, world_size=2).shard_size(9) == 5  # DistributedSampler pads


def test_sync_bn_needs_cuda_and_world_size_must_match() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert convert_sync_bn(model, group=ALONE, device=torch.device("cpu")) is model
    with pytest.raises(ArgumentError, match="sync_bn needs CUDA"):
        convert_sync_bn(model, group=Distributed(world_size=2), device=torch.device("cpu"))
    check_world_size(2, group=Distributed(world_size=2), run_dir="r")
    with pytest.raises(
        ArgumentError, match="r was trained by 1 process.*resume it without torchrun"
    ):
        check_world_size(1, group=Distributed(world_size=4), run_dir="r")
