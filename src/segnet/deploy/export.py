"""Deployment formats: ONNX (onnxruntime, TensorRT, ...) and ``torch.export`` programs (.pt2).

Every registered model exports, SegNet's unpooling included: under graph capture the index
pooling takes its graph path (MaxPool, Equal, Where, Reshape, Slice -- see
:mod:`segnet.models.layers`), so no ``MaxUnpool`` and no int64 index tensor appears in the graph
(``max_unpool2d`` itself does not export from PyTorch, and ONNX's MaxUnpool indexes the whole
tensor, not each channel plane).

BatchNorm is folded into the convolutions first. Input ``images`` (N, C, H, W) float32, output
``logits`` (N, K, H, W). By default the graph is fixed to the example's shape, which may be any
size (CamVid's 360x480 included). With ``dynamic=True`` N, H and W are free, H and W being
multiples of 32: a free H that is not a multiple of 32 makes ``torch.export`` specialise on the
parities of the ceil-mode pools (tried with torch 2.13: ``32 * k + r`` dims fail likewise).
Files are written atomically.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ArgumentError, SegNetError
from ..files import atomic_write
from ..metrics import compare_logits
from .optimize import fold_batchnorm

EXPORT_FORMATS = ("onnx", "torch-export")
SIZE_MULTIPLE = 32  # dynamic H, W: multiples of 2**5 keep every ceil-mode pool exact
OPSET = 18


def prepare(model: nn.Module) -> nn.Module:
    """An eval-mode fp32 copy with BatchNorm folded: what both formats capture."""
    return fold_batchnorm(copy.deepcopy(model).float().eval()).requires_grad_(False)


def dynamic_shapes(dynamic: bool) -> dict[str, Any] | None:
    if not dynamic:
        return None
    dim = torch.export.Dim
    return {"images": {0: dim("batch", min=1, max=1024),
                       2: SIZE_MULTIPLE * dim("height_blocks", min=1, max=256),
                       3: SIZE_MULTIPLE * dim("width_blocks", min=1, max=256)}}  # fmt: skip


def example_images(size: tuple[int, int], in_channels: int, *, dynamic: bool) -> torch.Tensor:
    if dynamic and (size[0] % SIZE_MULTIPLE or size[1] % SIZE_MULTIPLE):
        raise ArgumentError(
            "size",
            f"{size[0]}x{size[1]}: with `dynamic` H and W must be multiples of {SIZE_MULTIPLE}, "
            f"e.g. {_round(size[0])}x{_round(size[1])}; or drop `dynamic` for a fixed size",
        )
    if dynamic:  # trace with >= 2 blocks of 32 per side: a size-1 symbol would be specialised
        size = (max(size[0], 2 * SIZE_MULTIPLE), max(size[1], 2 * SIZE_MULTIPLE))
    return torch.randn(
        2 if dynamic else 1, in_channels, *size, generator=torch.Generator().manual_seed(0)
    )


def _round(n: int) -> int:
    return max(SIZE_MULTIPLE, round(n / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    format: str,
    size: tuple[int, int] = (360, 480),
    in_channels: int = 3,
    dynamic: bool = False,
) -> Path:
    """Exports ``model`` to ``path`` (``format``: "onnx" or "torch-export"); returns the path."""
    if format not in EXPORT_FORMATS:
        raise ArgumentError("format", f"must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    path = Path(path)
    net = prepare(model)
    images = example_images(size, in_channels, dynamic=dynamic)
    try:
        if format == "torch-export":
            program = torch.export.export(net, (images,), dynamic_shapes=dynamic_shapes(dynamic))
            atomic_write(path, lambda f: torch.export.save(program, f))
            return path
        return _export_onnx(net, images, path, dynamic=dynamic)
    except SegNetError:
        raise
    except Exception as error:  # exporter failures come in many types; nothing was written (atomic)
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise ArgumentError(
            "format", f"{format}: export failed ({type(error).__name__}: {first})"
        ) from None


def _export_onnx(net: nn.Module, images: torch.Tensor, path: Path, *, dynamic: bool) -> Path:
    try:
        import onnx
    except ImportError:
        raise ArgumentError(
            "format", "onnx needs the onnx package: pip install 'segnet[onnx]'"
        ) from None
    program = torch.onnx.export(
        net, (images,), dynamo=True, opset_version=OPSET, input_names=["images"],
        output_names=["logits"], dynamic_shapes=dynamic_shapes(dynamic), verbose=False,
    )  # fmt: skip
    program.optimize()
    import onnx

    proto = program.model_proto
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))
    onnx.checker.check_model(str(path))
    return path


def load_exported(path: str | Path) -> torch.export.ExportedProgram:
    return torch.export.load(str(path))


def run_onnx(path: str | Path, images: torch.Tensor) -> torch.Tensor:
    """Logits of an exported ONNX file in onnxruntime (CPU) for ``images`` (N, C, H, W)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SegNetError(
            "checking an ONNX file needs onnxruntime: pip install 'segnet[onnx]'"
        ) from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    return torch.from_numpy(logits)


def check_export(
    path: str | Path, model: nn.Module, images: torch.Tensor, *, format: str
) -> dict[str, float]:
    """Runs the exported file (onnxruntime, or the ``torch.export`` program) and the fp32 model
    on ``images``: ``{"agreement": fraction of pixels with the same argmax, "max_abs_diff"}``."""
    with torch.no_grad():
        expected = model.eval().float()(images)
        got = run_onnx(path, images) if format == "onnx" else load_exported(path).module()(images)
    return compare_logits(got, expected)
