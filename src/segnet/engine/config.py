"""Training arguments: one typed dataclass whose keys are the ``segnet train`` flags' words
(``batch_size`` is ``--batch-size``), validated on construction; an error names the key.

Defaults are the paper's recipe (Sec. 4.1 and the authors' solver files): SGD, momentum 0.9,
weight decay 5e-4, batch 4, constant learning rate -- 0.1 for the SegNet-Basic family, 0.001
for SegNet and the VGG16/ResNet networks -- median-frequency class weights, no augmentation.
A YAML file (``--config``) holds the same keys; flags given on the command line win.
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from ..data import DATASETS
from ..data.groups import DEFAULT_GROUP_PATTERN
from ..deploy.runtime import PRECISIONS
from ..errors import ArgumentError
from ..models import model_entry

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "poly", "cosine")


def _typed(key: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits the annotation ``hint``, else an error naming ``key``. A number
    written as a string (YAML reads ``1e-3`` as one) becomes a float where a float is due."""
    if _fits(value, hint):
        return value
    if isinstance(value, str) and _fits(1.0, hint) and not _fits("", hint):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            return number
    raise ArgumentError(key, f"must be {_describe(hint)}, got {value!r}")


def _fits(value: Any, hint: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:  # an int is a number too; a bool is not
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        kinds = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" (or null)" if type(None) in args else "")
    if origin is list:
        return f"a list of {_describe(args[0]).split(' ', 1)[1]}s"
    if origin is dict:
        return "a mapping"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


@dataclass
class TrainConfig:
    model: str = "segnet_basic"
    dataset: str = "camvid"
    data: str | None = None  # dataset root; not needed for "synthetic"
    out: str = "runs/train"
    epochs: int = 100
    batch_size: int = 4
    lr: float | None = None  # None: the paper's rate for the model (its registry entry)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    schedule: str = "constant"  # paper: constant; poly/cosine decay per iteration
    warmup_epochs: float = 0.0
    # Weight averaging (averaging.py): mean of the weights at the ends of the last N epochs,
    # BN recomputed, validated and saved as averaged.pt; 0: off.
    average_last: int = 0
    class_weights: str = "median"  # data/stats.py WEIGHTING, or a JSON file
    crop: list[int] | None = None  # [H, W] random crop; None trains on whole images
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # random scale range
    hflip: bool = False  # the paper trained without augmentation
    # Photometric jitter strengths (data/transforms.py Photometric); 0 = off, as the paper.
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0  # turns of the chroma plane, at most 0.5
    gamma: float = 0.0
    # Validate on whole sequences of the train split instead of the val split (data/groups.py):
    holdout_groups: list[str] | None = None  # e.g. ["0001TP"] for CamVid
    group_pattern: str = DEFAULT_GROUP_PATTERN  # regex; its first group is a name's sequence
    precision: str = "auto"
    channels_last: bool | None = None  # None: auto (CUDA yes; CPU no: slower backward, see runtime)
    device: str = "auto"
    num_workers: int = 1
    # Decode the training images once, keep them on the training device and augment each batch
    # there (data/transforms.py ResidentDataset): a GPU run no longer waits on the CPU loader.
    device_augment: bool = False
    val_every: int = 1
    # Minutes of wall time for each launch (a resumed launch gets them afresh): no epoch starts
    # that would end after them, judged by the longest epoch so far; the run stops resumable.
    time_limit: float = 0.0  # 0: no limit
    # Minutes of wall time for the whole run (budget.py): a new run times a few steps and a
    # validation, then trains as many epochs as end within them, at most `epochs`, its schedule
    # timed to that count; the count is saved, so a resumed run goes on with it.
    time_budget: float = 0.0  # 0: train `epochs`
    seed: int = 0
    num_classes: int | None = None  # folder datasets without classes.json
    palette: str | None = None  # folder datasets: classes.json-style file
    synthetic_images: int = 96  # synthetic dataset: training images (val gets a quarter)
    synthetic_size: list[int] = field(default_factory=lambda: [96, 128])
    encoder_weights: str | None = None  # imagenet | FILE
    init_weights: str | None = (
        None  # warm start: model weights of a segnet checkpoint (fresh optimizer)
    )
    # Knowledge distillation (distill.py): a trained checkpoint whose per-pixel probabilities
    # the model learns beside the labels; the loss is (1 - weight) * labels + weight * soft.
    distill_from: str | None = None
    distill_weight: float = 0.5  # the soft targets' share of the loss, in (0, 1]
    distill_temperature: float = 1.0  # softmax temperature of both models' soft targets
    model_options: dict[str, Any] = field(default_factory=dict)
    max_batches: int | None = None  # cap batches per epoch (quick checks)
    # Under torchrun: BN statistics over every process's batch (CUDA only; one process: a no-op).
    sync_bn: bool = False
    tensorboard: bool = False  # event files under RUN/tensorboard (segnet[tensorboard])

    def __post_init__(self) -> None:
        for key, hint in get_type_hints(TrainConfig).items():  # types first: ranges need them
            setattr(self, key, _typed(key, getattr(self, key), hint))

        def one_of(choices: Iterable[str]) -> str:
            return f"one of {', '.join(choices)}"

        checks = [
            (self.dataset in DATASETS, "dataset", one_of(DATASETS)),
            (self.data is not None or not DATASETS[self.dataset].needs_root, "data", "given for this dataset"),
            (self.epochs >= 1, "epochs", "at least 1"),
            (self.batch_size >= 1, "batch_size", "at least 1"),
            (self.lr is None or 0 < self.lr < math.inf, "lr", "positive and finite"),
            (0 <= self.momentum < 1, "momentum", "in [0, 1)"),
            (0 <= self.weight_decay < math.inf, "weight_decay", "0 or more, finite"),
            (0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", "between 0 and epochs"),
            (self.average_last >= 0, "average_last", "0 (off) or more epochs"),
            (self.optimizer in OPTIMIZERS, "optimizer", one_of(OPTIMIZERS)),
            (self.schedule in SCHEDULES, "schedule", one_of(SCHEDULES)),
            (self.precision in PRECISIONS, "precision", one_of(PRECISIONS)),
            (self.crop is None or (len(self.crop) == 2 and min(self.crop) >= 32), "crop", "H W, each >= 32"),
            (len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1], "scale", "MIN MAX with 0 < MIN <= MAX"),
            (self.num_workers >= 0, "num_workers", "0 or more"),
            (self.val_every >= 1, "val_every", "at least 1"),
            (0 <= self.time_limit < math.inf, "time_limit", "0 (no limit) or more minutes, finite"),
            (0 <= self.time_budget < math.inf, "time_budget", "0 (off) or more minutes, finite"),
            *((0 <= getattr(self, k) < 1, k, "in [0, 1)") for k in ("brightness", "contrast", "saturation")),
            (0 <= self.hue <= 0.5, "hue", "in [0, 0.5]"),
            (0 <= self.gamma < math.inf, "gamma", "0 or more, finite"),
            (self.holdout_groups is None or len(self.holdout_groups) > 0, "holdout_groups", "one or more group names"),
            (0 < self.distill_weight <= 1, "distill_weight", "in (0, 1]"),
            (0 < self.distill_temperature < math.inf, "distill_temperature", "positive and finite"),
        ]  # fmt: skip
        for ok, key, requirement in checks:
            if not ok:
                raise ArgumentError(key, f"must be {requirement}")
        if self.lr is None:
            self.lr = model_entry(self.model).default_lr

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_sources(cls, *, config_file: str | None, overrides: dict[str, Any]) -> TrainConfig:
        """YAML values, then command-line overrides (those not None)."""
        from_file = read_yaml(Path(config_file)) if config_file else {}
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**{**from_file, **given})
        except ArgumentError as error:  # a bad value from the file: name the file and its key
            if error.name in from_file and error.name not in given:
                raise ArgumentError(
                    "config", f"{config_file}: {error.name} {error.detail}"
                ) from None
            raise

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> TrainConfig:
        """The config a checkpoint recorded (its ``train_config``); keys an older version wrote
        and this one no longer has are left out, new keys take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})

    @classmethod
    def for_resume(
        cls, run_dir: str | Path, *, config_file: str | None, overrides: dict[str, Any]
    ) -> TrainConfig:
        """The config of the run in ``run_dir`` (its ``last.pt``'s), then the file's values, then
        overrides (those not None); ``out`` stays ``run_dir``. Only ``RESUME_KEYS`` may differ
        from the saved values (``check_resume``): the rest is the recipe the restored state
        carries, and a new recipe is a new run."""
        from .checkpoint import read_checkpoint

        try:
            state = read_checkpoint(Path(run_dir) / "last.pt")
        except ArgumentError as error:  # the file came from `resume`, not `checkpoint`
            raise error.renamed("resume") from None
        from_file = read_yaml(Path(config_file)) if config_file else {}
        given = {k: v for k, v in overrides.items() if v is not None}
        if "out" in given and Path(given["out"]).resolve() != Path(run_dir).resolve():
            raise ArgumentError("out", f"{given['out']}: a resumed run stays in `resume` {run_dir}")
        saved = {**state["train_config"], "out": str(run_dir)}
        try:
            config = cls(**{**saved, **from_file, **given, "out": str(run_dir)})
            check_resume(cls(**saved), config, epochs_done=state["epoch"], run_dir=Path(run_dir))
        except ArgumentError as error:  # a value from the file: name the file and its key
            if error.name in from_file and error.name not in given:
                raise ArgumentError(
                    "config", f"{config_file}: {error.name} {error.detail}"
                ) from None
            raise
        return config


# How long, how fast and where a resumed run goes on: the keys it takes from flags or a file.
# Every other key is the recipe that the restored weights, optimizer, schedule and data order
# carry; a different value would be ignored or contradicted, so it is refused.
RESUME_KEYS = ("epochs", "max_batches", "val_every", "time_limit", "num_workers", "device",
               "precision", "channels_last", "device_augment", "tensorboard")  # fmt: skip
_PATH_KEYS = ("data", "palette", "class_weights", "init_weights", "encoder_weights", "distill_from")


def check_resume(
    saved: TrainConfig, config: TrainConfig, *, epochs_done: int, run_dir: Path
) -> None:
    """Refuses a resumed ``config`` whose values the run's restored state would contradict."""
    new_run = f"start a new run from its weights with `init_weights` {run_dir / 'last.pt'} instead"
    for key in (f.name for f in fields(TrainConfig)):
        before, after = getattr(saved, key), getattr(config, key)
        if before == after or (key in _PATH_KEYS and _same_path(before, after)):
            continue
        differs = f"{after!r} differs from {before!r}, the value {run_dir} was trained with"
        if key not in RESUME_KEYS:
            raise ArgumentError(key, f"{differs}; resuming keeps a run's recipe: {new_run}")
        # epochs and steps per epoch time a decaying schedule and the warm-up under way
        retimes = config.schedule != "constant" or (key == "max_batches" and config.warmup_epochs)
        if key in ("epochs", "max_batches") and retimes:
            schedule = f"{config.schedule} schedule" if config.schedule != "constant" else "warm-up"
            raise ArgumentError(key, f"{differs}, and would re-time its {schedule}: {new_run}")
    if config.epochs < epochs_done:
        raise ArgumentError(
            "epochs", f"must be at least {epochs_done}: {run_dir} has trained that many"
        )


def _same_path(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and Path(a).resolve() == Path(b).resolve()


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ArgumentError("config", f"{path}: file not found") from None
    except yaml.YAMLError as error:
        raise ArgumentError(
            "config", f"{path}: not valid YAML ({str(error).splitlines()[0]})"
        ) from None
    if not isinstance(values, dict):
        raise ArgumentError("config", f"{path}: expected a mapping of training keys")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ArgumentError(
            "config", f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}"
        )
    return values
