"""Logit adjustment: after training, undo part of the class re-weighting a model was trained with.

Cross-entropy weighted by class weights w (data/stats.py: median-frequency, or its square root)
fits scores whose softmax is proportional to ``w_c * p(c | x)``, not ``p(c | x)``, so a weighted
model over-predicts its rare classes (the shipped SegNet-Basic on CamVid's test split: Building
recall 72%, Pole / SignSymbol / Fence IoU 11-14). Adding the per-class constant

    offset_c = -tau * log(w_c)          (centred: the offsets of the weighted classes sum to 0)

to the scores moves the model part of the way back (Menon et al. 2021, "Long-tail learning via
logit adjustment", run in reverse): tau = 0 is the model as trained, tau = 1 undoes the weights
(scores ~ log p(c | x): the best global accuracy), tau < 0 balances further. A constant per
class folds into the bias of the layer that makes the scores (:func:`fold_offsets`), so an
adjusted checkpoint runs on every backend and exports with no code of its own. Choose tau on
images the model never saw (a held-out drive: ``segnet evaluate --logit-adjust``), then apply it
with ``segnet export --logit-adjust``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.stats import resolve_class_weights
from ..errors import ArgumentError, SegNetError
from .checkpoint import ModelConfig

FLAG = "logit_adjust"
CHECK_SIZE = (96, 128)  # the random input an adjusted model is checked on: /32 for every model


def logit_offsets(weights: torch.Tensor, tau: float) -> torch.Tensor:
    """(K,) ``-tau * log(w)``, centred over the classes with weight > 0; a class that never
    appeared in training (weight 0) keeps offset 0."""
    weights = weights.double()
    present = weights > 0
    if not present.any():
        raise ArgumentError(FLAG, "every class weight is 0: there is no re-weighting to undo")
    logs = torch.zeros_like(weights)
    logs[present] = weights[present].log()
    logs[present] -= logs[present].mean()
    return (-tau * logs).float()


def training_class_weights(payload: dict[str, Any], *, path: str | Path) -> torch.Tensor:
    """(K,) the class weights ``path``'s model was trained with: stored in the checkpoint, or
    (checkpoints older than 2026-12-07) recomputed from the training images its config names,
    less the sequences it held out, as ``segnet train`` computed them."""
    if payload.get("class_weights") is not None:
        return torch.tensor(payload["class_weights"], dtype=torch.float32)
    run = payload.get("train_config") or {}
    spec = run.get("class_weights")
    if spec is None:
        raise ArgumentError(FLAG, f"{path}: holds no training config, so no class weights to undo")
    if spec in ("natural", "none"):
        raise ArgumentError(
            FLAG,
            f"{path}: trained without class weights ({spec}): there is no re-weighting to undo",
        )
    from .config import TrainConfig
    from .prepare import training_splits

    try:
        train_set, _ = training_splits(TrainConfig.from_saved(run))
        weights = resolve_class_weights(spec, train_set)
    except SegNetError as error:
        raise ArgumentError(
            FLAG,
            f"{path} predates stored class weights, and its training data ({run.get('dataset')} "
            f"at {run.get('data')}) is not usable here to recompute them ({error})",
        ) from None
    assert weights is not None  # `natural` / `none` were refused above
    return weights


def adjustments(
    payload: dict[str, Any], taus: Sequence[float], *, path: str | Path
) -> list[torch.Tensor]:
    """One (K,) offset per tau for the checkpoint ``payload`` read from ``path``."""
    weights = training_class_weights(payload, path=path)
    return [logit_offsets(weights, tau) for tau in taus]


def fold_offsets(model: nn.Module, config: ModelConfig, offsets: torch.Tensor) -> str:
    """Adds ``offsets`` (K,) to the bias of ``model``'s score layer, in place; returns its name.

    The score layer is the last convolution with K outputs and a bias whose output reaches the
    logits unchanged up to a per-class constant (a crop or a bilinear resize keeps constants);
    each candidate is checked on a random input and put back when the logits did not move by
    exactly the offsets (FCN's learned upsampling, a BN after the last convolution)."""
    k = config.num_classes
    candidates = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
        and m.out_channels == k
        and m.bias is not None
    ]
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(0)
    parameter = next(model.parameters())
    images = torch.randn(1, config.in_channels, *CHECK_SIZE, generator=generator)
    images = images.to(parameter.device, parameter.dtype)
    shift = offsets.to(parameter.device, parameter.dtype)
    try:
        with torch.no_grad():
            before = model(images)  # (1, K, H, W)
            for name, layer in reversed(candidates):
                bias = layer.bias.clone()
                layer.bias.add_(shift)
                moved = model(images) - before
                if torch.allclose(moved, shift[None, :, None, None].expand_as(moved), atol=1e-3):
                    return name
                layer.bias.copy_(bias)
    finally:
        model.train(was_training)
    raise ArgumentError(
        FLAG,
        f"{config.name}: no layer whose bias shifts all its logits by a constant per class (its "
        "upsampling is learned, or uneven at the borders), so the offsets cannot be folded into "
        "its weights; `segnet evaluate --logit-adjust` still scores them",
    )


def adjust_model(
    model: nn.Module, config: ModelConfig, payload: dict[str, Any], *, tau: float, path: str | Path
) -> dict[str, Any]:
    """Folds tau's offsets into ``model`` (in place); returns what the adjusted file records:
    the total tau (a checkpoint already adjusted adds to its own), the offsets, the layer and
    the class weights they came from."""
    weights = training_class_weights(payload, path=path)
    offsets = logit_offsets(weights, tau)
    layer = fold_offsets(model, config, offsets)
    earlier = payload.get(FLAG) or {"tau": 0.0, "offsets": [0.0] * len(offsets)}
    return {
        "tau": earlier["tau"] + tau,
        "offsets": [a + b for a, b in zip(earlier["offsets"], offsets.tolist())],
        "layer": layer,
        "class_weights": weights.tolist(),
    }
