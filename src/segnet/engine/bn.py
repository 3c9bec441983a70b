"""Precise batch norm: population statistics over the training set (paper Sec. 4.1).

After training, the authors replaced every BN layer's running mean/variance -- an exponential
average taken while the weights were still changing -- by statistics computed with the final
weights over the training images (SegNet-Tutorial ``compute_bn_statistics.py``), the network
in training mode so each BN layer sees the inputs it saw during training.

Here every BN layer's input moments are accumulated per channel in float64 during that pass
(images with the eval transform, BN layers in train mode, dropout off), so the result is the
exact population mean and (unbiased) variance over all pixels of all images -- independent of
batch size, a partial last batch or images of different sizes, unlike an average of per-batch
statistics (BN's ``momentum=None`` mode). Each layer's own running-average update is switched
off (``momentum=0``) during the pass and its momentum restored afterwards.

The same pass over *unlabeled* images of another camera, drive or light re-estimates the
statistics for that domain instead (AdaBN, Li et al. 2016): a trained model's features shift
with the input's light and colour, and BN can re-centre them without a label. ``blend`` keeps
part of the training's statistics (Schneider et al. 2020 weight the two by sample counts).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import ArgumentError

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

# What precise BN reads of a run's training images (`segnet bn-stats --precise-bn`, `evaluate
# --precise-bn`). A run trained with colour jitter normalized jittered inputs; the statistics of
# clean frames are narrower (docs/results.md, twenty-first session).
PRECISE_BN_SAMPLES = {
    "frames": "the training frames unaugmented, as the paper, which trained without augmentation",
    "augmented": "the training frames as the run augmented them (its crops, scale, flips and "
    "colour jitter, from the checkpoint's config), the inputs its running statistics tracked",
}


class _ChannelMoments:
    """Running per-channel mean and sum of squared deviations of a BN layer's inputs.

    Each batch's moments are taken in float32 by ``torch.var_mean`` and merged into float64
    totals with Chan et al.'s pairwise update, which neither loses precision to cancellation
    (as E[x^2] - E[x]^2 would) nor needs a float64 copy of the activations.
    """

    def __init__(self, channels: int, device: torch.device) -> None:
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(channels, dtype=torch.float64, device=device)  # sum of (x - mean)^2
        self.count = 0

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().float()  # (N, C, ...) -- BN's input
        dims = [d for d in range(x.dim()) if d != 1]
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        n = x.numel() // x.shape[1]
        total = self.count + n
        delta = mean.double() - self.mean
        self.mean += delta * (n / total)
        self.m2 += var.double() * n + delta.square() * (self.count * n / total)
        self.count = total

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean, self.m2 / max(1, self.count - 1)  # unbiased, as BN's running_var


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """BN layers that keep running statistics (those precise BN replaces)."""
    return [m for m in model.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]


# What the pass reads: a labelled dataset (items (image, mask)) or unlabeled images (items
# (3, H, W) float tensors, data.unlabeled.ImageFiles); either normalized as for evaluation.
ImageSource = Sequence


def _batches(images: ImageSource, indices: list[int], batch_size: int) -> Iterator[torch.Tensor]:
    """Images (N, 3, H, W) in order; a batch closes early when the image size changes."""
    batch: list[torch.Tensor] = []
    for index in indices:
        item = images[index]
        image = item[0] if isinstance(item, tuple) else item  # a dataset's (image, mask)
        if batch and (len(batch) == batch_size or image.shape != batch[0].shape):
            yield torch.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield torch.stack(batch)


@torch.no_grad()
def recompute_bn_statistics(
    model: nn.Module,
    dataset: ImageSource,
    *,
    device: torch.device,
    batch_size: int = 4,
    max_images: int | None = None,
    blend: float = 1.0,
    progress: bool = False,
) -> dict:
    """Replaces every BN layer's running mean/var by its population statistics over ``dataset``
    (a labelled dataset or unlabeled images), or with ``blend`` < 1 by ``blend`` times them plus
    ``1 - blend`` times the statistics the layer had (see :func:`blend_statistics`).

    ``model`` must already be on ``device``; it is left in the train/eval mode it came in.
    ``max_images`` uses that many images spread evenly over the dataset (default: all).
    Returns ``{"layers": number of BN layers updated, "images": images used}``.
    """
    if batch_size < 1:
        raise ArgumentError("batch_size", f"must be >= 1, got {batch_size}")
    if not 0 < blend <= 1:
        raise ArgumentError("blend", f"must be in (0, 1], got {blend}")
    layers = bn_layers(model)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    if not layers or count == 0:
        return {"layers": len(layers), "images": 0}
    indices = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, count).round()})
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in layers}
    moments = {bn: _ChannelMoments(bn.num_features, bn.running_mean.device) for bn in layers}
    hooks = [bn.register_forward_pre_hook(moments[bn]) for bn in layers]
    try:
        model.eval()  # dropout (and anything else mode-dependent) off ...
        for bn in layers:  # ... but BN normalises with batch statistics, as in training
            bn.train()
            bn.momentum = 0.0  # the running buffers stay as they are until the end
        batches = _batches(dataset, indices, batch_size)
        for images in tqdm(batches, desc="precise BN", disable=not progress or None, leave=False):
            model(images.to(device))
    finally:
        for hook in hooks:
            hook.remove()
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for module, training in modes.items():
            module.train(training)
    for bn in layers:
        old = bn.running_mean.double(), bn.running_var.double()
        mean, var = blend_statistics(*moments[bn].mean_var(), *old, weight=blend)  # float64
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    return {"layers": len(layers), "images": len(indices)}


def blend_statistics(
    mean: torch.Tensor, var: torch.Tensor, old_mean: torch.Tensor, old_var: torch.Tensor, *,
    weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Mean and variance of the mixture ``weight`` x (mean, var) + (1 - ``weight``) x (old_mean,
    old_var), per channel (any broadcastable shapes). The variance is the mixture's -- both
    variances weighted plus the spread of the two means -- so a blend of two shifted
    populations is not normalized too narrow."""
    if weight == 1:
        return mean, var
    shift = (mean - old_mean).square()
    blended_var = weight * var + (1 - weight) * old_var + weight * (1 - weight) * shift
    return weight * mean + (1 - weight) * old_mean, blended_var
