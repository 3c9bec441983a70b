"""Training: ``fit(config)`` runs epochs, evaluates on val, and checkpoints every epoch.

``RUN_DIR/last.pt`` (everything needed to resume, the log rows included) and ``RUN_DIR/best.pt``
(highest val mIoU) are written atomically after each epoch, then ``config.yaml`` (what ran) and
``log.csv`` (one row per epoch) are rewritten from what ``last.pt`` holds and, when matplotlib
is installed, ``curves.png`` (loss and val G/C/mIoU per epoch). Data order, augmentation and
dropout are seeded by (seed, epoch), so ``--resume`` continues exactly as an uninterrupted run
would -- after a kill at any point too: a resumed run removes the temp files a killed write left
and repairs ``config.yaml`` and ``log.csv`` from ``last.pt``. A run starts and ends with a
summary, printed and kept in ``summary.json`` (summary.py); with ``tensorboard`` it also writes
event files under ``RUN_DIR/tensorboard`` (tensorboard.py).

Under ``torchrun`` every process trains its shard with DistributedDataParallel and only rank 0
writes (distributed.py); ``batch_size`` is per process, the global batch ``world_size`` times
it, and a run resumes with the world size it was trained with.

Faults stop a run before they reach the disk: a folder that holds another run is refused
unless the run is resumed or ``overwrite`` is given (checked before any data is read; the run
folder's rules live in runs.py), and a loss or weight that becomes NaN or infinite stops
training (:class:`TrainingDiverged`) before it is saved, so every checkpoint on disk is finite.
The loss, optimizer and schedule live in recipe.py, the optimizer steps of an epoch in steps.py,
the time budget in budget.py; distillation from a teacher in distill.py.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .averaging import FILE as AVERAGED_FILE
from .averaging import window_start
from .bn import recompute_bn_statistics
from .budget import Timing, fit_to_budget, replan
from .checkpoint import read_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import (
    Distributed,
    Stopped,
    average_buffers,
    check_world_size,
    start,
    wrap,
)
from .evaluate import evaluate
from .plots import matplotlib_available, plot_training_curves
from .prepare import Run, epoch_loader, prepare
from .prepare import open_split as open_split  # re-exported: its home was here
from .prepare import training_splits as training_splits
from .recipe import SegmentationLoss as SegmentationLoss
from .recipe import lr_factor as lr_factor
from .recipe import non_finite
from .runs import LOG_FIELDS as LOG_FIELDS  # re-exported: the log's home was here
from .runs import append_log as append_log
from .runs import check_run_dir, clear_run_dir, write_record
from .steps import TrainingDiverged as TrainingDiverged  # re-exported: its home was here
from .steps import train_one_epoch as train_one_epoch
from .summary import (
    METRICS,
    end_summary,
    format_end,
    format_epoch,
    format_metrics,
    format_start,
    write_summary,
)
from .tensorboard import FOLDER as TENSORBOARD_FOLDER
from .tensorboard import RunBoard, require_tensorboard


def _train_epoch(run: Run, epoch: int, *, progress: bool) -> dict:
    """One epoch of training, seeded by (seed, epoch); returns its log row."""
    config, group = run.config, run.group
    # dropout: the same stream on resume, and each process its own
    torch.manual_seed((config.seed * 100_003 + epoch) * group.world_size + group.rank)
    run.data.set_epoch(epoch)
    tic = time.perf_counter()
    loss, speed = train_one_epoch(
        run.trainer, epoch_loader(run, epoch), loss_fn=run.loss_fn, optimizer=run.optimizer,
        scheduler=run.scheduler, scaler=run.scaler, device=run.device, precision=run.precision,
        channels_last=run.channels_last, max_batches=config.max_batches,
        desc=f"epoch {epoch + 1}/{config.epochs}", group=group, progress=progress and group.is_main,
        distillation=run.distillation,
    )  # fmt: skip
    average_buffers(run.model, group)  # BN statistics: every process the same for validation
    return {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "train_loss": loss,
            "images_per_s": speed, "epoch_s": time.perf_counter() - tic}  # fmt: skip


def _save(run: Run, out: Path, epoch: int, metrics: dict, *, improved: bool) -> None:
    """best.pt before last.pt: a kill between them leaves last.pt an epoch behind, and resuming
    redoes that epoch and rewrites best.pt identically. config.yaml and log.csv follow last.pt."""
    extra = {"epoch": epoch + 1, "metrics": metrics, "train_config": run.config.to_dict(),
             "world_size": run.group.world_size, "time_budget": run.budget,
             "class_weights": _class_weights(run)}  # fmt: skip
    if improved:
        save_checkpoint(out / "best.pt", config=run.model_config, model=run.model, **extra)
    average = {} if run.average is None else {"average": run.average.state_dict(),
                                              "averaged_metrics": run.averaged_metrics}  # fmt: skip
    save_checkpoint(
        out / "last.pt", config=run.model_config, model=run.model, optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(), scaler=run.scaler.state_dict(), best=run.best,
        log=run.log, **average, **extra,
    )  # fmt: skip
    write_record(out, run.config.to_dict(), run.log)
    write_summary(out, run.summary)  # with the first checkpoint: a run that saved none wrote none


def _setup(
    config: TrainConfig, out: Path, *, resume: bool, overwrite: bool, group: Distributed
) -> tuple[Run, dict | None]:
    """Every check and the whole preparation, before anything is written."""
    check_run_dir(out, resume=resume, overwrite=overwrite)  # before any data is read
    state = read_checkpoint(out / "last.pt") if resume else None
    if state is not None:
        check_world_size(state.get("world_size", 1), group=group, run_dir=out)
    if config.tensorboard and group.is_main:
        require_tensorboard()
    return prepare(config, state, group), state


def fit(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    group: Distributed | None = None,
) -> dict:
    """Trains per ``config`` into ``config.out``; with ``resume`` continues the run there from
    its ``last.pt`` (``TrainConfig.for_resume`` builds a ``config`` that keeps its recipe), with
    ``overwrite`` first removes the run there (a folder holding a run is refused otherwise).
    ``group``: this process's place under torchrun (default: :func:`distributed.start`,
    which joins torchrun's process group when there is one).

    A loss or weight that becomes non-finite raises :class:`TrainingDiverged` naming the last
    good checkpoint; nothing non-finite is saved. With ``config.time_limit`` the run stops,
    saved and resumable, before an epoch that would end after it (``stopped_at``: the last
    epoch trained; None when the run reached ``config.epochs``). Returns the best and latest
    val metrics, the run folder, how many epochs this call trained (0: the run had finished)
    and ``stopped_at``.
    """
    tic, group, out = time.perf_counter(), group or start(), Path(config.out)
    run, state = group.agree(
        lambda: _setup(config, out, resume=resume, overwrite=overwrite, group=group)
    )
    run.trainer = wrap(run.model, group=group, device=run.device)  # a collective under torchrun
    probed = None  # with a time budget, in the launch that fitted it: the probe's figures
    if state is None and config.time_budget:
        probed = fit_to_budget(run, started=tic, progress=progress)
    plots = group.is_main and _open_run(run, out, state, overwrite=overwrite, progress=progress)
    metrics: dict = state.get("metrics", {}) if state else {}  # the latest val metrics
    try:
        metrics, stopped_at = _epochs(run, out, metrics, started=tic, probed=probed, plots=plots,
                                      progress=progress)  # fmt: skip
    except TrainingDiverged as error:
        if not group.is_main:
            raise Stopped(error.message) from None
        raise TrainingDiverged(_diverged(run, out, error.message)) from None
    finally:
        if run.board is not None:
            run.board.close()
    config = run.config  # its epochs: those a time budget kept
    epochs_run = max(0, (stopped_at or config.epochs) - run.start_epoch)
    if group.is_main:
        end = end_summary(best=run.best, log=run.log, wall_s=time.perf_counter() - tic,
                          epochs_run=epochs_run, averaged=run.averaged_metrics,
                          planned=config.epochs, time_limited=stopped_at is not None)  # fmt: skip
        write_summary(out, run.summary, end)
        if progress:
            tqdm.write(format_end(end))
    return {"best": run.best, "last": metrics, "out": str(out), "epochs_run": epochs_run,
            "stopped_at": stopped_at}  # fmt: skip


def _epochs(
    run: Run,
    out: Path,
    metrics: dict,
    *,
    started: float,
    probed: Timing | None,
    plots: bool,
    progress: bool,
) -> tuple[dict, int | None]:
    """This launch's epochs, re-planned under a time budget after each when ``probed`` (the
    launch that fitted it) and stopped by ``time_limit``. Returns the latest val metrics and
    the epoch a time limit stopped after (None: the run reached its end)."""
    replanner = None if probed is None else (
        lambda done: replan(run, probed, done=done, elapsed_s=time.perf_counter() - started))  # fmt: skip
    longest, epoch = 0.0, run.start_epoch  # the longest epoch so far (s)
    while epoch < run.config.epochs:  # run.config's: a time budget's re-plan may change it
        began = time.perf_counter()
        metrics = _run_epoch(run, out, epoch, metrics, plots=plots, progress=progress,
                             replan=replanner)  # fmt: skip
        longest = max(longest, time.perf_counter() - began)
        epoch += 1
        if epoch < run.config.epochs and _out_of_time(
            run.config.time_limit, elapsed=time.perf_counter() - started, longest=longest,
            group=run.group,
        ):  # fmt: skip
            return metrics, epoch
    return metrics, None


def _out_of_time(limit_min: float, *, elapsed: float, longest: float, group: Distributed) -> bool:
    """Whether one more epoch as long as the longest so far (validation and saving included)
    would end after ``limit_min`` minutes of this launch (0: no limit). Decided on the slowest
    process's clocks, so that every process stops after the same epoch."""
    if limit_min <= 0:
        return False
    return group.max(elapsed) + group.max(longest) > 60.0 * limit_min


def _open_run(run: Run, out: Path, state: dict | None, *, overwrite: bool, progress: bool) -> bool:
    """Rank 0, before epoch 1 of this launch: the folder cleared of temp files (and of the old
    run with ``overwrite``), the record repaired, the summary printed (written with the first
    checkpoint), TensorBoard opened. Returns whether curves.png can be drawn."""
    clear_run_dir(out, old_run=overwrite)
    if state is not None:  # a kill may have come between last.pt and these
        write_record(out, state["train_config"], run.log)
    if progress:
        tqdm.write(format_start(run.summary))
    if run.config.tensorboard:
        run.board = RunBoard(out / TENSORBOARD_FOLDER, first_epoch=run.start_epoch + 1)
    plots = matplotlib_available()
    if not plots:
        tqdm.write("note: matplotlib is not installed, so no curves.png (pip install segnet[plot])")
    return plots


def _run_epoch(
    run: Run,
    out: Path,
    epoch: int,
    metrics: dict,
    *,
    plots: bool,
    progress: bool,
    replan: Callable[[int], str | None] | None = None,
) -> dict:
    """Trains, checks, validates (every ``val_every`` epochs and at the end) and saves one
    epoch; returns the latest val metrics. ``replan``: a time budget's (budget.py), called
    with the epochs done before they are saved, so that ``last.pt`` keeps its new plan."""
    config, group = run.config, run.group
    row = _train_epoch(run, epoch, progress=progress)
    broken = non_finite(run.model, run.optimizer)  # the same weights in every process
    if broken is not None:
        raise TrainingDiverged(f"{broken} became non-finite in epoch {epoch + 1}/{config.epochs}")
    if run.average is not None:
        first = window_start(epochs=config.epochs, average_last=config.average_last)
        if epoch + 1 >= first:
            run.average.update(run.model, epoch=epoch + 1, first=first)
    improved, model = False, None  # model: the one validated, if this epoch validates
    if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs:
        model = _evaluation_model(run)
        metrics = evaluate(model, run.val_set, device=run.device, precision=run.precision,
                           progress=progress and group.is_main, group=group)  # fmt: skip
        row.update({key: metrics.get(key) for _, key in METRICS})
        improved = metrics["miou"] > run.best["miou"]
        if improved:
            run.best = {"miou": metrics["miou"], "epoch": epoch + 1}
    if run.average is not None and epoch + 1 == config.epochs:
        # before last.pt: a kill between them redoes this epoch and rewrites averaged.pt alike
        _save_average(run, out, epoch, progress=progress)
    run.log.append(row)
    run.saved_epoch = epoch + 1
    said = replan(epoch + 1) if replan is not None else None  # every process: a collective
    if not group.is_main:
        return metrics
    if run.board is not None:  # before last.pt: a resumed run hides a repeated epoch's events
        run.board.log(row, metrics, model, val_set=run.val_set, palette=run.model_config.palette,
                      device=run.device, precision=run.precision)  # fmt: skip
    _save(run, out, epoch, metrics, improved=improved)
    if plots and (row.get("miou") is not None or epoch + 1 == config.epochs):  # ~0.3 s a plot
        plot_training_curves(out / "log.csv", out / "curves.png")
    if progress:
        # epochs only (validations and saving add a little): the median logged epoch, which an
        # epoch slowed by other work (or paused) does not move
        left = (run.config.epochs - epoch - 1) * statistics.median(
            float(r["epoch_s"]) for r in run.log
        )
        tqdm.write(format_epoch(row, run.best, left_s=left))
        if said:
            tqdm.write(said)
    return metrics


def _save_average(run: Run, out: Path, epoch: int, *, progress: bool) -> None:
    """The averaged weights (averaging.py), BN statistics recomputed over the training images
    as the last epoch augmented them (every process alike: the same weights and images),
    validated, saved as averaged.pt."""
    model = run.model_config.build()  # plain BN even under sync_bn: the keys are the same
    model.load_state_dict(run.model.state_dict())  # BN buffers; the parameters come next
    model = run.average.apply_to(model).to(run.device)
    # Augmented, as the running statistics of every epoch were: those of the clean frames are
    # narrower and cost 1.0-2.4 mIoU on drives the model never saw (three twins, docs/results.md).
    stats = recompute_bn_statistics(model, run.data, device=run.device,
                                    batch_size=run.config.batch_size)  # fmt: skip
    metrics = evaluate(model, run.val_set, device=run.device, precision=run.precision,
                       progress=progress and run.group.is_main, group=run.group)  # fmt: skip
    epochs = run.average.epochs
    metrics["averaged"] = {"epochs": [epochs[0], epochs[-1]], "count": len(epochs),
                           "bn_images": stats["images"], "bn_samples": "augmented"}  # fmt: skip
    run.averaged_metrics = {key: metrics[key] for _, key in METRICS} | {
        "averaged": metrics["averaged"]
    }
    if run.group.is_main:
        save_checkpoint(out / AVERAGED_FILE, config=run.model_config, model=model, epoch=epoch + 1,
                        metrics=metrics, train_config=run.config.to_dict(),
                        class_weights=_class_weights(run))  # fmt: skip
        if progress:
            tqdm.write(f"weight average of epochs {epochs[0]}-{epochs[-1]}, BN over "
                       f"{stats['images']} augmented training images: val {format_metrics(metrics)} "
                       f"-> {out / AVERAGED_FILE}")  # fmt: skip


def _class_weights(run: Run) -> list[float] | None:
    """The loss's class weights, kept in checkpoints for `--logit-adjust` (engine/adjust.py)."""
    weight = run.loss_fn.weight
    return None if weight is None else weight.tolist()


def _evaluation_model(run: Run) -> nn.Module:
    """The weights as a checkpoint holds them: SyncBatchNorm layers become BatchNorm again,
    so validation folds BN as ``segnet evaluate`` of the checkpoint does."""
    if not any(isinstance(m, nn.SyncBatchNorm) for m in run.model.modules()):
        return run.model
    model = run.model_config.build()
    model.load_state_dict(run.model.state_dict())
    return model.to(run.device)


def _diverged(run: Run, out: Path, what: str) -> str:
    """The one-line message of a diverged run: what broke, the last good checkpoint, what to do."""
    text = f"training diverged and stopped: {what}; "
    lower = f"start a new run with a lower `lr` than {run.config.lr:g}"
    if run.saved_epoch == 0:
        return text + f"no checkpoint was saved yet: {lower}"
    last = out / "last.pt"
    return (
        text + f"the last good checkpoint is {last} (epoch {run.saved_epoch}): {lower}, "
        f"from scratch or from it with `init_weights` {last}"
    )
