"""Flags shared by several verbs, their parsers, and the choices they offer -- each read from the
registry that owns it (datasets, splits, precisions, export formats), never spelled out here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from ..data import DATASETS, SPLITS, SegmentationDataset
from ..deploy.runtime import PRECISIONS

if TYPE_CHECKING:  # the engine loads lazily: `segnet --help` stays fast
    from ..engine.inference import TestTimeAugmentation

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


def add_runtime_flags(p: argparse.ArgumentParser, *, device: str = "auto") -> None:
    p.add_argument("--device", default=device, help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--precision", default="auto", choices=PRECISIONS,
        help="auto: fp32 on CPU (bf16 was slower on every CPU measured), fp16 on CUDA",
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
