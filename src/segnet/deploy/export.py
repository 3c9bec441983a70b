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
import json
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ArgumentError, SegNetError
from ..files import atomic_write
from ..metrics import compare_logits
from .optimize import fold_batchnorm
from .runtime import DEFAULT_INT8_PLAN

EXPORT_FORMATS = ("onnx", "torch-export")
EXPORT_PRECISIONS = ("fp32", "int8")
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


GRAPH_SIZE = (360, 480)  # (H, W) a fixed-size graph is built for unless told: a CamVid frame


def _round(n: int) -> int:
    return max(SIZE_MULTIPLE, round(n / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    format: str,
    size: tuple[int, int] = GRAPH_SIZE,
    in_channels: int = 3,
    dynamic: bool = False,
    precision: str = "fp32",
    calibration: Iterable[torch.Tensor] | None = None,
    int8_plan: str = DEFAULT_INT8_PLAN,
) -> Path:
    """Exports ``model`` to ``path`` (``format``: "onnx" or "torch-export"); returns the path.

    ``precision="int8"`` (ONNX only) writes a statically quantized QDQ graph calibrated on
    ``calibration`` images (:mod:`.quantize`; ``int8_plan``: which convolutions stay fp32), free
    in N, H and W whatever ``dynamic`` says.
    """
    if format not in EXPORT_FORMATS:
        raise ArgumentError("format", f"must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    if precision not in EXPORT_PRECISIONS:
        raise ArgumentError(
            "precision", f"must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r}"
        )
    path = Path(path)
    if precision == "int8":
        return _export_int8(
            model, path, format=format, in_channels=in_channels, calibration=calibration,
            int8_plan=int8_plan,
        )  # fmt: skip
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


def _export_int8(
    model: nn.Module, path: Path, *, format: str, in_channels: int,
    calibration: Iterable[torch.Tensor] | None, int8_plan: str,
) -> Path:  # fmt: skip
    from .quantize import calibration_arrays, float_plan, quantize_onnx  # it imports this module

    if format != "onnx":
        raise ArgumentError("precision", f"int8 exports to onnx only, not {format}")
    arrays = calibration_arrays(calibration)
    with tempfile.TemporaryDirectory(prefix="segnet-export-") as folder:
        source = export_onnx_any_size(model, Path(folder) / "fp32.onnx", in_channels=in_channels)
        kept = float_plan(model, arrays, int8_plan)
        return quantize_onnx(model, source, path, arrays, kept)


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


def export_onnx_any_size(model: nn.Module, path: str | Path, *, in_channels: int = 3) -> Path:
    """An fp32 ONNX graph free in N, H and W -- any sizes, odd ones included -- for the engine
    backends and int8 files (:mod:`.backends`, :mod:`.quantize`). Input ``images``, output
    ``logits``; BN folded; written atomically.

    Captured by PyTorch's TorchScript-based exporter: it records the ceil-mode shape arithmetic
    of the pools as graph ops (Shape, Div, Pad), where ``torch.export`` cannot keep an odd H
    symbolic (module docstring). The trace runs at an odd size so that no pad is elided.
    """
    path = Path(path)
    net = prepare(model)
    example = torch.randn(1, in_channels, 45, 61, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch", 2: "height", 3: "width"}

    def write(f: Any) -> None:
        with warnings.catch_warnings():  # tracer and deprecation notices: not for the user
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net, (example,), f, dynamo=False, opset_version=OPSET, input_names=["images"],
                output_names=["logits"], dynamic_axes={"images": axes, "logits": axes},
            )  # fmt: skip

    try:
        atomic_write(path, write)
    except Exception as error:  # exporter failures come in many types; nothing was written
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise SegNetError(f"ONNX export failed ({type(error).__name__}: {first})") from None
    return path


def write_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Stores ``metadata`` (class names, palette, normalization ...) in the ONNX file's
    ``metadata_props``, each value as JSON, so a deployment needs nothing but the file."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    atomic_write(Path(path), lambda f: f.write(proto.SerializeToString()))


def read_metadata(path: str | Path) -> dict[str, Any]:
    import onnx

    return {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}


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
