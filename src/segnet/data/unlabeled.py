"""Images without labels: frames of a camera, drive or light a model was not trained on, whose
BN statistics ``segnet bn-stats --images`` re-estimates (engine/bn.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .base import normalize
from .io import read_image


class ImageFiles(Sequence[torch.Tensor]):
    """Image files, each read as a normalized float32 (3, H, W) tensor, as for evaluation."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.names = [path.stem for path in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        # np.array copies: the decoded buffer may be read-only (as in base.to_tensors)
        return normalize(torch.from_numpy(np.array(read_image(self.paths[index]))))
