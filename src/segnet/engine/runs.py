"""Run folders: the files a training run writes, the checks that keep two runs from sharing a
folder, and ``log.csv``.

A run folder holds ``RUN_FILES``, each written atomically (``files.atomic_write``), so a kill
leaves at most a ``.NAME.*.tmp`` temp file beside it, which the next start of the run removes;
with ``tensorboard`` also ``tensorboard/``, TensorBoard's append-only event files (a resumed run
hides the events of the epochs it repeats, an overwritten run's are removed).
``config.yaml`` and ``log.csv`` are rewritten whole from what ``last.pt`` holds, so they never
run ahead of or behind the checkpoint a resumed run continues from.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..errors import ArgumentError, SegNetError
from ..files import check_output_dir, write_text

LOG_FIELDS = ("epoch", "lr", "train_loss", "images_per_s", "epoch_s",
              "global_accuracy", "class_accuracy", "miou", "bf")  # fmt: skip
RUN_FILES = ("last.pt", "best.pt", "log.csv", "config.yaml", "curves.png", "summary.json")
EVENTS = "tensorboard/events.out.tfevents.*"  # with `tensorboard`: TensorBoard's event files


def write_record(out: Path, train_config: dict, log: Sequence[dict]) -> None:
    """config.yaml and log.csv as the last.pt on disk has them."""
    write_text(out / "config.yaml", yaml.safe_dump(train_config))
    write_log(out / "log.csv", log)


def check_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Before any work: ``out`` is a folder this run may write, holding no other run unless it
    is resumed (``resume``) or replaced (``overwrite``)."""
    if resume and overwrite:
        raise ArgumentError(
            "overwrite", "cannot be combined with `resume`: a resumed run keeps its files"
        )
    check_output_dir(out, argument="out")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not (resume or overwrite):
        raise ArgumentError(
            "out",
            f"{out} already holds a run ({', '.join(held)}): continue it with `resume` {out}, "
            "replace it with `overwrite`, or choose another folder",
        )


def clear_run_dir(out: Path, *, old_run: bool) -> None:
    """Removes the temp files a killed write left (``atomic_write`` names them ``.NAME.*.tmp``)
    and, with ``old_run`` (``overwrite``), the files of the run that was there."""
    for name in RUN_FILES:
        for temp in out.glob(f".{name}.*.tmp"):
            temp.unlink(missing_ok=True)
        if old_run:
            (out / name).unlink(missing_ok=True)
    if old_run:  # the old run's events would show beside the new run's in TensorBoard
        for events in out.glob(EVENTS):
            events.unlink(missing_ok=True)


def new_run_dir(model: str, dataset: str, *, root: str | Path = "runs") -> Path:
    """Creates and returns a fresh folder for a run whose ``out`` was not chosen,
    ``runs/{model}_{dataset}_{YYYYmmdd-HHMMSS}``: no two runs share one by default (a run that
    starts in the same second gets ``-2``, ``-3``, ...; creating it claims the name)."""
    check_output_dir(root, argument="out")
    base = Path(root) / f"{model}_{dataset}_{time.strftime('%Y%m%d-%H%M%S')}"
    Path(root).mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise SegNetError(f"{base}: too many runs started this second; give `out`")


def write_log(path: Path, rows: Sequence[dict]) -> None:
    """log.csv, rewritten whole (atomically) from the rows ``last.pt`` holds."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=LOG_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in LOG_FIELDS})
    write_text(path, text.getvalue())


def read_log_rows(path: Path, epochs: int) -> list[dict]:
    """log.csv's rows for epochs 1..``epochs`` (a resumed run's repeats: the last one)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = {int(row["epoch"]): row for row in csv.DictReader(f) if row.get("epoch")}
    return [rows[e] for e in sorted(rows) if e <= epochs]


def append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in LOG_FIELDS})
