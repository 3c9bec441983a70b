"""Checkpoints carry the config that built them: ``predict``, ``evaluate`` and ``export`` need
nothing but the file.

    {"format": "segnet-checkpoint", "version": 1,
     "model": {"name", "num_classes", "in_channels", "options"},
     "data": {"class_names", "palette", "ignore_index", "mean", "std"},
     "state_dict", "epoch", "metrics", "train_config", "class_weights" (the loss's, or None;
     since 2026-12-07), optional "optimizer"/"scheduler"/..., "logit_adjust" (engine/adjust.py),
     "precise_bn" / "bn_adapted" (where `segnet bn-stats` took the BN statistics: source,
     layers, images, blend; precise BN's also its samples, frames or augmented)}

Written atomically (temp file + rename): a crash mid-save never corrupts ``last.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.base import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo
from ..errors import ArgumentError
from ..files import atomic_write
from ..models import build_model

FORMAT = "segnet-checkpoint"


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and interpret its output."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int
    in_channels: int = 3
    options: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def for_dataset(cls, name: str, info: DatasetInfo, **options: Any) -> ModelConfig:
        return cls(
            name=name, num_classes=info.num_classes, class_names=tuple(info.class_names),
            palette=tuple(info.palette), ignore_index=info.ignore_index, options=dict(options),
        )  # fmt: skip

    def build(self) -> nn.Module:
        return build_model(
            self.name, num_classes=self.num_classes, in_channels=self.in_channels, **self.options
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": {"name": self.name, "num_classes": self.num_classes,
                      "in_channels": self.in_channels, "options": dict(self.options)},
            "data": {"class_names": list(self.class_names), "palette": [list(c) for c in self.palette],
                     "ignore_index": self.ignore_index, "mean": list(self.mean), "std": list(self.std)},
        }  # fmt: skip

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ModelConfig:
        model, data = payload["model"], payload["data"]
        return cls(
            name=model["name"], num_classes=int(model["num_classes"]),
            in_channels=int(model.get("in_channels", 3)), options=dict(model.get("options", {})),
            class_names=tuple(data["class_names"]), palette=tuple(tuple(c) for c in data["palette"]),
            ignore_index=int(data["ignore_index"]), mean=tuple(data["mean"]), std=tuple(data["std"]),
        )  # fmt: skip


def save_checkpoint(
    path: str | Path, *, config: ModelConfig, model: nn.Module, **extra: Any
) -> None:
    payload = {
        "format": FORMAT,
        "version": 1,
        **config.to_dict(),
        "state_dict": model.state_dict(),
        **extra,
    }
    atomic_write(Path(path), lambda f: torch.save(payload, f))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ArgumentError("checkpoint", f"{path}: file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors come in many types
        raise ArgumentError(
            "checkpoint", f"{path}: not a readable checkpoint ({type(error).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArgumentError(
            "checkpoint", f"{path}: not a segnet checkpoint (made by segnet train?)"
        )
    missing = _missing_fields(payload)
    if missing:
        raise ArgumentError(
            "checkpoint",
            f"{path}: incomplete segnet checkpoint (no {missing}); re-save it with segnet",
        )
    return payload


# What every checkpoint holds (module docstring): what rebuilding the model needs.
_REQUIRED = {
    "model": {"name": str, "num_classes": int},
    "data": {"class_names": list, "palette": list, "ignore_index": int, "mean": list, "std": list},
}


def _missing_fields(payload: dict[str, Any]) -> str | None:
    """The first required field a payload lacks (or holds with the wrong type), as ``a.b``."""
    if not isinstance(payload.get("state_dict"), dict):
        return "state_dict"
    for section, keys in _REQUIRED.items():
        if not isinstance(payload.get(section), dict):
            return section
        for key, kind in keys.items():
            if not isinstance(payload[section].get(key), kind):
                return f"{section}.{key}"
    return None


def check_num_classes(path: str | Path, config: ModelConfig, num_classes: int) -> None:
    """A checkpoint is evaluated or fine-tuned only on data with its class count."""
    if num_classes != config.num_classes:
        raise ArgumentError(
            "checkpoint",
            f"{path}: trained for {config.num_classes} classes, the data has {num_classes}",
        )


def load_model(
    path: str | Path, *, expect_model: str | None = None, expect_num_classes: int | None = None
) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """Rebuilds the model a checkpoint describes and loads its weights (eval mode)."""
    payload = read_checkpoint(path)
    config = ModelConfig.from_dict(payload)
    if expect_model is not None and expect_model != config.name:
        raise ArgumentError(
            "checkpoint", f"{path}: holds a {config.name!r} model, not {expect_model!r}"
        )
    if expect_num_classes is not None:
        check_num_classes(path, config, expect_num_classes)
    model = config.build()
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[1:2] or [str(error)]
        raise ArgumentError(
            "checkpoint", f"{path}: weights do not fit {config.name!r}: {first[0].strip()}"
        ) from None
    return model.eval(), config, payload
