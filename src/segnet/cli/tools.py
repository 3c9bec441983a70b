"""``segnet data``, ``segnet models``, ``segnet export`` and ``segnet benchmark``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..data import SPLITS
from ..deploy.export import EXPORT_FORMATS, EXPORT_PRECISIONS, GRAPH_SIZE
from ..deploy.runtime import INFERENCE_PRECISIONS
from ..errors import ArgumentError
from ..files import check_output_file, write_json

if TYPE_CHECKING:
    from torch import nn

from .args import (
    LOGIT_ADJUST_HELP,
    Subparsers,
    add_calibration_flags,
    add_data_flags,
    add_engine_flags,
    add_group_pattern_flag,
    calibration_from_args,
    image_size,
    logit_adjust,
    open_data,
    positive_int,
)


def add_data(sub: Subparsers) -> None:
    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="TOOL")
    s = data_sub.add_parser("stats", help="class pixel frequencies and median-frequency weights")
    add_data_flags(s, split="train")
    s.add_argument("--out", help="JSON file (default: print only)")
    s.set_defaults(run=run_data_stats)
    v = data_sub.add_parser("verify", help="read every image and mask once; list every problem")
    add_data_flags(v)
    v.add_argument("--splits", nargs="+", default=["train", "val"], choices=SPLITS, metavar="SPLIT")
    v.set_defaults(run=run_data_verify)
    g = data_sub.add_parser("groups", help="sequences in a split (for --holdout-groups / --groups)")
    add_data_flags(g, split="train")
    add_group_pattern_flag(g)
    g.set_defaults(run=run_data_groups)


def run_data_stats(args: argparse.Namespace) -> int:
    from ..data.stats import dataset_stats

    if args.out:
        check_output_file(args.out, argument="out")
    stats = dataset_stats(open_data(args, args.split))
    print(f"{'class':<14}{'fraction':>10}{'median-freq weight':>20}")
    for row in stats["classes"]:
        print(f"{row['name']:<14}{row['fraction']:>10.4f}{row['median_frequency_weight']:>20.4f}")
    print(f"{stats['num_images']} images ({args.split}); void excluded")
    if args.out:
        write_json(args.out, stats)
        print(f"stats written to {args.out}")
    return 0


def run_data_verify(args: argparse.Namespace) -> int:
    from ..data.verify import Verification, verify_dataset

    found = Verification()
    for split in args.splits:
        verify_dataset(open_data(args, split), found=found)
    for problem in found.problems:
        print(f"problem: {problem}")
    for path, pixels in found.unknown_colours.items():
        print(f"warning: {path}: {pixels} pixels of colours not in the palette are read as void")
    sizes = ", ".join(f"{w}x{h} ({n})" for (h, w), n in found.sizes.most_common(5))
    print(f"{found.images} images read ({', '.join(args.splits)}); sizes (WxH): {sizes or '-'}")
    if not found.ok:
        raise ArgumentError("data", f"{args.data}: {len(found.problems)} problem(s), listed above")
    return 0


def run_data_groups(args: argparse.Namespace) -> int:
    from ..data.groups import DEFAULT_GROUP_PATTERN, group_counts

    dataset = open_data(args, args.split)
    counts = group_counts(dataset, args.group_pattern or DEFAULT_GROUP_PATTERN)
    for group, count in counts.items():
        print(f"{group:<24}{count:>6}")
    print(f"{len(counts)} groups, {len(dataset)} images ({args.split})")
    return 0


def add_models(sub: Subparsers) -> None:
    p = sub.add_parser("models", help="list registered models, parameter counts, shipped weights")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'fcn*'")
    p.add_argument("--num-classes", type=positive_int("--num-classes"), default=11)
    p.set_defaults(run=run_models)


def run_models(args: argparse.Namespace) -> int:
    from ..engine.weights import available_weights
    from ..models import count_parameters, list_models

    shipped = available_weights()
    print(f"{'model':<40}{'parameters':>14}  shipped weights")
    for name in list_models(args.pattern):
        count = count_parameters(name, num_classes=args.num_classes)  # meta device: no memory
        print(f"{name:<40}{count:>14,}  {', '.join(shipped.get(name, [])) or '-'}")
    return 0


# besides the graphs of deploy/export.py: an fp16 inference checkpoint, as the package ships
WEIGHTS_FORMAT = "weights"


def add_export(sub: Subparsers) -> None:
    p = sub.add_parser(
        "export",
        help="ONNX or torch.export (.pt2) file of a checkpoint's model, or its fp16 weights",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument(
        "--format", default="onnx", choices=(*EXPORT_FORMATS, WEIGHTS_FORMAT),
        help=f"{WEIGHTS_FORMAT}: an inference-only checkpoint with fp16 weights (config, classes, "
        "metrics inside; no optimizer), as the package ships; loads wherever --checkpoint does",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="model.onnx, model.pt2 or model.pt")
    p.add_argument(
        "--size", type=image_size, default=None,
        help=f"input HxW the graph is built for (default {GRAPH_SIZE[0]}x{GRAPH_SIZE[1]}; "
        f"not with --format {WEIGHTS_FORMAT})",
    )  # fmt: skip
    p.add_argument(
        "--dynamic", action="store_true",
        help="free batch, H and W (H, W multiples of 32; --size must be one)",
    )  # fmt: skip
    p.add_argument(
        "--precision", default="fp32", choices=EXPORT_PRECISIONS,
        help="int8: a quantized ONNX graph (any N, H, W), calibrated on training images",
    )  # fmt: skip
    add_calibration_flags(p)
    p.add_argument(
        "--logit-adjust", type=logit_adjust, default=0.0, metavar="TAU",
        help=f"{LOGIT_ADJUST_HELP}; folded into the score layer's bias, so every format and "
        "backend runs it (default 0; choose TAU with `segnet evaluate --logit-adjust`)",
    )  # fmt: skip
    p.add_argument(
        "--no-check", dest="check", action="store_false",
        help="skip running the file (onnxruntime / torch.export) against PyTorch",
    )  # fmt: skip
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..deploy.export import export_model, write_metadata
    from ..engine.adjust import adjust_model
    from ..engine.checkpoint import load_model

    final = check_output_file(args.out, argument="out", inputs=(args.checkpoint,))
    if args.format == WEIGHTS_FORMAT:
        return _export_weights(args, final)
    args.size = args.size or GRAPH_SIZE
    model, config, payload = load_model(args.checkpoint)
    adjusted = {}
    if args.logit_adjust:
        adjusted = {"logit_adjust": adjust_model(model, config, payload, tau=args.logit_adjust,
                                                 path=args.checkpoint)}  # fmt: skip
    calibration = None
    if args.precision == "int8":
        calibration = calibration_from_args(args, checkpoint=args.checkpoint)
    # Checked before it is put in place: a file that disagrees with PyTorch never lands at --out.
    target = final.with_name(f".{final.name}.unchecked") if args.check else final
    try:
        export_model(model, target, format=args.format, size=args.size, in_channels=config.in_channels,
                     dynamic=args.dynamic, precision=args.precision, calibration=calibration,
                     int8_plan=args.int8_plan)  # fmt: skip
        if args.format == "onnx":  # what a deployment needs besides the graph
            plan = {"int8_plan": args.int8_plan} if args.precision == "int8" else {}
            write_metadata(
                target, {**config.to_dict(), "precision": args.precision, **plan, **adjusted}
            )
        if args.check:
            _check_exported(target, model, config.in_channels, args, calibration)
            os.replace(target, final)
    finally:
        if target != final:
            target.unlink(missing_ok=True)
    shape = (
        "dynamic N, H, W"
        if args.dynamic or args.precision == "int8"
        else f"fixed 1x{config.in_channels}x{args.size[0]}x{args.size[1]}"
    )
    plan = f" ({args.int8_plan} plan)" if args.precision == "int8" else ""
    print(f"{config.name} exported to {final} ({args.format} {args.precision}{plan}, {shape})")
    return 0


def _export_weights(args: argparse.Namespace, final: Path) -> int:
    """The checkpoint's weights in fp16 with what it says of itself (engine/weights.py), put in
    place only once it loads back into its model as any checkpoint does."""
    from ..engine.checkpoint import load_model
    from ..engine.weights import pack_weights

    given = {"--dynamic": args.dynamic, "--size": args.size is not None,  # a graph's, not weights'
             f"--precision {args.precision}": args.precision != "fp32"}  # fmt: skip
    refused = [flag for flag, value in given.items() if value]
    if refused:
        raise ArgumentError(
            "format", f"{WEIGHTS_FORMAT} stores fp16 weights; drop {' and '.join(refused)}"
        )
    target = final.with_name(f".{final.name}.unchecked")
    try:
        pack_weights(args.checkpoint, target, logit_adjust=args.logit_adjust)
        _, config, _ = load_model(target)
        os.replace(target, final)
    finally:
        target.unlink(missing_ok=True)
    size = final.stat().st_size / 2**20
    print(f"{config.name} weights written to {final} (fp16, {size:.1f} MB; reloaded and checked)")
    return 0


def _check_exported(
    path: Path,
    model: nn.Module,
    in_channels: int,
    args: argparse.Namespace,
    calibration: list | None,
) -> None:
    """Runs the exported file against PyTorch; refuses one that disagrees: fp32 on more than
    0.1% of the pixels of a random input, int8 on more than 0.5% of the calibration images'."""
    from ..deploy.choose import AGREEMENT_FLOOR
    from ..deploy.export import check_export, example_images

    if calibration is None:
        images, floor = [example_images(args.size, in_channels, dynamic=False)], 0.999
    else:
        images, floor = calibration[-4:], AGREEMENT_FLOOR
    found = [check_export(path, model, x, format=args.format) for x in images]
    agreement = sum(r["agreement"] for r in found) / len(found)  # images of one size: pixel share
    print(
        f"checked: {100 * agreement:.3f}% of pixels agree with PyTorch fp32"
        f"{f' on {len(images)} calibration images' if calibration else ''}, "
        f"max |logit difference| {max(r['max_abs_diff'] for r in found):.2e}"
    )
    if agreement < floor:
        raise ArgumentError(
            "out", f"{args.out}: not written: the exported model disagrees with PyTorch on more "
            f"than {100 * (1 - floor):.1f}% of pixels (--no-check writes it anyway)",
        )  # fmt: skip


def add_benchmark(sub: Subparsers) -> None:
    p = sub.add_parser("benchmark", help="speed and memory vs plain PyTorch SegNet (paper Table 6)")
    p.add_argument(
        "--models", default="segnet,segnet_basic", help="comma-separated registered models"
    )
    p.add_argument("--checkpoint", help="benchmark this checkpoint's model and weights instead")
    p.add_argument("--weights", help="shipped weights of each --models entry, e.g. camvid")
    p.add_argument(
        "--images", nargs="+", metavar="IMAGE",
        help="files, folders or globs: measure the optimized-vs-eager agreement on these real images",
    )  # fmt: skip
    p.add_argument(
        "--size", type=image_size, default=(360, 480), help="input HxW (default 360x480)"
    )
    p.add_argument("--batch", type=positive_int("--batch"), default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--repeats", type=positive_int("--repeats"), default=3,
        help="timed runs per measurement (median)",
    )  # fmt: skip
    p.add_argument(
        "--no-training", dest="training", action="store_false", help="inference columns only"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the optimized model")
    p.add_argument(
        "--precision", default=("auto",), type=_choices(INFERENCE_PRECISIONS),
        help=f"comma-separated, of {', '.join(INFERENCE_PRECISIONS)}: one row per backend x "
        "precision (auto: fp32 on CPU, fp16 on CUDA; int8: CPU engines); the reference is fp32",
    )  # fmt: skip
    add_engine_flags(p, many=True)
    add_data_flags(p, split="val")  # --data: agreement and mIoU per row over the split
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(run=run_benchmark_command)


def run_benchmark_command(args: argparse.Namespace) -> int:
    from ..benchmark import format_table, run_benchmark
    from ..engine.predict import expand_inputs

    if args.json:
        check_output_file(args.json, argument="json", inputs=(args.checkpoint,))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models and not args.checkpoint:
        raise ArgumentError("models", "needs at least one model name")
    images = expand_inputs(args.images) if args.images else None
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    dataset = open_data(args, args.split) if args.data else None
    report = run_benchmark(
        models, size=args.size, batch=args.batch, device=args.device, repeats=args.repeats,
        training=args.training, compile=args.compile, checkpoint=args.checkpoint,
        weights=args.weights, images=images, precisions=args.precision, backends=backends,
        calibration=_benchmark_calibration(args, models, backends), dataset=dataset,
        progress=print, int8_plan=args.int8_plan,
    )  # fmt: skip
    print(format_table(report))
    if args.json:
        write_json(args.json, report)
        print(f"figures written to {args.json}")
    return 0


def _choices(choices: tuple[str, ...]) -> object:
    """An argparse type: a comma-separated list of ``choices``."""

    def parse(text: str) -> tuple[str, ...]:
        words = tuple(w.strip() for w in text.split(",") if w.strip())
        bad = [w for w in words if w not in choices]
        if bad or not words:
            raise argparse.ArgumentTypeError(f"must be among {', '.join(choices)}, got {text!r}")
        return words

    return parse


def _benchmark_calibration(
    args: argparse.Namespace, models: list[str], backends: list[str]
) -> list | None:
    """int8 calibration images: --calibration DIR, else the training data of the checkpoint,
    the shipped weights or --data; None when no row needs them."""
    if "int8" not in args.precision and not (args.calibration and "auto" in backends):
        return None
    from ..engine.weights import weights_path

    if args.checkpoint or args.weights:
        path = args.checkpoint or weights_path(models[0], args.weights)
        return calibration_from_args(args, checkpoint=path)
    data = {"dataset": args.dataset, "data": args.data} if args.data else None
    return calibration_from_args(args, train_config=data)
