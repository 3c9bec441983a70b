"""Weights that ship inside the package: ``load_pretrained("segnet_basic", "camvid")``.

Each entry is a small fp16 checkpoint in ``segnet/weights/`` carrying its model config and
class names, so it loads with no training and no download. The weights are stored in fp16 to
keep the wheel small (SegNet-Basic: ~2.8 MB); they are cast back to fp32 on load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import SegNetError
from ..files import atomic_write
from .adjust import FLAG, adjust_model
from .checkpoint import ModelConfig, load_model, read_checkpoint

# What shipped weights keep of a training checkpoint: no optimizer, schedule or log; where its
# BN statistics came from when `segnet bn-stats` replaced them.
KEPT = ("format", "version", "model", "data", "epoch", "metrics", "train_config", "class_weights",
        FLAG, "precise_bn", "bn_adapted")  # fmt: skip
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # segnet/weights/


def available_weights() -> dict[str, list[str]]:
    """{model name: [weights names]} for the files present in the package."""
    found: dict[str, list[str]] = {}
    for path in sorted(WEIGHTS_DIR.glob("*__*.pt")):
        model, name = path.stem.split("__", 1)
        found.setdefault(model, []).append(name)
    return found


def weights_path(model: str, weights: str) -> Path:
    path = WEIGHTS_DIR / f"{model}__{weights}.pt"
    if not path.is_file():
        shipped = ", ".join(
            f"{m} with weights {w}" for m, ws in available_weights().items() for w in ws
        )
        raise SegNetError(
            f"no shipped weights {weights!r} for model {model!r}; available: {shipped or 'none'}"
        )
    return path


def load_pretrained_with_config(model: str, weights: str) -> tuple[nn.Module, ModelConfig]:
    net, config, _ = load_model(weights_path(model, weights), expect_model=model)
    return net.float().eval(), config


def load_for_inference(
    *, checkpoint: str | Path | None = None, model: str | None = None, weights: str | None = None
) -> tuple[nn.Module, ModelConfig]:
    """A trained model and its config from either a checkpoint or the package's shipped weights
    (``model`` + ``weights``): what ``predict``, ``benchmark`` and ``serve`` accept."""
    if (checkpoint is None) != (model is not None and weights is not None) or (
        checkpoint is not None and (model is not None or weights is not None)
    ):
        raise SegNetError("give either `checkpoint` CKPT or `model` NAME `weights` NAME")
    if checkpoint is not None:
        net, config, _ = load_model(checkpoint)
        return net, config
    return load_pretrained_with_config(model or "", weights or "")


def load_pretrained(model: str, weights: str) -> nn.Module:
    """The shipped model in eval mode; its config is at ``model.segnet_config``."""
    net, config = load_pretrained_with_config(model, weights)
    net.segnet_config = config
    return net


def pack_weights(checkpoint: str | Path, out: str | Path, *, logit_adjust: float = 0.0) -> Path:
    """Writes an inference-only fp16 copy of a training checkpoint (config, classes, metrics,
    class weights); ``logit_adjust``: tau folded into its score layer first (engine/adjust.py),
    recorded under ``logit_adjust`` (``metrics`` stay those measured before it)."""
    payload = read_checkpoint(checkpoint)
    state = payload["state_dict"]
    keep = {k: payload[k] for k in KEPT if k in payload}
    keep["metrics"] = {k: v for k, v in keep.get("metrics", {}).items() if k != "confusion_matrix"}
    if logit_adjust:
        config = ModelConfig.from_dict(payload)  # the payload already read: no second load
        model = config.build()
        model.load_state_dict(state)  # fp32 model: fp16 weights are cast up
        record = adjust_model(model, config, payload, tau=logit_adjust, path=checkpoint)
        keep[FLAG], keep["class_weights"] = record, record["class_weights"]
        state = model.state_dict()
    keep["state_dict"] = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    atomic_write(Path(out), lambda f: torch.save(keep, f))
    return Path(out)
