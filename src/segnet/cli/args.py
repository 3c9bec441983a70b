"""Flags shared by several verbs, their parsers, and the choices they offer -- each read from the
registry that owns it (datasets, splits, precisions, export formats), never spelled out here."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from ..data import DATASETS, SPLITS, SegmentationDataset
from ..deploy.backends import BACKENDS, DEFAULT_BACKEND, check_combination
from ..deploy.quantize import CALIBRATION_IMAGES
from ..deploy.runtime import DEFAULT_INT8_PLAN, INFERENCE_PRECISIONS, INT8_PLANS, PRECISIONS
from ..engine.bn import PRECISE_BN_SAMPLES
from ..engine.inference import TILE_OVERLAP
from ..errors import ArgumentError

if TYPE_CHECKING:  # the engine loads lazily: `segnet --help` stays fast
    from ..engine.inference import TestTimeAugmentation, Tiling

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # add_parser target


def positive_int(flag: str) -> Callable[[str], int]:
    """An argparse type: an integer >= 1 (argparse names ``flag`` in its message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
        return value

    return parse


def logit_adjust(text: str) -> float:
    """An argparse type: a finite tau for ``--logit-adjust`` (engine/adjust.py)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def blend_weight(text: str) -> float:
    """An argparse type: the weight in (0, 1] of newly estimated BN statistics (engine/bn.py)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_adapt_bn_flag(p: argparse.ArgumentParser, *, images: str) -> None:
    p.add_argument(
        "--adapt-bn", type=blend_weight, metavar="BLEND",
        help=f"first re-estimate BN statistics on {images} from their pixels (no labels), "
        "weighted BLEND against the checkpoint's (1: replace them; docs/results.md compares "
        "0.25-1); the model adapts to their camera, drive or light. Give many frames of one: a "
        "single image's statistics are a noisy estimate. Kept in no file: `segnet bn-stats "
        "--images` saves it",
    )  # fmt: skip


def add_precise_bn_flag(p: argparse.ArgumentParser, *, help: str) -> None:
    """``--precise-bn [SAMPLES]``: which training images precise BN reads (engine/bn.py); the
    flag alone means the first choice."""
    samples = "; ".join(f"{name} = {what}" for name, what in PRECISE_BN_SAMPLES.items())
    default = next(iter(PRECISE_BN_SAMPLES))
    p.add_argument(
        "--precise-bn", choices=PRECISE_BN_SAMPLES, nargs="?", const=default, metavar="SAMPLES",
        help=f"{help}. SAMPLES: {samples} (the flag alone: {default})",
    )  # fmt: skip


LOGIT_ADJUST_HELP = (
    "shift each class score by -TAU*log(its training class weight) (engine/adjust.py): 0 is the "
    "model as trained, 1 undoes its class weights"
)


def image_size(text: str) -> tuple[int, int]:
    """``"360x480"`` -> (360, 480)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(map(int, parts)) < 1:
        raise argparse.ArgumentTypeError(
            f"must be HxW with positive integers, e.g. 360x480; got {text!r}"
        )
    return int(parts[0]), int(parts[1])


def add_data_flags(
    p: argparse.ArgumentParser, *, default_dataset: str | None = "camvid", split: str | None = None
) -> None:
    p.add_argument("--dataset", default=default_dataset, choices=tuple(DATASETS))
    p.add_argument("--data", help="dataset root (CamVid layout, or images/ + masks/ folders)")
    p.add_argument(
        "--num-classes", type=positive_int("--num-classes"), help="folder data without classes.json"
    )
    p.add_argument("--palette", help="folder data: classes.json-style file with names and colours")
    if split is not None:
        p.add_argument("--split", default=split, choices=SPLITS)


def add_group_pattern_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--group-pattern", default=None,
        help="regex whose first group is a file name's sequence (default: before the first _)",
    )  # fmt: skip


def add_runtime_flags(
    p: argparse.ArgumentParser, *, device: str = "auto", engines: bool = False
) -> None:
    """--device, --precision and, with ``engines``, --backend, int8 and its calibration flags."""
    p.add_argument("--device", default=device, help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--precision", default="auto", choices=INFERENCE_PRECISIONS if engines else PRECISIONS,
        help="auto: fp32 on CPU (bf16 moves labels and pays only on CPUs with AMX: ask for it), "
        "fp16 on CUDA"
        + ("; int8: CPU engines, calibrated on training images" if engines else ""),
    )  # fmt: skip
    if engines:
        add_engine_flags(p)


def add_engine_flags(p: argparse.ArgumentParser, *, many: bool = False) -> None:
    """--backend (with ``many``: a comma-separated list), --calibration, --calibration-images."""
    p.add_argument(
        "--backend", default=DEFAULT_BACKEND, choices=None if many else BACKENDS,
        help=("comma-separated, of " if many else "")
        + f"{', '.join(BACKENDS)}: onnxruntime/openvino are CPU engines (extras segnet[onnx], "
        "segnet[openvino]); auto picks the fastest installed one that agrees with fp32 "
        f"(measured once, cached); default {DEFAULT_BACKEND}",
    )  # fmt: skip
    add_calibration_flags(p)


def add_calibration_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibration", metavar="DIR",
        help="int8: calibrate on these images (default: the checkpoint's training data)",
    )  # fmt: skip
    p.add_argument(
        "--calibration-images", type=positive_int("--calibration-images"),
        default=CALIBRATION_IMAGES, help=f"int8: how many (default {CALIBRATION_IMAGES})",
    )  # fmt: skip
    p.add_argument(
        "--int8-plan", default=DEFAULT_INT8_PLAN, choices=INT8_PLANS,
        help="int8: which convolutions stay fp32 -- fast: the first two and the classifier; "
        "accurate: every one reading a map at full or half resolution, the first two pooling "
        "and the last two unpooling stages (more pixels labelled as fp32, slower; SegNet-Basic "
        "gains nothing); default %(default)s",
    )  # fmt: skip


def add_tta_flags(p: argparse.ArgumentParser) -> None:
    """Opt-in test-time augmentation (engine/inference.py); the default is one forward pass."""
    p.add_argument(
        "--tta-flip", action="store_true",
        help="also average the left-right mirrored image's prediction (2x the passes)",
    )  # fmt: skip
    p.add_argument(
        "--tta-scales", nargs="+", type=float, metavar="S",
        help="average the predictions of the image resized by each factor, e.g. 0.75 1 1.25",
    )  # fmt: skip


def add_tiling_flags(p: argparse.ArgumentParser) -> None:
    """Opt-in sliding-window inference (engine/inference.py ``Tiling``) for large images."""
    p.add_argument(
        "--tile", type=image_size, metavar="HxW",
        help="segment large images tile by tile, e.g. 360x480: memory follows the tile, "
        "overlapping tiles are blended (default: the whole image in one pass)",
    )  # fmt: skip
    p.add_argument(
        "--tile-overlap", type=int, default=TILE_OVERLAP, metavar="PX",
        help="with --tile: pixels neighbouring tiles share at least (default %(default)s)",
    )  # fmt: skip


def tiling_from_args(args: argparse.Namespace) -> Tiling:
    from ..engine.inference import Tiling

    return Tiling(size=args.tile, overlap=args.tile_overlap)


def tta_from_args(args: argparse.Namespace) -> TestTimeAugmentation:
    from ..engine.inference import TestTimeAugmentation

    return TestTimeAugmentation(flip=args.tta_flip, scales=tuple(args.tta_scales or (1.0,)))


def open_data(args: argparse.Namespace, split: str, *, groups: bool = True) -> SegmentationDataset:
    """The dataset the data flags describe, for ``split``; with ``groups`` and ``--groups``
    given, only the samples of those sequences."""
    from ..data import open_dataset
    from ..data.groups import DEFAULT_GROUP_PATTERN, select_groups

    dataset = open_dataset(
        args.dataset,
        root=args.data,
        split=split,
        num_classes=args.num_classes,
        palette=args.palette,
    )
    wanted = getattr(args, "groups", None) if groups else None
    if not wanted:
        return dataset
    return select_groups(dataset, wanted, pattern=args.group_pattern or DEFAULT_GROUP_PATTERN)


def engine_settings(args: argparse.Namespace, precision: str) -> dict:
    """``backend`` and ``calibration`` keywords for ``optimize_for_inference`` from the engine
    flags: calibration images are read for int8, or when --calibration names a folder (then
    ``--backend auto`` weighs int8 too)."""
    if getattr(args, "mc_samples", 0) and args.backend != "torch":
        raise ArgumentError(
            "backend", "Monte-Carlo dropout runs on backend torch (engines run without dropout)"
        )
    if args.backend != "auto":
        check_combination(args.backend, precision)  # before minutes of calibration
    calibration = None
    if precision == "int8" or args.calibration:
        from ..engine.weights import weights_path

        path = None  # --calibration DIR needs no checkpoint; else it names the training data
        if not args.calibration:
            path = args.checkpoint or weights_path(args.model, args.weights)
        calibration = calibration_from_args(args, checkpoint=path)
    return {"backend": args.backend, "calibration": calibration, "int8_plan": args.int8_plan}


def calibration_from_args(
    args: argparse.Namespace, *, checkpoint: str | None = None, train_config: dict | None = None
) -> list:
    """int8 calibration images (:func:`..engine.calibration.calibration_images`): --calibration
    DIR, else the training data named by ``checkpoint``'s ``train_config`` (else
    ``train_config``), --calibration-images of them."""
    from ..engine.calibration import calibration_images
    from ..engine.checkpoint import read_checkpoint

    if not args.calibration and checkpoint is not None:
        train_config = read_checkpoint(checkpoint).get("train_config")
    return calibration_images(
        folder=args.calibration, train_config=None if args.calibration else train_config,
        count=args.calibration_images,
    )  # fmt: skip
