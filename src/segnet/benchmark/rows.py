"""Which rows a benchmark measures beyond the reference, and how good each row's labels are.

Rows are (backend, precision) pairs from ``--backend`` x ``--precision``; combinations a backend
does not run (torch int8, onnxruntime bf16) are skipped. As soon as one row is an engine or int8,
the fp32 engines are added as peers (:data:`PEERS`, where installed): an engine's int8 row is
then read against the same engine in fp32, measured in the same alternating run.

Quality per row: the share of pixels labelled as the eager fp32 model labels them -- on
``--images``, on a labelled split (``--data``: with its mIoU beside eager fp32's), or else on the
random benchmark input (which says little for int8 or bf16: untrained logits are near ties).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..data.base import SegmentationDataset, normalize
from ..data.io import read_image
from ..deploy.backends import BACKENDS, check_combination, engine_installed
from ..deploy.runtime import resolve_precision
from ..errors import ArgumentError
from ..metrics import ConfusionMatrix, pixel_agreement

PEERS = (("onnxruntime", "fp32"), ("openvino", "fp32"))
Row = tuple[str, str]  # (backend, precision); precision resolved except for backend "auto"


def row_plan(backends: Sequence[str], precisions: Sequence[str], device: torch.device) -> list[Row]:
    """Torch rows first, then the fp32 engine peers (when an engine or int8 row is asked),
    then the other rows, in the order asked; no repeats."""
    asked: list[Row] = []
    skipped: ArgumentError | None = None
    for backend in backends:
        if backend not in BACKENDS:
            raise ArgumentError("backend", f"must be among {', '.join(BACKENDS)}, got {backend!r}")
        if device.type != "cpu" and backend not in ("torch", "auto"):
            raise ArgumentError("backend", f"{backend} runs on CPU; on {device.type} use torch")
        for precision in precisions:
            resolved = resolve_precision(precision, device)
            if backend == "auto":
                asked.append(("auto", precision))
                continue
            try:
                check_combination(backend, resolved)
            except ArgumentError as error:
                skipped = skipped or error
                continue
            asked.append((backend, resolved))
    if not asked:
        raise skipped or ArgumentError("backend", "names no backend")
    engines = device.type == "cpu" and any(b != "torch" or p == "int8" for b, p in asked)
    peers = [p for p in PEERS if engines and engine_installed(p[0])]
    ordered = [r for r in asked if r[0] == "torch"] + peers + asked
    return list(dict.fromkeys(ordered))


def _normalized(path: Path) -> torch.Tensor:
    return normalize(torch.from_numpy(read_image(path).copy())).unsqueeze(0)  # (1, 3, H, W)


@torch.no_grad()
def image_agreement(
    model: nn.Module, optimized: nn.Module, paths: Sequence[Path], device: torch.device
) -> float:
    """Fraction of pixels of real images given the same class by ``optimized`` as by the eager
    fp32 ``model`` (ImageNet-normalised RGB, each image at its own size)."""
    same = total = 0
    for path in paths:
        x = _normalized(path).to(device)
        eager = model.float().eval()(x).argmax(1)  # (1, H, W)
        same += pixel_agreement(optimized(x).argmax(1).to(eager.device), eager) * eager.numel()
        total += eager.numel()
    return same / total


@torch.no_grad()
def split_quality(
    model: nn.Module, optimized: Sequence[nn.Module], dataset: SegmentationDataset,
    device: torch.device,
) -> tuple[float, list[tuple[float, float]]]:  # fmt: skip
    """(eager fp32 mIoU, [(agreement with eager fp32, mIoU)] per optimized model) over every
    image of ``dataset``, void excluded from the mIoU."""
    info = dataset.info
    matrices = [ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index)
                for _ in range(len(optimized) + 1)]  # fmt: skip
    same = [0.0] * len(optimized)
    total = 0
    eager = model.float().eval()
    for index in range(len(dataset)):
        images, mask = dataset[index]
        x = images[None].to(device)  # (1, 3, H, W)
        expected = eager(x).argmax(1).cpu()  # (1, H, W)
        matrices[0].update(expected, mask[None])
        for i, net in enumerate(optimized):
            labels = net(x).argmax(1).cpu()
            same[i] += (labels == expected).sum().item()
            matrices[i + 1].update(labels, mask[None])
        total += expected.numel()
    mious = [m.compute(info.class_names)["miou"] for m in matrices]
    return mious[0], [(s / total, miou) for s, miou in zip(same, mious[1:])]
