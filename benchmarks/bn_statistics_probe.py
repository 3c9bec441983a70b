"""Probe: BN with the training's running statistics against each image's own statistics
(AdaBN-style test-time normalization), on CamVid images a checkpoint may never have seen.

Scores the checkpoint twice over the same images, eager fp32, one forward pass each: its BN
layers as trained (running mean and variance: what `predict` does), then normalizing every
feature map by the statistics of that one image (BN running statistics dropped; the affine
terms kept). Prints G, C, mIoU and per-class IoU for both; BF is not computed. No library code
uses per-image statistics yet: this measures whether it is worth building (docs/results.md).

    python benchmarks/bn_statistics_probe.py runs/holdout_0001TP/last.pt train 0001TP
    python benchmarks/bn_statistics_probe.py src/segnet/weights/segnet_basic__camvid.pt val
"""

import copy
import sys

import torch

from segnet.data import open_dataset
from segnet.data.groups import split_groups
from segnet.engine.checkpoint import load_model
from segnet.metrics.confusion import ConfusionMatrix

CAMVID = "../shared/data/CamVid"


def per_image_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose BN layers normalize by the batch's own statistics, also in eval mode."""
    copied = copy.deepcopy(model)
    for m in copied.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean = m.running_var = None  # eval-mode BN then uses batch statistics
            m.track_running_stats = False
    return copied


def main(checkpoint: str, split: str, group: str | None) -> None:
    model, config, _ = load_model(checkpoint)
    models = {"running": model.eval(), "per-image": per_image_statistics(model).eval()}
    data = open_dataset("camvid", root=CAMVID, split=split)
    if group:
        _, data = split_groups(data, [group])
    found = {name: ConfusionMatrix(config.num_classes, ignore_index=config.ignore_index)
             for name in models}  # fmt: skip
    with torch.no_grad():
        for index in range(len(data)):
            image, mask = data[index]  # (3, H, W) normalized, (H, W) int64
            for name, net in models.items():
                found[name].update(net(image[None]).argmax(1), mask[None])
    print(f"{checkpoint} on {split}{f' {group}' if group else ''} ({len(data)} images)")
    for name, confusion in found.items():
        r = confusion.compute(config.class_names)
        ious = " ".join(f"{row['name'][:5]} {100 * row['iou']:.1f}" for row in r["per_class"])
        print(f"{name:>10}: G {100 * r['global_accuracy']:.1f} C {100 * r['class_accuracy']:.1f} "
              f"mIoU {100 * r['miou']:.2f} | {ious}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
