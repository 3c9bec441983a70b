"""``segnet evaluate`` and ``segnet predict``: the verbs that run a trained model on images."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ArgumentError, SegNetError
from ..files import check_output_dir, check_output_file, write_json
from .args import (
    LOGIT_ADJUST_HELP,
    Subparsers,
    add_adapt_bn_flag,
    add_data_flags,
    add_group_pattern_flag,
    add_precise_bn_flag,
    add_runtime_flags,
    add_tiling_flags,
    add_tta_flags,
    engine_settings,
    logit_adjust,
    open_data,
    positive_int,
    tiling_from_args,
    tta_from_args,
)


def add_evaluate(sub: Subparsers) -> None:
    p = sub.add_parser("evaluate", help="G, C, mIoU, BF of a checkpoint on a split")
    p.add_argument("--checkpoint", required=True)
    add_data_flags(p, split="val")
    p.add_argument(
        "--groups", nargs="+", metavar="GROUP",
        help="score only these sequences of the split (e.g. --split train --groups 0001TP)",
    )  # fmt: skip
    add_group_pattern_flag(p)
    p.add_argument("--out", help="metrics JSON file")
    p.add_argument(
        "--mc-samples", type=positive_int("--mc-samples"), default=0,
        help="Monte-Carlo dropout samples (Bayesian SegNet)",
    )  # fmt: skip
    add_precise_bn_flag(
        p, help="first recompute BN statistics over the train split (not saved; see bn-stats)"
    )
    add_adapt_bn_flag(p, images="the images scored, after any --precise-bn,")
    p.add_argument(
        "--plots", metavar="DIR", help="also write confusion.png and class_iou.png to DIR"
    )
    p.add_argument(
        "--bf-tolerance", type=float, default=0.0075,
        help="BF match distance as a fraction of the image diagonal (paper: 0.0075)",
    )  # fmt: skip
    p.add_argument(
        "--bf-count-predicted", action="store_true",
        help="BF also averages classes present only in the prediction (authors' script)",
    )  # fmt: skip
    p.add_argument(
        "--logit-adjust", nargs="+", type=logit_adjust, metavar="TAU",
        help=f"also score the model with {LOGIT_ADJUST_HELP}; one pass scores every TAU. Choose "
        "TAU on a drive the model never saw, apply it with `segnet export --logit-adjust`",
    )  # fmt: skip
    add_tta_flags(p)
    add_tiling_flags(p)
    add_runtime_flags(p, engines=True)
    p.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..deploy.runtime import resolve_device, resolve_precision
    from ..engine.adjust import adjustments
    from ..engine.checkpoint import load_model
    from ..engine.evaluate import evaluate
    from ..models import has_dropout
    from .train import bn_training_data, precise_bn

    # Every flag is checked before any work: a precise-BN pass alone takes minutes.
    if not 0 < args.bf_tolerance < 1:
        raise ArgumentError("bf_tolerance", f"must be in (0, 1), got {args.bf_tolerance}")
    if args.out:
        check_output_file(args.out, argument="out", inputs=(args.checkpoint,))
    if args.plots:
        check_output_dir(args.plots, argument="plots")
        _require_matplotlib()
    tta, tiling = tta_from_args(args), tiling_from_args(args)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    dataset = open_data(args, args.split)
    model, config, payload = load_model(
        args.checkpoint, expect_num_classes=dataset.info.num_classes
    )
    if args.mc_samples and not has_dropout(model):
        raise ArgumentError("mc_samples", no_dropout(config.name))
    taus = args.logit_adjust or []
    offsets = adjustments(payload, taus, path=args.checkpoint) if taus else []
    engine = engine_settings(args, precision)  # backend, int8 calibration images
    train_set = (
        bn_training_data(args, payload, samples=args.precise_bn) if args.precise_bn else None
    )
    model.to(device)
    if train_set is not None:
        precise_bn(model, train_set, device=device)
    if args.adapt_bn:
        precise_bn(model, dataset, device=device, blend=args.adapt_bn, adapting=True)
    metrics = evaluate(
        model, dataset, device=device, precision=precision, mc_samples=args.mc_samples,
        bf_tolerance=args.bf_tolerance, bf_count_predicted_only=args.bf_count_predicted, tta=tta,
        tiling=tiling, offsets=offsets, **engine,
    )  # fmt: skip
    adjusted = [{"tau": tau, **found} for tau, found in zip(taus, metrics.pop("adjusted", []))]
    metrics.update({"checkpoint": str(args.checkpoint), "split": args.split, "groups": args.groups, "model": config.name,
                    "precise_bn": args.precise_bn, "adapt_bn": args.adapt_bn, "backend": args.backend, "precision": precision,
                    "int8_plan": args.int8_plan if precision == "int8" else None, "tta": {"flip": tta.flip, "scales": list(tta.scales)},
                    **tiling.describe()})  # fmt: skip
    print(format_metrics(metrics))
    if adjusted:
        folded = (payload.get("logit_adjust") or {}).get("tau")
        print(format_adjusted(adjusted) + (f"\n(on top of the tau {folded:g} folded into "
                                           f"{args.checkpoint})" if folded else ""))  # fmt: skip
        metrics["logit_adjust"] = adjusted
    if args.out:
        write_json(args.out, metrics)
        print(f"metrics written to {args.out}")
    if args.plots:
        _write_plots(Path(args.plots), metrics)
    return 0


def no_dropout(model: str) -> str:
    return f"{model} has no dropout, so every sample would be the same; use a bayesian_* model"


def _require_matplotlib() -> None:
    from ..engine.plots import INSTALL_HINT, matplotlib_available

    if not matplotlib_available():
        raise ArgumentError("plots", f": {INSTALL_HINT}")


def _write_plots(folder: Path, metrics: dict) -> None:
    from ..engine.plots import plot_class_iou, plot_confusion

    names = [row["name"] for row in metrics["per_class"]]
    plot_confusion(metrics["confusion_matrix"], names, folder / "confusion.png")
    plot_class_iou(metrics["per_class"], folder / "class_iou.png")
    print(f"plots written to {folder}: confusion.png, class_iou.png")


def format_metrics(metrics: dict) -> str:
    lines = [f"{'class':<14}{'accuracy':>10}{'IoU':>10}"]
    for row in metrics["per_class"]:
        lines.append(f"{row['name']:<14}{row['accuracy']:>10.4f}{row['iou']:>10.4f}")
    summary = (
        f"G {metrics['global_accuracy']:.4f}  C {metrics['class_accuracy']:.4f}  "
        f"mIoU {metrics['miou']:.4f}"
    )
    if metrics.get("bf") is not None:
        summary += f"  BF {metrics['bf']:.4f}"
    return "\n".join(lines + [summary + f"  ({metrics['num_images']} images)"])


def format_adjusted(adjusted: list[dict]) -> str:
    """One line per tau of ``--logit-adjust``: the four metrics and each class's IoU."""
    names = [row["name"] for row in adjusted[0]["per_class"]]
    lines = [
        f"logit adjustment:  {'tau':>6}{'G':>8}{'C':>8}{'mIoU':>8}{'BF':>8}   IoU "
        + " ".join(f"{n[:6]:>6}" for n in names)
    ]
    for found in adjusted:
        ious = " ".join(f"{row['iou']:>6.3f}" for row in found["per_class"])
        lines.append(
            f"{'':<19}{found['tau']:>6.2f}{found['global_accuracy']:>8.4f}{found['class_accuracy']:>8.4f}"
            f"{found['miou']:>8.4f}{found.get('bf', float('nan')):>8.4f}   {ious}"
        )  # fmt: skip
    return "\n".join(lines)


def add_predict(sub: Subparsers) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images (X.png, X_color.png, X_overlay.png) and videos (X_overlay.mp4)",
    )
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="image or video files, folders or globs (videos: .mp4 .avi .mov .mkv .webm .gif; "
        "a .gif gives an .mp4 too)",
    )  # fmt: skip
    p.add_argument("--checkpoint", help="a checkpoint from `segnet train`")
    p.add_argument("--model", help="with --weights: a model whose weights ship with the package")
    p.add_argument("--weights", help="shipped weights name, e.g. camvid")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--mc-samples", type=positive_int("--mc-samples"), default=0,
        help="Monte-Carlo dropout samples: also writes X_uncertainty.png/.npy (videos: .mp4)",
    )  # fmt: skip
    add_adapt_bn_flag(p, images="the INPUT images")
    _add_overlay_and_video_flags(p)
    add_tta_flags(p)
    add_tiling_flags(p)
    add_runtime_flags(p, engines=True)
    p.set_defaults(run=run_predict)


def _add_overlay_and_video_flags(p: argparse.ArgumentParser) -> None:
    from ..engine.predict import DEFAULT_OPACITY
    from ..engine.video import DEFAULT_BATCH_SIZE, DEFAULT_VIDEO_OUTPUTS, VIDEO_OUTPUTS

    p.add_argument(
        "--opacity", type=float, default=DEFAULT_OPACITY,
        help=f"weight of the class colours in overlays, 0..1 (default {DEFAULT_OPACITY})",
    )  # fmt: skip
    p.add_argument("--legend", action="store_true", help="draw class names and colours on overlays")
    p.add_argument(
        "--video-outputs", type=_words, default=DEFAULT_VIDEO_OUTPUTS, metavar="LIST",
        help=f"videos: comma-separated, of {','.join(VIDEO_OUTPUTS)} (default "
        f"{','.join(DEFAULT_VIDEO_OUTPUTS)}); labels: X_labels.mkv, lossless FFV1 whose frames "
        "are the class indices; audio is dropped",
    )  # fmt: skip
    p.add_argument(
        "--batch-size", type=positive_int("--batch-size"), default=DEFAULT_BATCH_SIZE,
        help="video frames per forward pass",
    )  # fmt: skip
    p.add_argument(
        "--max-frames", type=positive_int("--max-frames"),
        help="stop each video (or the camera) after N frames",
    )  # fmt: skip
    p.add_argument(
        "--camera", type=_camera_index, metavar="N",
        help="segment the local camera /dev/videoN (Linux) into OUT/cameraN_overlay.mp4 until "
        "Ctrl-C or --max-frames",
    )  # fmt: skip


def _words(text: str) -> tuple[str, ...]:
    """``"overlay, labels"`` -> ("overlay", "labels"); VideoOptions checks the names."""
    return tuple(word.strip() for word in text.split(",") if word.strip())


def _camera_index(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"expects a camera number (0 for /dev/video0), got {text!r}"
        )
    return int(text)


def run_predict(args: argparse.Namespace) -> int:
    from ..data.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES
    from ..data.unlabeled import ImageFiles
    from ..deploy.runtime import resolve_device, resolve_precision
    from ..engine.predict import OverlayStyle, Segmenter, check_prediction_folder, expand_inputs
    from ..engine.video import VideoOptions, import_av, is_video, predict_media, record_camera
    from ..engine.weights import load_for_inference
    from ..models import has_dropout
    from .train import precise_bn

    # Every flag and input is checked before the model loads.
    tta, tiling = tta_from_args(args), tiling_from_args(args)
    style = OverlayStyle(opacity=args.opacity, legend=args.legend)
    options = VideoOptions(
        outputs=args.video_outputs, batch_size=args.batch_size, max_frames=args.max_frames,
        mc_samples=args.mc_samples, style=style,
    )  # fmt: skip
    if (args.camera is None) == (not args.inputs):
        raise SegNetError("give image or video INPUTs, or `camera` N (not both)")
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    paths = expand_inputs(args.inputs, suffixes=IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    check_prediction_folder(Path(args.out), paths)
    videos = args.camera is not None or any(is_video(p) for p in paths)
    if args.adapt_bn and videos:  # before PyAV's import: this refusal holds either way
        raise ArgumentError(
            "adapt_bn", "adapts to image INPUTs only; for videos, adapt a checkpoint to frames "
            "saved as images with `segnet bn-stats --images` and predict with it",
        )  # fmt: skip
    if videos:
        import_av()
    model, config = load_for_inference(
        checkpoint=args.checkpoint, model=args.model, weights=args.weights
    )
    if args.mc_samples and not has_dropout(model):
        raise ArgumentError("mc_samples", no_dropout(config.name))
    if args.adapt_bn:
        images = ImageFiles(paths)
        precise_bn(model.to(device), images, device=device, blend=args.adapt_bn, adapting=True)
    engine = engine_settings(args, precision)  # backend, int8 calibration images
    segmenter = Segmenter(
        model, config, device=device, precision=precision, tta=tta, tiling=tiling, **engine
    )
    if args.backend == "auto":
        print(f"backend: {getattr(segmenter.model, 'chosen', segmenter.model.backend)}")
    if args.camera is not None:
        written, frames = record_camera(segmenter, args.camera, Path(args.out), options=options)
        print(
            f"camera {args.camera}: {frames} frames segmented; {len(written)} files written to {args.out}"
        )
        return 0
    result = predict_media(segmenter, paths, Path(args.out), options=options)
    done = [f"{result.images} image(s)"] if result.images else []
    if result.videos:
        done.append(f"{result.videos} video(s) ({result.frames} frames)")
    print(f"{' and '.join(done)} segmented; {len(result.written)} files written to {args.out}")
    return 0
