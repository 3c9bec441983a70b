"""Fitting a new run to a wall-clock budget (``time_budget`` minutes): as many epochs as end
within it on this machine, at most ``epochs``, with the schedule timed to that count from step 1.

Two 2-core CPUs seen here differ ~2x in training speed (an AVX2 Zen 3 against a Zen 4, more with
AMX), so a fixed epoch count that fits three hours on one runs past them on the other, and
``time_limit`` then stops it mid-decay, at a high learning rate. Before epoch 1 a new run times,
on a throwaway copy of its model and optimizer, one warm-up and a few timed training steps of
its own epoch-1 batches (augmentation, teacher and precision included) and a validation of a few
val images, and keeps the largest epoch count whose training, validations and end (the averaged
weights' BN pass and validation) end within the budget. The real run then starts exactly as one
given ``epochs`` set to that count: the probe draws no randomness the run uses (batches and
augmentation are seeded by (seed, epoch, index), dropout by (seed, epoch)). The count is saved
with the run (its ``train_config``), so ``--resume`` goes on with it and probes nothing.

The estimate is as good as the machine is steady: work started beside the run slows every epoch
after the probe. ``MARGIN`` of the budget is kept back for that, for plots and for probe noise,
and from epoch ``REPLAN_AFTER`` on the launch compares its recent epochs with the probe: when
the epochs that fit differ from those planned, :func:`replan` makes them the plan and squeezes
or stretches the rest of the schedule to them (a 125-minute run on a shared Zen 3 ran 30
minutes over before re-plans).
Under torchrun each process probes its own steps (without DDP's gradient exchange, which the
margin has to cover) and every process keeps the count the slowest one's figures allow.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.groups import Subset
from ..errors import ArgumentError
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .distributed import Distributed
from .evaluate import evaluate
from .prepare import Run, epoch_loader, make_scheduler
from .recipe import make_optimizer
from .steps import train_one_epoch

# Of the budget, kept for epochs slower than the probed steps, plots and other work: three
# launches of one recipe on one Zen 3 probed 5.2 and 6.4 s a step, and the run's steps took 6.0.
MARGIN = 0.10
PROBE_STEPS = 3  # timed training steps, after one warm-up step
PROBE_IMAGES = 2  # val images timed, after a warm-up pass over the same images
# Re-plans judge the mean step of the last RECENT_EPOCHS epochs, from epoch REPLAN_AFTER on:
# recent enough to see other work start, more than one epoch so that one slow one does not cut
REPLAN_AFTER = 2
RECENT_EPOCHS = 2


@dataclass(frozen=True)
class Timing:
    """What the probe measured, in seconds; ``elapsed_s``: since the launch began, probe included."""

    step_s: float  # one training step (a batch): data, forward, loss, backward, optimizer
    validation_s: float  # one whole validation of this process's share of the val split
    save_s: float  # writing one checkpoint as last.pt holds it (weights and optimizer)
    end_s: float  # after the last epoch: the averaged weights' BN pass and validation (0: none)
    elapsed_s: float

    def slowest(self, group: Distributed) -> Timing:
        """Every field as the slowest process measured it: every process decides alike."""
        return Timing(**{key: group.max(value) for key, value in asdict(self).items()})


def epochs_within(
    budget_min: float,
    timing: Timing,
    *,
    steps_per_epoch: int,
    val_every: int,
    max_epochs: int,
    done: int = 0,
) -> int:
    """The most epochs (at most ``max_epochs``) such that those after the first ``done`` (whose
    time ``timing.elapsed_s`` holds) -- their training, validations (every ``val_every``
    epochs and after the last) and checkpoints (``last.pt`` each epoch, ``best.pt`` at most
    each validation) -- and the end fit in what is left of ``budget_min`` minutes less
    ``MARGIN`` of it; ``done`` if not even one more does."""
    available = (60.0 * budget_min - timing.elapsed_s) * (1 - MARGIN) - timing.end_s

    def needs(epochs: int) -> float:
        validations = epochs // val_every - done // val_every + (epochs % val_every != 0)
        training = (epochs - done) * (steps_per_epoch * timing.step_s + timing.save_s)
        return training + validations * (timing.validation_s + timing.save_s)

    fitting = done
    for epochs in range(done + 1, max_epochs + 1):  # needs() grows: stop at the first miss
        if needs(epochs) > available:
            break
        fitting = epochs
    return fitting


def probe(run: Run) -> Timing:
    """Times this process's training steps and validation on copies of ``run``'s model and
    optimizer (``run`` itself is untouched). ``elapsed_s`` is left 0 for the caller."""
    config = run.config
    model = copy.deepcopy(run.model)
    optimizer = make_optimizer(config, model)  # its momentum buffers are the probe's own
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.precision == "fp16")
    steps = min(PROBE_STEPS, run.steps_per_epoch)

    def train(batches: int) -> float:
        run.data.set_epoch(0)  # epoch 1's batches; set again by the run itself
        _, images_per_s = train_one_epoch(
            model, epoch_loader(run, 0), loss_fn=run.loss_fn, optimizer=optimizer,
            scheduler=scheduler, scaler=scaler, device=run.device, precision=run.precision,
            channels_last=run.channels_last, max_batches=batches, desc="timing steps",
            progress=False, distillation=run.distillation,
        )  # fmt: skip
        return batches * config.batch_size / images_per_s

    train(1)  # warm-up: kernels chosen, memory allocated, caches filled
    step_s = train(steps) / steps
    validation_s = _validation_s(model, run)
    with tempfile.TemporaryDirectory() as folder:  # not the run folder: nothing of it is written
        tic = time.perf_counter()
        save_checkpoint(Path(folder) / "probe.pt", config=run.model_config, model=model,
                        optimizer=optimizer.state_dict())  # fmt: skip
        save_s = time.perf_counter() - tic
    end_s = 0.0
    if config.average_last:  # BN statistics over the training samples (forward only), validated
        train_batches = math.ceil(len(run.data) / config.batch_size)
        end_s = train_batches * step_s / 3 + validation_s  # a forward: ~a third of a step
    return Timing(step_s=step_s, validation_s=validation_s, save_s=save_s, end_s=end_s,
                  elapsed_s=0.0)  # fmt: skip


def _validation_s(model: torch.nn.Module, run: Run) -> float:
    """A validation of this process's share of the val split, scaled from ``PROBE_IMAGES``
    images (the second of two passes over them: the first chooses kernels)."""
    few = Subset(run.val_set, range(min(PROBE_IMAGES, len(run.val_set))))
    for _ in range(2):
        tic = time.perf_counter()
        evaluate(model, few, device=run.device, precision=run.precision, progress=False)
        seconds = time.perf_counter() - tic
    share = math.ceil(len(run.val_set) / run.group.world_size)
    return seconds * share / len(few)


def fit_to_budget(run: Run, *, started: float, progress: bool) -> Timing:
    """A new run's epochs cut to those that end within ``time_budget`` minutes of ``started``
    (a ``time.perf_counter()``), judged by the slowest process's probe, so that every process
    keeps the same count. Returns the probe's figures, which :func:`replan` compares the
    epochs with."""
    group = run.group
    if progress and group.is_main:
        tqdm.write(f"timing {PROBE_STEPS} training steps and a validation for the time budget ...")
    timing = group.agree(lambda: probe(run))
    timing = replace(timing, elapsed_s=time.perf_counter() - started).slowest(group)
    group.agree(lambda: keep_fitting_epochs(run, timing))
    return timing


def replan(run: Run, probed: Timing, *, done: int, elapsed_s: float) -> str | None:
    """After epoch ``done`` (from ``REPLAN_AFTER`` on) of the launch that fitted the budget:
    the epochs that fit now, judged by its last ``RECENT_EPOCHS`` epochs' steps against
    ``probed`` (other work that started or ended on the machine), become the plan when they
    differ from it -- fewer when the epochs planned no longer end within the budget, more (up
    to the run's ``epochs``) when the machine got faster, by two or more (epochs on one machine
    vary by ~10%: one more would flip back and forth) -- and at least one more epoch, so the
    rate can come down. The schedule is re-timed from here (recipe.py: the rest of the decay
    goes on from the rate reached, squeezed or stretched to the new count). Judged on the
    slowest process's clocks. Returns the line that says so, None when the plan stands.
    ``elapsed_s``: since the launch began."""
    config, group = run.config, run.group
    if done < REPLAN_AFTER or done >= config.epochs:
        return None
    recent = [float(row["epoch_s"]) for row in run.log[-RECENT_EPOCHS:]]
    step_s = group.max(sum(recent) / len(recent) / run.steps_per_epoch)
    slower = step_s / probed.step_s  # validations and the end slow down alike
    now = Timing(step_s=step_s, validation_s=probed.validation_s * slower, save_s=probed.save_s,
                 end_s=probed.end_s * slower, elapsed_s=group.max(elapsed_s))  # fmt: skip
    epochs = max(done + 1, epochs_within(
        config.time_budget, now, steps_per_epoch=run.steps_per_epoch, val_every=config.val_every,
        max_epochs=run.budget["max_epochs"], done=done,
    ))  # fmt: skip
    if config.epochs <= epochs <= config.epochs + 1:  # one more: within the epochs' own noise
        return None
    run.budget.setdefault("replans", []).append(
        {"after_epoch": done, "epochs": epochs, "step_s": round(step_s, 3)}
    )
    run.config = replace(config, epochs=epochs)
    run.scheduler = make_scheduler(run.config, run.optimizer, run.steps_per_epoch,
                                   budget=run.budget, taken=run.scheduler.last_epoch)  # fmt: skip
    if run.summary:  # rank 0
        run.summary.update(epochs=epochs, time_budget=run.budget)
    return (
        f"time budget: the last {len(recent)} epoch(s) ran {slower:.2f}x the probed steps "
        f"({step_s:.2f} s a step), so {epochs} epochs end within {config.time_budget:g} min, "
        f"not the {config.epochs} planned: the rate now decays to its end by epoch {epochs}"
    )


def keep_fitting_epochs(run: Run, timing: Timing) -> None:
    """Sets ``run``'s epochs to those that fit ``run.config.time_budget`` by ``timing``, times
    its schedule to them and records the decision in its start summary. Raises an error naming
    ``time_budget`` if fewer epochs fit than the run needs (one, and its warm-up's)."""
    config = run.config
    epochs = epochs_within(
        config.time_budget, timing, steps_per_epoch=run.steps_per_epoch,
        val_every=config.val_every, max_epochs=config.epochs,
    )  # fmt: skip
    least = max(1, math.ceil(config.warmup_epochs))
    if epochs < least:
        epoch_min = (run.steps_per_epoch * timing.step_s + timing.validation_s) / 60
        raise ArgumentError(
            "time_budget",
            f"{config.time_budget:g} minutes fit {epochs} epoch(s) on this machine, fewer than "
            f"the {least} the run needs (an epoch with its validation takes ~{epoch_min:.1f} "
            f"min, and {timing.elapsed_s / 60:.1f} min went on reading data and timing steps): "
            "give more minutes, or train fewer images or a smaller `crop`",
        )
    run.config = replace(config, epochs=epochs)
    run.scheduler = make_scheduler(run.config, run.optimizer, run.steps_per_epoch)
    run.budget = decision(config, timing, epochs=epochs)
    if run.summary:  # rank 0
        run.summary.update(epochs=epochs, time_budget=run.budget)


def decision(config: TrainConfig, timing: Timing, *, epochs: int) -> dict:
    """The budget's record in ``summary.json`` and the checkpoint: what was measured, what
    was kept."""
    return {
        "minutes": config.time_budget,
        "epochs": epochs,
        "max_epochs": config.epochs,
        "step_s": round(timing.step_s, 3),
        "validation_s": round(timing.validation_s, 1),
        "save_s": round(timing.save_s, 2),
        "end_s": round(timing.end_s, 1),
        "setup_s": round(timing.elapsed_s, 1),
    }
