"""Probe: BN statistics at test time on CamVid images a checkpoint may never have seen.

Scores one checkpoint over the same images (eager fp32 for per-image modes, one forward pass
each) with its BN layers normalizing by:

  running     the training's running statistics (what `predict` does)
  image:A     each image's own feature statistics, weighted A against the running ones (the
              mixture's mean and variance; A=1 is AdaBN-style per-image normalization)
  drive:A     statistics re-estimated on all the scored images, weighted A against the running
              ones: what `segnet evaluate --adapt-bn A` gives (engine/bn.py)
  halves:A    the same, but each half of the frames (every other one) is scored with statistics
              estimated on the other half only, so no frame is scored by statistics it shaped
  precise:S   precise BN over the checkpoint's own training images (its run's split, less the
              drives it held out), samples S: frames (clean, one pass, as `--precise-bn`), or
              two passes of draws of: augmented (the run's own augmentation; `--precise-bn
              augmented` reads one pass), geometry (its crops, scale and flips only), jitter
              (its colour jitter only, whole frames), jitter2 (its augmentation with the colour
              jitter twice as strong)

G, C, mIoU, BF and per-class IoU per mode; the two halves' confusion matrices are summed and
their BF averaged. Nothing is written. Used in docs/results.md:

    python benchmarks/bn_statistics_probe.py runs/holdout_0001TP/last.pt train 0001TP \\
        --modes running image:1 image:0.5 drive:0.5 halves:1
"""

import argparse
import copy
import time
from dataclasses import fields, replace

import torch
from torch import nn
from torch.utils.data import ConcatDataset

from segnet.data import SegmentationDataset, open_dataset
from segnet.data.groups import Subset, split_groups
from segnet.data.transforms import Augment, AugmentedDataset, Photometric
from segnet.engine.bn import blend_statistics, recompute_bn_statistics
from segnet.engine.checkpoint import load_model
from segnet.engine.config import TrainConfig
from segnet.engine.evaluate import evaluate
from segnet.engine.prepare import training_augment, training_splits
from segnet.metrics.confusion import ConfusionMatrix

CAMVID = "../shared/data/CamVid"
CPU = torch.device("cpu")


class ImageBlendedBN(nn.Module):
    """A BN layer normalizing (N, C, H, W) by each image's own statistics, weighted ``alpha``
    against the layer's running ones (the mixture's mean and variance)."""

    def __init__(self, bn: nn.BatchNorm2d, alpha: float) -> None:
        super().__init__()
        self.bn, self.alpha = bn, alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, a = self.bn, self.alpha  # blend_statistics (engine/bn.py), per image
        var_i, mean_i = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)  # (N, C, 1, 1)
        mean_r, var_r = (t[None, :, None, None] for t in (bn.running_mean, bn.running_var))
        mean, var = blend_statistics(mean_i, var_i, mean_r, var_r, weight=a)
        y = (x - mean) * torch.rsqrt(var + bn.eps)
        return y * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def image_blended(model: nn.Module, alpha: float) -> nn.Module:
    copied = copy.deepcopy(model)
    for module in list(copied.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, ImageBlendedBN(child, alpha))
    return copied


def adapted(model: nn.Module, images: SegmentationDataset, blend: float) -> nn.Module:
    copied = copy.deepcopy(model)
    recompute_bn_statistics(copied, images, device=CPU, blend=blend)
    return copied


def training_samples(run: dict, samples: str) -> ConcatDataset | SegmentationDataset:
    """The checkpoint's training images (``run``: its train_config), two passes of ``samples``."""
    config = TrainConfig.from_saved(run)
    train, _ = training_splits(config)
    full = training_augment(config, ignore_index=train.info.ignore_index)
    stronger = Photometric(**{f.name: getattr(full.photometric, f.name) * 2
                              for f in fields(Photometric)})  # fmt: skip
    augments = {
        "augmented": full,
        "geometry": replace(full, photometric=Photometric()),
        "jitter": Augment(
            hflip=False, ignore_index=full.ignore_index, photometric=full.photometric
        ),
        "jitter2": replace(full, photometric=stronger),
    }
    if samples == "frames":
        return train
    if samples not in augments:
        raise SystemExit(f"unknown precise BN samples {samples!r}")
    passes = [AugmentedDataset(train, augments[samples], seed=config.seed) for _ in range(2)]
    passes[1].set_epoch(1)  # epochs 0 and 1's draws
    return ConcatDataset(passes)


def score(
    model: nn.Module,
    mode: str,
    data: SegmentationDataset,
    num_classes: int,
    ignore_index: int,
    run: dict,
) -> dict:
    kind, _, weight = mode.partition(":")
    if kind == "precise":
        precise = copy.deepcopy(model)
        recompute_bn_statistics(precise, training_samples(run, weight), device=CPU)
        return evaluate(precise, data, device=CPU, progress=False)
    a = float(weight or 1)
    if kind == "running":
        return evaluate(model, data, device=CPU, progress=False)
    if kind == "image":  # cannot fold into the convolutions: eager
        return evaluate(image_blended(model, a), data, device=CPU, optimize=False, progress=False)
    if kind == "drive":
        return evaluate(adapted(model, data, a), data, device=CPU, progress=False)
    if kind != "halves":
        raise SystemExit(f"unknown mode {mode!r}")
    halves = [Subset(data, range(start, len(data), 2)) for start in (0, 1)]
    found = [evaluate(adapted(model, halves[1 - i], a), halves[i], device=CPU, progress=False)
             for i in (0, 1)]  # fmt: skip
    confusion = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    confusion.matrix = sum(torch.tensor(f["confusion_matrix"]) for f in found)
    return {**confusion.compute(data.info.class_names), "bf": (found[0]["bf"] + found[1]["bf"]) / 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("split")
    parser.add_argument("group", nargs="?")
    parser.add_argument("--modes", nargs="+", default=["running", "image:1"])
    args = parser.parse_args()
    model, config, payload = load_model(args.checkpoint)
    data = open_dataset("camvid", root=CAMVID, split=args.split)
    if args.group:
        _, data = split_groups(data, [args.group])
    where = f"{args.split}{f' {args.group}' if args.group else ''}"
    print(f"{args.checkpoint} on {where} ({len(data)} images)")
    for mode in args.modes:
        start = time.perf_counter()
        r = score(model.eval(), mode, data, config.num_classes, config.ignore_index,
                  payload.get("train_config") or {})  # fmt: skip
        ious = " ".join(f"{row['name'][:5]} {100 * row['iou']:.1f}" for row in r["per_class"])
        print(f"{mode:>10}: G {100 * r['global_accuracy']:.1f} C {100 * r['class_accuracy']:.1f} "
              f"mIoU {100 * r['miou']:.2f} BF {100 * r['bf']:.2f} | {ious} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
