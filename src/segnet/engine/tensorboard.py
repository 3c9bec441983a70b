"""TensorBoard event files for a run (``tensorboard``; ``tensorboard --logdir RUN/tensorboard``).

One step per epoch, the same numbers as ``log.csv``: ``train/loss``, ``train/lr``,
``train/images_per_s`` and ``train/epoch_s`` every epoch; at each validation ``val/G``,
``val/C``, ``val/mIoU``, ``val/BF``, the IoU of every class (``val_iou/NAME``) and a few val
images (``val_images/NAME``: ground truth beside the prediction, both over the image).
An epoch's events are written before its ``last.pt``, and a resumed run drops the events of
the epochs it repeats (``purge_step``): after a kill at any point each epoch shows once.

TensorBoard is optional (``pip install 'segnet[tensorboard]'``): :func:`require_tensorboard`
says so in one line before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..data.base import SegmentationDataset
from ..errors import ArgumentError
from .inference import predict_probabilities
from .predict import colorize, overlay

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

FOLDER = "tensorboard"  # under the run folder
INSTALL_HINT = "needs TensorBoard: pip install 'segnet[tensorboard]' (or pip install tensorboard)"
IMAGES = 3  # val images shown at each validation
MAX_WIDTH = 960  # a panel (two images side by side) is subsampled to at most this many pixels

_METRICS = (("G", "global_accuracy"), ("C", "class_accuracy"), ("mIoU", "miou"), ("BF", "bf"))


def require_tensorboard() -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ArgumentError("tensorboard", INSTALL_HINT) from None


class RunBoard:
    """The event writer of one run (rank 0 only); steps are epoch numbers (1-based). The
    folder and its event file appear with the first event, so a run that logged nothing
    leaves nothing."""

    def __init__(self, folder: Path, *, first_epoch: int) -> None:
        require_tensorboard()
        self.folder, self.first_epoch, self._writer = folder, first_epoch, None

    @property
    def writer(self) -> SummaryWriter:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: events at this epoch or later, left by a killed launch, are hidden
            purge = self.first_epoch if self.first_epoch > 1 else None
            self._writer = SummaryWriter(str(self.folder), purge_step=purge)
        return self._writer

    def log(
        self,
        row: dict,
        metrics: dict,
        model: nn.Module | None,
        *,
        val_set: SegmentationDataset,
        palette: list | tuple,
        device: torch.device,
        precision: str,
    ) -> None:
        """An epoch's scalars; after a validation (``model``: the model validated) its
        metrics and a few val images with their predictions; flushed."""
        self.log_epoch(row)
        if model is not None:
            self.log_validation(row["epoch"], metrics)
            panels = prediction_panels(model, val_set, palette=palette, device=device,
                                       precision=precision)  # fmt: skip
            self.log_images(row["epoch"], panels)
        self.flush()

    def log_epoch(self, row: dict) -> None:
        for key in ("loss", "lr", "images_per_s", "epoch_s"):
            value = row["train_loss"] if key == "loss" else row[key]
            self.writer.add_scalar(f"train/{key}", value, row["epoch"])

    def log_validation(self, epoch: int, metrics: dict) -> None:
        for short, key in _METRICS:
            if metrics.get(key) is not None:
                self.writer.add_scalar(f"val/{short}", metrics[key], epoch)
        for row in metrics["per_class"]:
            if not np.isnan(row["iou"]):  # a class in neither truth nor prediction
                self.writer.add_scalar(f"val_iou/{row['name']}", row["iou"], epoch)

    def log_images(self, epoch: int, panels: list[tuple[str, np.ndarray]]) -> None:
        for name, panel in panels:
            self.writer.add_image(f"val_images/{name}", panel, epoch, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def prediction_panels(
    model: nn.Module,
    dataset: SegmentationDataset,
    *,
    palette: list | tuple,
    device: torch.device,
    precision: str,
    count: int = IMAGES,
) -> list[tuple[str, np.ndarray]]:
    """(name, (H, 2W, 3) uint8) for ``count`` val images spread over ``dataset``: the ground
    truth over the image (void uncoloured) beside the prediction over the image."""
    model.eval()
    indices = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, min(count, len(dataset)))})
    panels = []
    for index in indices:
        image, mask = dataset.load(index)  # (H, W, 3) uint8, (H, W) uint8
        tensor, _ = dataset[index]  # (3, H, W) normalised
        probs = predict_probabilities(model, tensor[None], device=device, precision=precision)
        pred = probs.mean.argmax(dim=1)[0].cpu().numpy()  # (H, W)
        truth = np.where((mask < len(palette))[..., None], colorize(mask, palette), image)
        panel = np.concatenate(
            [overlay(image, truth), overlay(image, colorize(pred, palette))], axis=1
        )
        step = -(-panel.shape[1] // MAX_WIDTH)
        panels.append((str(dataset.names[index]), np.ascontiguousarray(panel[::step, ::step])))
    return panels
