"""Sub-commands. Each ``add_*`` registers its flags; each ``run_*`` only orchestrates."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from ..errors import SegNetError
from ..files import atomic_write


def _positive_int(flag: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 1, got {value}")
        return value

    return parse


def _write_json(path: Path, payload: dict) -> None:
    atomic_write(Path(path), lambda f: f.write((json.dumps(payload, indent=2) + "\n").encode()))


def _add_data_flags(p: argparse.ArgumentParser, *, default_dataset: str | None = "camvid") -> None:
    p.add_argument(
        "--dataset", default=default_dataset, choices=("camvid", "sunrgbd", "folder", "synthetic")
    )
    p.add_argument("--data", help="dataset root (CamVid layout, or images/ + masks/ folders)")
    p.add_argument(
        "--num-classes",
        type=_positive_int("--num-classes"),
        help="folder data without classes.json",
    )
    p.add_argument("--palette", help="folder data: classes.json-style file with names and colours")


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))


# -- train ---------------------------------------------------------------------------------


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (the paper's recipe by default)")
    p.add_argument("--config", help="YAML file with training keys (flags override it)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from last.pt")
    p.add_argument("--model")
    _add_data_flags(p, default_dataset=None)
    p.add_argument("--out", help="run folder: last.pt, best.pt, log.csv, config.yaml")
    p.add_argument("--epochs", type=_positive_int("--epochs"))
    p.add_argument("--batch-size", type=_positive_int("--batch-size"))
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=("sgd", "adamw"))
    p.add_argument("--schedule", choices=("constant", "poly", "cosine"))
    p.add_argument(
        "--class-weights", help="median (default), median_sqrt, natural, none, or a JSON file"
    )
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--scale", type=float, nargs=2, metavar=("MIN", "MAX"))
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--encoder-weights", help="imagenet (downloads) or a torchvision-format .pth file"
    )
    p.add_argument(
        "--init-weights",
        metavar="CKPT",
        help="start from a segnet checkpoint's weights (fresh optimizer)",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--val-every", type=_positive_int("--val-every"))
    p.add_argument(
        "--max-batches", type=_positive_int("--max-batches"), help="cap batches per epoch"
    )
    p.add_argument("--device")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"))
    p.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from ..engine.checkpoint import read_checkpoint
    from ..engine.config import TrainConfig, read_yaml
    from ..engine.train import fit

    keys = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in keys}
    if args.resume:
        run_dir = Path(args.resume)
        saved = read_checkpoint(run_dir / "last.pt")["train_config"]
        file_values = read_yaml(Path(args.config)) if args.config else {}
        config = TrainConfig(**{**saved, **file_values, **{k: v for k, v in overrides.items() if v is not None},
                                "out": str(run_dir)})  # fmt: skip
    else:
        config = TrainConfig.from_sources(config_file=args.config, overrides=overrides)
    result = fit(config, resume=bool(args.resume))
    print(f"best val mIoU {result['best']['miou']:.4f} (epoch {result['best'].get('epoch')}); "
          f"checkpoints in {result['out']}")  # fmt: skip
    return 0


# -- evaluate ------------------------------------------------------------------------------


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="G, C, mIoU, BF of a checkpoint on a split")
    p.add_argument("--checkpoint", required=True)
    _add_data_flags(p)
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--out", help="metrics JSON file")
    p.add_argument("--mc-samples", type=_positive_int("--mc-samples"), default=0,
                   help="Monte-Carlo dropout samples (Bayesian SegNet)")  # fmt: skip
    p.add_argument("--precise-bn", action="store_true",
                   help="first recompute BN statistics over the train split (not saved; see bn-stats)")  # fmt: skip
    p.add_argument(
        "--plots", metavar="DIR", help="also write confusion.png and class_iou.png to DIR"
    )
    p.add_argument("--bf-tolerance", type=float, default=0.0075,
                   help="BF match distance as a fraction of the image diagonal (paper: 0.0075)")  # fmt: skip
    p.add_argument("--bf-count-predicted", action="store_true",
                   help="BF also averages classes present only in the prediction (authors' script)")  # fmt: skip
    _runtime_flags(p)
    p.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..data import open_dataset
    from ..deploy.runtime import resolve_device, resolve_precision
    from ..engine.checkpoint import load_model
    from ..engine.evaluate import evaluate

    if args.plots:
        _require_matplotlib()  # fail before a long evaluation, not after
    dataset = open_dataset(args.dataset, root=args.data, split=args.split,
                           num_classes=args.num_classes, palette=args.palette)  # fmt: skip
    model, config, _ = load_model(args.checkpoint, expect_num_classes=dataset.info.num_classes)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    model.to(device)
    if args.precise_bn:
        train_set = open_dataset(args.dataset, root=args.data, split="train",
                                 num_classes=args.num_classes, palette=args.palette)  # fmt: skip
        _precise_bn(model, train_set, device=device)
    if not 0 < args.bf_tolerance < 1:
        raise SegNetError(f"--bf-tolerance must be in (0, 1), got {args.bf_tolerance}")
    metrics = evaluate(
        model, dataset, device=device, precision=precision, mc_samples=args.mc_samples,
        bf_tolerance=args.bf_tolerance, bf_count_predicted_only=args.bf_count_predicted,
    )  # fmt: skip
    metrics.update({"checkpoint": str(args.checkpoint), "split": args.split, "model": config.name,
                    "precise_bn": args.precise_bn})  # fmt: skip
    print(format_metrics(metrics))
    if args.out:
        _write_json(Path(args.out), metrics)
        print(f"metrics written to {args.out}")
    if args.plots:
        _write_plots(Path(args.plots), metrics)
    return 0


def _require_matplotlib() -> None:
    from ..engine.plots import INSTALL_HINT, matplotlib_available

    if not matplotlib_available():
        raise SegNetError(f"--plots: {INSTALL_HINT}")


def _write_plots(folder: Path, metrics: dict) -> None:
    from ..engine.plots import plot_class_iou, plot_confusion

    names = [row["name"] for row in metrics["per_class"]]
    plot_confusion(metrics["confusion_matrix"], names, folder / "confusion.png")
    plot_class_iou(metrics["per_class"], folder / "class_iou.png")
    print(f"plots written to {folder}: confusion.png, class_iou.png")


def _precise_bn(
    model, dataset, *, device, batch_size: int = 4, max_images: int | None = None
) -> dict:
    from ..engine.bn import recompute_bn_statistics

    stats = recompute_bn_statistics(model, dataset, device=device, batch_size=batch_size,
                                    max_images=max_images, progress=True)  # fmt: skip
    if stats["layers"] == 0:
        raise SegNetError("this model has no BatchNorm layers: precise BN does not apply")
    print(
        f"precise BN: {stats['layers']} BN layers recomputed over {stats['images']} training images"
    )
    return stats


# -- bn-stats ------------------------------------------------------------------------------


def add_bn_stats(sub) -> None:
    p = sub.add_parser("bn-stats", help="precise BN: recompute BN statistics over the train split")
    p.add_argument("--checkpoint", required=True)
    _add_data_flags(p)
    p.add_argument("--out", help="new checkpoint (default: CKPT_precise_bn.pt beside CKPT)")
    p.add_argument("--batch-size", type=_positive_int("--batch-size"), default=4)
    p.add_argument("--max-images", type=_positive_int("--max-images"),
                   help="use this many images spread over the split (default: all)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(run=run_bn_stats)


def run_bn_stats(args: argparse.Namespace) -> int:
    from ..data import open_dataset
    from ..deploy.runtime import resolve_device
    from ..engine.checkpoint import load_model, save_checkpoint

    dataset = open_dataset(args.dataset, root=args.data, split="train",
                           num_classes=args.num_classes, palette=args.palette)  # fmt: skip
    model, config, payload = load_model(
        args.checkpoint, expect_num_classes=dataset.info.num_classes
    )
    device = resolve_device(args.device)
    stats = _precise_bn(model.to(device), dataset, device=device,
                        batch_size=args.batch_size, max_images=args.max_images)  # fmt: skip
    source = Path(args.checkpoint)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}_precise_bn.pt")
    # An inference checkpoint: the optimizer state belongs to the run it came from.
    skip = {"format", "version", "model", "data", "state_dict", "optimizer", "scheduler"}
    extra = {k: v for k, v in payload.items() if k not in skip}
    extra["precise_bn"] = {
        "source": str(source),
        "dataset": args.dataset,
        "split": "train",
        **stats,
    }
    save_checkpoint(out, config=config, model=model.cpu(), **extra)
    print(f"checkpoint with precise BN statistics written to {out}")
    return 0


def format_metrics(metrics: dict) -> str:
    lines = [f"{'class':<14}{'accuracy':>10}{'IoU':>10}"]
    for row in metrics["per_class"]:
        lines.append(f"{row['name']:<14}{row['accuracy']:>10.4f}{row['iou']:>10.4f}")
    summary = f"G {metrics['global_accuracy']:.4f}  C {metrics['class_accuracy']:.4f}  mIoU {metrics['miou']:.4f}"
    if metrics.get("bf") is not None:
        summary += f"  BF {metrics['bf']:.4f}"
    return "\n".join(lines + [summary + f"  ({metrics['num_images']} images)"])


# -- predict -------------------------------------------------------------------------------


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment images: X.png, X_color.png, X_overlay.png")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("--checkpoint", help="a checkpoint from `segnet train`")
    p.add_argument("--model", help="with --weights: a model whose weights ship with the package")
    p.add_argument("--weights", help="shipped weights name, e.g. camvid")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mc-samples", type=_positive_int("--mc-samples"), default=0,
                   help="Monte-Carlo dropout samples: also writes X_uncertainty.png/.npy")  # fmt: skip
    _runtime_flags(p)
    p.set_defaults(run=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from ..deploy.runtime import resolve_device, resolve_precision
    from ..engine.checkpoint import load_model
    from ..engine.predict import Segmenter, expand_inputs, predict_files

    if bool(args.checkpoint) == bool(args.model or args.weights):
        raise SegNetError("give either --checkpoint CKPT or --model NAME --weights NAME")
    paths = expand_inputs(args.inputs)
    if args.checkpoint:
        model, config, _ = load_model(args.checkpoint)
    else:
        from ..engine.weights import load_pretrained_with_config

        model, config = load_pretrained_with_config(args.model or "", args.weights or "")
    device = resolve_device(args.device)
    segmenter = Segmenter(
        model, config, device=device, precision=resolve_precision(args.precision, device)
    )
    written = predict_files(segmenter, paths, Path(args.out), mc_samples=args.mc_samples)
    print(f"{len(paths)} image(s) segmented; {len(written)} files written to {args.out}")
    return 0


# -- data stats ----------------------------------------------------------------------------


def add_data(sub) -> None:
    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="TOOL")
    s = data_sub.add_parser("stats", help="class pixel frequencies and median-frequency weights")
    _add_data_flags(s)
    s.add_argument("--split", default="train", choices=("train", "val", "test"))
    s.add_argument("--out", help="JSON file (default: print only)")
    s.set_defaults(run=run_data_stats)


def run_data_stats(args: argparse.Namespace) -> int:
    from ..data import open_dataset
    from ..data.stats import dataset_stats

    dataset = open_dataset(args.dataset, root=args.data, split=args.split,
                           num_classes=args.num_classes, palette=args.palette)  # fmt: skip
    stats = dataset_stats(dataset)
    print(f"{'class':<14}{'fraction':>10}{'median-freq weight':>20}")
    for row in stats["classes"]:
        print(f"{row['name']:<14}{row['fraction']:>10.4f}{row['median_frequency_weight']:>20.4f}")
    print(f"{stats['num_images']} images ({args.split}); void excluded")
    if args.out:
        _write_json(Path(args.out), stats)
        print(f"stats written to {args.out}")
    return 0


# -- models --------------------------------------------------------------------------------


def add_models(sub) -> None:
    p = sub.add_parser("models", help="list registered models with parameter counts")
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--num-classes", type=_positive_int("--num-classes"), default=11)
    p.set_defaults(run=run_models)


def run_models(args: argparse.Namespace) -> int:
    from ..models import build_model, list_models

    for name in list_models(args.pattern):
        model = build_model(name, num_classes=args.num_classes)
        print(f"{name:<44}{sum(p.numel() for p in model.parameters()):>14,}")
    return 0


# -- demo ----------------------------------------------------------------------------------


def add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="train SegNet-Basic on built-in synthetic road scenes, end to end"
    )
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--epochs", type=_positive_int("--epochs"), default=12)
    p.add_argument("--images", type=_positive_int("--images"), default=96, help="training scenes")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from ..engine.demo import run

    run(out=Path(args.out), epochs=args.epochs, images=args.images, seed=args.seed)
    return 0


# -- export --------------------------------------------------------------------------------


def add_export(sub) -> None:
    p = sub.add_parser("export", help="ONNX or torch.export (.pt2) file of a checkpoint's model")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", default="onnx", choices=("onnx", "torch-export"))
    p.add_argument("--out", required=True, help="model.onnx or model.pt2")
    p.add_argument(
        "--size", default="360x480", help="input HxW the graph is built for (default 360x480)"
    )
    p.add_argument("--dynamic", action="store_true",
                   help="free batch, H and W (H, W multiples of 32; --size must be one)")  # fmt: skip
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip running the file (onnxruntime / torch.export) against PyTorch")  # fmt: skip
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..benchmark.run import parse_size
    from ..deploy.export import compare_exported, compare_onnx, example_images, export_model
    from ..engine.checkpoint import load_model

    size = parse_size(args.size)
    model, config, _ = load_model(args.checkpoint)
    path = export_model(model, args.out, format=args.format, size=size, in_channels=config.in_channels,
                        dynamic=args.dynamic)  # fmt: skip
    print(f"{config.name} exported to {path} ({args.format}, "
          f"{'dynamic N, H, W' if args.dynamic else f'fixed 1x{config.in_channels}x{size[0]}x{size[1]}'})")  # fmt: skip
    if args.check:
        compare = compare_onnx if args.format == "onnx" else compare_exported
        result = compare(path, model, example_images(size, config.in_channels, dynamic=False))
        print(f"checked: {100 * result['agreement']:.3f}% of pixels agree with PyTorch, "
              f"max |logit difference| {result['max_abs_diff']:.2e}")  # fmt: skip
        if result["agreement"] < 0.999:
            raise SegNetError(
                f"--out {path}: the exported model disagrees with PyTorch on more than 0.1% of pixels"
            )
    return 0


# -- benchmark -----------------------------------------------------------------------------


def add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="speed and memory vs plain PyTorch SegNet (paper Table 6)")
    p.add_argument(
        "--models", default="segnet,segnet_basic", help="comma-separated registered models"
    )
    p.add_argument("--checkpoint", help="benchmark this checkpoint's model and weights instead")
    p.add_argument("--weights", help="shipped weights of each --models entry, e.g. camvid")
    p.add_argument(
        "--images",
        nargs="+",
        metavar="IMAGE",
        help="files, folders or globs: measure the optimized-vs-eager agreement on these real images",
    )
    p.add_argument("--size", default="360x480", help="input HxW (default 360x480)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument(
        "--no-training", dest="training", action="store_false", help="inference columns only"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the optimized model")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="ours, inference and training (auto: fp32 on CPU, fp16 on CUDA); the reference is always fp32")  # fmt: skip
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(run=run_benchmark_command)


def run_benchmark_command(args: argparse.Namespace) -> int:
    from ..benchmark.run import format_table, parse_size, run_benchmark

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models and not args.checkpoint:
        raise SegNetError("--models needs at least one model name")
    images = None
    if args.images:
        from ..engine.predict import expand_inputs

        images = expand_inputs(args.images)
    report = run_benchmark(models, size=parse_size(args.size), batch=args.batch, device=args.device,
                           repeats=args.repeats, training=args.training, compile=args.compile,
                           checkpoint=args.checkpoint, weights=args.weights, images=images,
                           precision=args.precision, progress=print)  # fmt: skip
    print(format_table(report))
    if args.json:
        _write_json(Path(args.json), report)
        print(f"figures written to {args.json}")
    return 0


REGISTRY = [
    add_demo, add_train, add_evaluate, add_bn_stats, add_predict, add_data, add_models,
    add_export, add_benchmark,
]  # fmt: skip
