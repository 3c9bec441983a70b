"""``segnet train``, ``segnet bn-stats`` and ``segnet demo``: the verbs that produce weights."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

import torch
from torch import nn

from ..data.stats import WEIGHTING
from ..deploy.runtime import PRECISIONS
from ..engine.config import OPTIMIZERS, SCHEDULES, TrainConfig
from ..engine.distributed import DEFAULT_TIMEOUT_S, Distributed
from ..errors import ArgumentError, SegNetError
from ..files import check_output_file
from .args import (
    Subparsers,
    add_data_flags,
    add_group_pattern_flag,
    add_precise_bn_flag,
    blend_weight,
    open_data,
    positive_int,
)


def add_train(sub: Subparsers) -> None:
    p = sub.add_parser("train", help="train a model (the paper's recipe by default)")
    p.add_argument("--config", help="YAML file with training keys (flags override it)")
    p.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue the run in RUN_DIR from last.pt (flags may change only how long, how fast "
        "and where it runs: --epochs, --max-batches, --val-every, --time-limit, --device, ...)",
    )  # fmt: skip
    p.add_argument("--model")
    add_data_flags(p, default_dataset=None)
    p.add_argument(
        "--out", help="run folder: last.pt, best.pt, log.csv, config.yaml "
        "(default: a new runs/MODEL_DATASET_YYYYmmdd-HHMMSS)",
    )  # fmt: skip
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace the run already in --out (its files are removed first)",
    )  # fmt: skip
    p.add_argument("--epochs", type=positive_int("--epochs"))
    p.add_argument("--batch-size", type=positive_int("--batch-size"))
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument(
        "--average-last", type=int, metavar="N",
        help="also save averaged.pt: the mean of the weights at the ends of the last N epochs, "
        "BN statistics recomputed over the last epoch's augmented samples, validated "
        "(0: off, the default)",
    )  # fmt: skip
    p.add_argument(
        "--class-weights",
        help=f"{', '.join(WEIGHTING)} (default: {TrainConfig.class_weights}), or a JSON file of per-class weights",
    )
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--scale", type=float, nargs=2, metavar=("MIN", "MAX"))
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None)
    for jitter in ("brightness", "contrast", "saturation", "hue", "gamma"):
        p.add_argument(
            f"--{jitter}", type=float, metavar="S", help=f"photometric {jitter} jitter (0: off)"
        )
    _add_split_flags(p)
    p.add_argument(
        "--encoder-weights", help="imagenet (downloads) or a torchvision-format .pth file"
    )
    p.add_argument(
        "--init-weights", metavar="CKPT",
        help="start from a segnet checkpoint's weights (fresh optimizer)",
    )  # fmt: skip
    _add_distill_flags(p)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-workers", type=int)
    _add_length_flags(p)
    _add_device_flags(p)
    _add_scale_flags(p)
    p.set_defaults(run=run_train)


def _add_distill_flags(p: argparse.ArgumentParser) -> None:
    """Knowledge distillation from a trained model (engine/distill.py)."""
    p.add_argument(
        "--distill-from", metavar="CKPT",
        help="learn a trained segnet checkpoint's per-pixel probabilities beside the labels "
        "(any architecture with the same classes; with --holdout-groups its run must have "
        "held them out too)",
    )  # fmt: skip
    p.add_argument(
        "--distill-weight", type=float, metavar="W",
        help=f"the soft targets' share of the loss, in (0, 1] (default: {TrainConfig.distill_weight:g})",
    )  # fmt: skip
    p.add_argument(
        "--distill-temperature", type=float, metavar="T",
        help=f"softmax temperature of the soft targets (default: {TrainConfig.distill_temperature:g})",
    )  # fmt: skip


def _add_split_flags(p: argparse.ArgumentParser) -> None:
    """Which images train and which validate."""
    p.add_argument(
        "--holdout-groups", nargs="+", metavar="GROUP",
        help="validate on these sequences of the train split (e.g. 0001TP), train on the rest",
    )  # fmt: skip
    add_group_pattern_flag(p)
    p.add_argument(
        "--synthetic-images", type=positive_int("--synthetic-images"), metavar="N",
        help="--dataset synthetic: N training scenes (val: a quarter, at least 8)",
    )  # fmt: skip
    p.add_argument("--synthetic-size", type=int, nargs=2, metavar=("H", "W"))


def _add_length_flags(p: argparse.ArgumentParser) -> None:
    """How often a run validates and how long each launch goes on (besides --epochs)."""
    p.add_argument("--val-every", type=positive_int("--val-every"))
    p.add_argument(
        "--max-batches", type=positive_int("--max-batches"), help="cap batches per epoch"
    )
    p.add_argument(
        "--time-limit", type=float, metavar="MINUTES",
        help="stop before an epoch that would end after MINUTES of this launch (judged by the "
        "longest epoch so far); the run stays resumable with --resume, whose launches get the "
        "same limit afresh (0: no limit, the default)",
    )  # fmt: skip
    p.add_argument(
        "--time-budget", type=float, metavar="MINUTES",
        help="end the whole run within MINUTES: a new run times a few steps and a validation on "
        "this machine, then trains as many epochs as fit (at most --epochs), its schedule timed "
        "to that count, re-planned when other work slows or frees the machine; it is saved, so "
        "--resume goes on with it (0: off, the default)",
    )  # fmt: skip


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    """Where a run computes, and in what precision."""
    p.add_argument(
        "--device", help="auto, cpu, cuda or cuda:N (under torchrun: cuda is cuda:LOCAL_RANK)"
    )
    p.add_argument(
        "--precision", choices=PRECISIONS,
        help="auto (default): fp16 AMP on CUDA, bf16 autocast on CPUs with AMX, else fp32",
    )  # fmt: skip
    p.add_argument(
        "--device-augment", action=argparse.BooleanOptionalAction, default=None,
        help="decode the training images once, keep them on --device and augment each batch "
        "there (GPU runs: no CPU loader bottleneck; the same random draws as the loader)",
    )  # fmt: skip


def _add_scale_flags(p: argparse.ArgumentParser) -> None:
    """Flags for runs beyond one process (torchrun) and for watching a run."""
    p.add_argument(
        "--sync-bn", action=argparse.BooleanOptionalAction, default=None,
        help="under torchrun on GPUs: BN statistics over every process's batch",
    )  # fmt: skip
    p.add_argument(
        "--tensorboard", action=argparse.BooleanOptionalAction, default=None,
        help="write TensorBoard events to OUT/tensorboard (pip install 'segnet[tensorboard]')",
    )  # fmt: skip
    p.add_argument(
        "--dist-timeout", type=positive_int("--dist-timeout"), metavar="SECONDS",
        default=int(DEFAULT_TIMEOUT_S),
        help="under torchrun: how long a process waits for the others before it stops "
        "(default: %(default)s)",
    )  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    """One process, or under ``torchrun`` each of them (engine/distributed.py): every process
    runs this; rank 0 alone prints and writes."""
    from ..engine.distributed import Stopped, session

    try:
        with session(timeout_s=args.dist_timeout) as group:
            return _train(args, group)
    except Stopped:  # another process failed; rank 0 printed why
        return 2


def _train(args: argparse.Namespace, group: Distributed) -> int:
    from ..engine.config import read_yaml
    from ..engine.runs import new_run_dir
    from ..engine.train import fit

    keys = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in keys}

    def configure() -> TrainConfig:
        if args.resume:
            return TrainConfig.for_resume(args.resume, config_file=args.config, overrides=overrides)
        return TrainConfig.from_sources(config_file=args.config, overrides=overrides)

    config = group.agree(configure)
    from_file = read_yaml(Path(args.config)) if args.config else {}
    claimed = None  # no --out anywhere: a new folder of its own, never another run's
    if not args.resume and args.out is None and "out" not in from_file:
        # rank 0 claims the folder; every process records the same one
        folder = group.agree(
            lambda: new_run_dir(config.model, config.dataset) if group.is_main else None
        )
        claimed = Path(group.broadcast(str(folder) if folder else None))
        config = replace(config, out=str(claimed))
        if group.is_main:
            print(f"run folder: {claimed}")
    try:
        result = fit(config, resume=bool(args.resume), overwrite=args.overwrite, group=group)
    except BaseException:
        if group.is_main and claimed is not None and not any(claimed.iterdir()):
            claimed.rmdir()  # a run that wrote nothing leaves nothing
        raise
    if not group.is_main:
        return 0
    if result["epochs_run"] == 0:
        print(f"{result['out']} has trained all {config.epochs} epochs; extend it with --epochs")
    if result["best"].get("epoch") is None:
        print(f"no validation yet; checkpoints in {result['out']}")
    else:
        print(
            f"best val mIoU {result['best']['miou']:.4f} (epoch {result['best']['epoch']}); "
            f"checkpoints in {result['out']}"
        )
    if result["stopped_at"] is not None:
        print(f"continue with: segnet train --resume {result['out']}")
    return 0


def add_bn_stats(sub: Subparsers) -> None:
    p = sub.add_parser(
        "bn-stats",
        help="precise BN: recompute BN statistics over the train split, or adapt them to "
        "unlabeled images of a new camera, drive or light (--images)",
    )  # fmt: skip
    p.add_argument("--checkpoint", required=True)
    add_data_flags(p)
    p.add_argument(
        "--images", nargs="+", metavar="PATH",
        help="unlabeled images (files, folders, globs) to estimate the statistics on instead of "
        "the train split: the model adapted to their camera, drive or light (no labels needed)",
    )  # fmt: skip
    add_precise_bn_flag(
        p, help="the training images read when no --images are given (without the flag: frames)"
    )
    p.add_argument(
        "--blend", type=blend_weight, default=1.0,
        help="weight of the new statistics; the rest stays the checkpoint's (default: 1, replace)",
    )  # fmt: skip
    p.add_argument(
        "--out",
        help="new checkpoint (default: CKPT_precise_bn.pt, with --images CKPT_adapted.pt, "
        "beside CKPT)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=4)
    p.add_argument(
        "--max-images", type=positive_int("--max-images"),
        help="use this many images spread over the split or --images (default: all)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(run=run_bn_stats)


def run_bn_stats(args: argparse.Namespace) -> int:
    from ..data.unlabeled import ImageFiles
    from ..deploy.runtime import resolve_device
    from ..engine.checkpoint import check_num_classes, load_model, save_checkpoint
    from ..engine.predict import expand_inputs

    if args.images and args.precise_bn:
        raise ArgumentError(
            "precise_bn", "reads the train split, --images reads those images: give one of them"
        )
    source = Path(args.checkpoint)
    suffix = "adapted" if args.images else "precise_bn"
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}_{suffix}.pt")
    paths = expand_inputs(args.images) if args.images else []
    check_output_file(out, argument="out", inputs=(source, *paths))
    model, config, payload = load_model(args.checkpoint)
    if args.images:
        images: Sequence = ImageFiles(paths)
    else:
        images = bn_training_data(args, payload, samples=args.precise_bn or "frames")
        check_num_classes(args.checkpoint, config, images.info.num_classes)
    device = resolve_device(args.device)
    stats = precise_bn(
        model.to(device), images, device=device, batch_size=args.batch_size,
        max_images=args.max_images, blend=args.blend, adapting=bool(args.images),
    )  # fmt: skip
    # An inference checkpoint: the optimizer state belongs to the run it came from, and the
    # statistics a previous bn-stats wrote are replaced (or blended into) by these.
    skip = {"format", "version", "model", "data", "state_dict", "optimizer", "scheduler",
            "precise_bn", "bn_adapted"}  # fmt: skip
    extra = {k: v for k, v in payload.items() if k not in skip}
    found = {"source": str(source), **stats, "blend": args.blend}
    if args.images:
        extra["bn_adapted"] = {**found, "files": [str(p) for p in paths[:3]]}  # a sample
    else:
        extra["precise_bn"] = {**found, "dataset": args.dataset, "split": "train",
                               "samples": args.precise_bn or "frames"}  # fmt: skip
    save_checkpoint(out, config=config, model=model.cpu(), **extra)
    print(
        f"checkpoint with {'adapted' if args.images else 'precise'} BN statistics written to {out}"
    )
    return 0


def bn_training_data(args: argparse.Namespace, payload: dict, *, samples: str) -> Sequence:
    """The images a checkpoint was trained on, for precise BN: the train split, less the
    sequences its run held out for validation (``holdout_groups``) -- those stay unseen; with
    ``samples`` "augmented", as its run augmented them (engine/bn.py PRECISE_BN_SAMPLES)."""
    from ..data.groups import split_groups

    dataset = open_data(args, "train", groups=False)
    run = payload.get("train_config") or {}
    if run.get("holdout_groups") and run.get("dataset") == args.dataset:
        dataset, _ = split_groups(dataset, run["holdout_groups"], pattern=run["group_pattern"])
        print(f"precise BN without the held-out groups {', '.join(run['holdout_groups'])}")
    if samples == "frames":
        return dataset
    from ..data.transforms import AugmentedDataset
    from ..engine.prepare import training_augment

    if not run:
        raise ArgumentError(
            "precise_bn",
            f"augmented: {args.checkpoint} records no training config, so not how its run "
            "augmented; use --precise-bn frames",
        )
    config = TrainConfig.from_saved(run)
    augment = training_augment(config, ignore_index=dataset.info.ignore_index)
    print(f"precise BN over the training images as its run augmented them: {augment.describe()}")
    return AugmentedDataset(dataset, augment, seed=config.seed)  # the draws of its first epoch


def precise_bn(
    model: nn.Module,
    images: Sequence,
    *,
    device: torch.device,
    batch_size: int = 4,
    max_images: int | None = None,
    blend: float = 1.0,
    adapting: bool = False,
) -> dict:
    """Recomputes BN statistics over the training images (paper Sec. 4.1), or with ``adapting``
    over unlabeled images of another domain, blended (engine/bn.py), and says so."""
    from ..engine.bn import recompute_bn_statistics

    stats = recompute_bn_statistics(
        model, images, device=device, batch_size=batch_size, max_images=max_images, blend=blend,
        progress=True,
    )  # fmt: skip
    if stats["layers"] == 0:
        raise SegNetError("this model has no BatchNorm layers: BN statistics do not apply")
    what = "images to adapt to" if adapting else "training images"
    kept = f", {1 - blend:.0%} of the previous statistics kept" if blend < 1 else ""
    print(f"{'adapted' if adapting else 'precise'} BN: {stats['layers']} BN layers recomputed "
          f"over {stats['images']} {what}{kept}")  # fmt: skip
    return stats


def add_demo(sub: Subparsers) -> None:
    from ..engine.demo import EPOCHS, IMAGES  # the demo's schedule has its one home there

    p = sub.add_parser(
        "demo",
        help="train SegNet-Basic on built-in synthetic road scenes, end to end, with an HTML report",
    )
    p.add_argument(
        "--out", default="outputs/demo",
        help="output folder: index.html (the report), metrics.json, run/, predictions/",
    )  # fmt: skip
    p.add_argument(
        "--epochs", type=positive_int("--epochs"), default=EPOCHS, help="default: %(default)s"
    )
    p.add_argument(
        "--images", type=positive_int("--images"), default=IMAGES,
        help="training scenes (default: %(default)s; validation: a quarter as many, at least 8)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from ..engine.demo import run

    run(out=Path(args.out), epochs=args.epochs, images=args.images, seed=args.seed)
    return 0
