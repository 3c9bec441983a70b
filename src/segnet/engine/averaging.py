"""Weight averaging of late epochs (stochastic weight averaging, Izmailov et al. 2018).

With ``average_last N`` a run keeps the running mean of its weights as they stand at the end
of each of its last N epochs. The average of weights from the end of a decaying schedule sits
nearer the middle of a flat region of the loss than any one of them, which tends to generalise
better to data unlike the training set (a new drive, other light); whether it does for a recipe
is for held-out sequences to say (docs/results.md). At the end of the run the averaged weights
get BN statistics recomputed over the training images as the last epoch augmented them
(:mod:`.bn`: an average of weights does not match any epoch's running statistics, and those
tracked augmented inputs), are validated like any epoch, and are written to
``RUN_DIR/averaged.pt``, a checkpoint like ``best.pt``.

Only trained parameters are averaged; BN running statistics are recomputed, not averaged.
The running mean is kept in float32 (``mean += (w - mean) / n``) and travels in ``last.pt``,
so a resumed run averages exactly as an uninterrupted one; if a resumed run was given more
epochs, its window moves and an average begun before the new window starts afresh.
"""

from __future__ import annotations

import torch
from torch import nn

FILE = "averaged.pt"


def window_start(*, epochs: int, average_last: int) -> int:
    """First epoch (1-based) of the averaging window: the last ``average_last`` epochs."""
    return max(1, epochs - average_last + 1)


class WeightAverage:
    """Running mean of a model's parameters over the epochs given to :meth:`update`."""

    def __init__(self) -> None:
        self.mean: dict[str, torch.Tensor] = {}
        self.epochs: list[int] = []  # 1-based epochs averaged, in order

    def update(self, model: nn.Module, *, epoch: int, first: int) -> None:
        """Adds ``model``'s parameters at the end of ``epoch`` (1-based); an average that began
        before ``first`` (the window's first epoch) is dropped first."""
        if self.epochs and self.epochs[0] < first:
            self.mean, self.epochs = {}, []
        count = len(self.epochs) + 1
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                value = parameter.detach().float()
                if name not in self.mean:
                    self.mean[name] = value.clone()
                else:
                    self.mean[name].add_(value - self.mean[name], alpha=1.0 / count)
        self.epochs.append(epoch)

    def apply_to(self, model: nn.Module) -> nn.Module:
        """Copies the averaged parameters into ``model`` (same architecture); returns it."""
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                parameter.copy_(self.mean[name].to(parameter.dtype))
        return model

    def state_dict(self) -> dict:
        return {"epochs": list(self.epochs), "mean": {k: v.cpu() for k, v in self.mean.items()}}

    def load_state_dict(self, state: dict, *, device: torch.device) -> None:
        self.epochs = [int(e) for e in state["epochs"]]
        self.mean = {k: v.to(device) for k, v in state["mean"].items()}
