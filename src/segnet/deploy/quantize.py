"""int8 static quantization, calibrated on images, of the fp32 ONNX graph
(:func:`.export.export_onnx_any_size`): for ONNX Runtime a QDQ ONNX graph
(QuantizeLinear/DequantizeLinear pairs around int8 convolutions, :func:`quantize_onnx`), for
OpenVINO a model with FakeQuantize ops made by NNCF (:func:`quantize_openvino`).

What runs in int8 and what stays float, and why (agreement with eager fp32 labels on CamVid val,
shipped SegNet-Basic weights; ``benchmarks/README.md``):

* convolutions only: weights symmetric int8 per output channel, inputs uint8 per tensor;
* the index pooling and unpooling stay float and exact. Quantizing the values a pool compares
  makes ties and moves the switches: NNCF's default placement (FakeQuantize before the pool's
  Max/Greater) left 10% of pixels as fp32 labels them (an earlier SegNet-Basic). OpenVINO runs int8 convolutions with fp32
  outputs, so its pools see float values; ONNX Runtime's int8 convolution (QLinearConv) must
  quantize its output, so there the pools compare 8-bit values (ReLU folded into the range:
  0.2% fewer pixels agree than with OpenVINO);
* which convolutions stay fp32 is the *plan* (:data:`.runtime.INT8_PLANS`, :func:`float_plan`):
  ``"fast"`` (the default) keeps the first two and the classifier. The first reads the image
  itself (3 channels, a small share of the work); SegNet-Basic's second reads the first pooled
  map, the most sensitive activation to quantize (0.26% of pixels off on its own, the next
  0.20%); the classifier's outputs are the logits the labels come from. OpenVINO, 20 CamVid
  val images, shipped SegNet-Basic: first and last float 99.60% of pixels as fp32, first two
  and last 99.70% (with the overflow fix off, below), at 0.88x the speed on SegNet (VGG16).
  ``"accurate"`` keeps every convolution that reads a map at full or half the image's
  resolution (:func:`fine_convs`): the encoder's first two pooling stages, whose outputs the
  first two pools compare to set the finest switches, and the decoder's last two unpooling
  stages, which draw the boundaries at those resolutions -- SegNet's first four and last four,
  SegNet-Basic's first two and last three. On a SegNet trained on CamVid (Zen 4, 24.7 val mIoU;
  40 val images) the fast plan labelled 98.48% of pixels as fp32; conv 3 (reading the first
  pooled map) or 4 alone fp32 gave 98.76% / 98.66%, both 99.47%, and with the last two 99.60%.
  On another (AMX Xeon, 28.8 val mIoU) that first-four-and-last-two plan gave 99.43% and the
  last four instead 99.58%, for 17-30% more time there (benchmarks/README.md). SegNet-Basic's fast
  plan already keeps its first two stages (one convolution each): 99.621% of all 101 val images
  against 99.625% with its full-resolution 7x7 decoder convolution added, for about twice the
  time -- fast is its plan;
* the convolutions are told apart by position in execution order, the same in the torch
  model, the exported graph and OpenVINO's model (every encoder runs its first stages in a
  line);
* each activation range is the *mean* over the calibration batches of each batch's min and
  max: one outlier image no longer stretches the range for all (ONNX Runtime's MinMax takes the
  extremes over all images).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ArgumentError, SegNetError
from ..files import atomic_path
from .export import prepare
from .runtime import check_int8_plan, cpu_has_vnni

CALIBRATION_IMAGES = 32  # default number of calibration images (CLI)


class FloatConvs(NamedTuple):
    """How many convolutions, counted in execution order, stay fp32 at each end."""

    first: int
    last: int


FAST = FloatConvs(first=2, last=1)  # the image's and the next convolution, and the classifier


def calibration_arrays(calibration: Iterable[Tensor] | None) -> list[np.ndarray]:
    """The calibration images as float32 (N, C, H, W) arrays; a one-line error without any."""
    if calibration is None:
        raise ArgumentError(
            "calibration",
            "int8 needs calibration images: an iterable of (N, 3, H, W) normalized image tensors, "
            f"e.g. {CALIBRATION_IMAGES} training images",
        )
    arrays = []
    for item in calibration:
        tensor = torch.as_tensor(item).detach()
        tensor = tensor.unsqueeze(0) if tensor.ndim == 3 else tensor
        if tensor.ndim != 4 or not tensor.is_floating_point():
            raise ArgumentError(
                "calibration",
                f"expects (N, C, H, W) float image tensors, got {tuple(tensor.shape)} {tensor.dtype}",
            )
        arrays.append(tensor.to("cpu", torch.float32).contiguous().numpy())
    if not arrays:
        raise ArgumentError("calibration", "holds no images; int8 needs some to calibrate on")
    return arrays


@torch.no_grad()
def activation_ranges(
    model: nn.Module, arrays: Sequence[np.ndarray]
) -> dict[str, tuple[float, float, float, float]]:
    """{conv module name: (input min, input max, output min, output max)} over the calibration
    batches, each the mean of the per-batch values (module docstring)."""
    net = prepare(model)
    seen: dict[str, list[tuple[float, ...]]] = {}

    def record(name: str) -> object:
        def hook(_module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            x = inputs[0]
            seen.setdefault(name, []).append((x.min().item(), x.max().item(),
                                              output.min().item(), output.max().item()))  # fmt: skip

        return hook

    handles = [
        module.register_forward_hook(record(name))
        for name, module in net.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    try:
        for array in arrays:
            net(torch.from_numpy(array))
    finally:
        for handle in handles:
            handle.remove()
    return {name: tuple(float(np.mean(column)) for column in zip(*v)) for name, v in seen.items()}


def float_plan(model: nn.Module, arrays: Sequence[np.ndarray], plan: str) -> FloatConvs:
    """The convolutions ``plan`` keeps fp32 for ``model`` (module docstring); "accurate"
    measures the model's resolutions with one forward of the first calibration batch."""
    if check_int8_plan(plan) == "fast":
        return FAST
    fine = fine_convs(model, arrays[0])
    return FloatConvs(first=max(FAST.first, fine.first), last=max(FAST.last, fine.last))


@torch.no_grad()
def fine_convs(model: nn.Module, images: np.ndarray) -> FloatConvs:
    """How many convolutions at each end, in execution order, read a map at full or half the
    resolution of ``images`` (N, C, H, W): an encoder's first two pooling stages and a
    decoder's last two unpooling stages (the classifier included)."""
    net, heights = prepare(model), []
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(lambda _m, inputs: heights.append(inputs[0].shape[-2]))
    net(torch.from_numpy(images[:1]))
    height = images.shape[-2]
    # Pooled once: H/2 (ceil); pooled twice: H/4 or a little more -- a third tells them apart.
    fine = [3 * h > height for h in heights]
    if all(fine):  # never pooled: every convolution is "fine"
        return FloatConvs(first=len(fine), last=0)
    return FloatConvs(first=fine.index(False), last=fine[::-1].index(False))


def float_convs(names: Sequence[str], kept: FloatConvs) -> list[str]:
    """The convolutions that stay fp32, of all in execution order: ``kept.first`` from the
    start and ``kept.last`` from the end."""
    rest = list(names[kept.first :])
    return list(names[: kept.first]) + (rest[-kept.last :] if kept.last else [])


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over a list of arrays."""

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        self._items = iter(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        array = next(self._items, None)
        return None if array is None else {"images": array}


def _range(low: float, high: float) -> list[dict[str, np.float32]]:
    return [{"rmin": np.float32(min(low, 0.0)), "rmax": np.float32(max(high, 0.0))}]


def quantize_plan(
    graph: object, ranges: dict[str, tuple[float, float, float, float]], kept: FloatConvs = FAST
) -> tuple[list[str], dict]:
    """(Conv nodes kept fp32, per-tensor range overrides) for an exported graph: see
    :func:`float_convs`; each other Conv's input, and its output (or the Relu's after it), gets
    the range measured for the module whose weight it reads (the exporter names weights after
    their module)."""
    convs = [node for node in graph.node if node.op_type == "Conv"]
    relu_after = {node.input[0]: node.output[0] for node in graph.node if node.op_type == "Relu"}
    keep = float_convs([node.name for node in convs], kept)
    overrides = {}
    for node in convs:
        if node.name in keep:
            continue
        module = node.input[1].removesuffix(".weight")
        if module in ranges:
            in_low, in_high, out_low, out_high = ranges[module]
            overrides[node.input[0]] = _range(in_low, in_high)
            overrides[node.output[0]] = _range(out_low, out_high)
            if node.output[0] in relu_after:
                overrides[relu_after[node.output[0]]] = _range(0.0, out_high)
    return keep, overrides


def quantize_onnx(
    model: nn.Module, source: Path, target: Path, arrays: Sequence[np.ndarray],
    kept: FloatConvs = FAST,
) -> Path:  # fmt: skip
    """Writes the int8 QDQ version of ``source`` (the fp32 export of ``model``) to ``target``,
    ``kept`` convolutions fp32 (:func:`float_plan`)."""
    try:
        import onnx
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    except ImportError:
        raise SegNetError(
            "int8 ONNX files are made with onnxruntime's quantizer: pip install 'segnet[onnx]'"
        ) from None

    ranges = activation_ranges(model, arrays)
    keep, overrides = quantize_plan(onnx.load(str(source)).graph, ranges, kept)
    with _quiet(), atomic_path(target) as tmp:
        quantize_static(
            str(source), str(tmp), _Batches(arrays[:1]), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "Relu"], per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=keep,
            extra_options={"TensorQuantOverrides": overrides},
        )  # fmt: skip
    return target


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice ("consider pre-processing") through the root
    logger; not for our users."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# Ops of the index pooling/unpooling subgraph in OpenVINO's opset: no FakeQuantize at their
# inputs, so the switches are computed on float values (module docstring).
_FLOAT_OP_TYPES = ["Maximum", "Greater", "Equal", "Select", "LogicalAnd", "LogicalOr", "LogicalNot"]


def quantize_openvino(
    model: object, arrays: Sequence[np.ndarray], kept: FloatConvs = FAST
) -> object:
    """The int8 OpenVINO model of ``model`` (the fp32 ONNX graph read by OpenVINO), by NNCF:
    FakeQuantize at the inputs of the convolutions (OpenVINO runs them int8 in, fp32 out, so
    the pools compare float values); the ``kept`` convolutions (:func:`float_plan`) and the
    pooling subgraph left float."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    convs = [op.get_friendly_name() for op in model.get_ordered_ops()
             if op.get_type_name() == "Convolution"]  # fmt: skip
    ignored = nncf.IgnoredScope(
        names=float_convs(convs, kept), types=_FLOAT_OP_TYPES, validate=False
    )
    nncf.set_log_level(logging.ERROR)  # its INFO lines list every op it leaves alone
    # NNCF's overflow fix (7-bit weights in the first quantized layer) guards the 16-bit
    # saturation of u8 x s8 products on CPUs without VNNI; with VNNI it only costs accuracy.
    overflow = OverflowFix.DISABLE if cpu_has_vnni() else OverflowFix.FIRST_LAYER
    return nncf.quantize(
        model, nncf.Dataset(list(arrays)), subset_size=len(arrays), ignored_scope=ignored,
        preset=nncf.QuantizationPreset.MIXED,  # asymmetric activations: decoders without ReLU
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=overflow),
    )  # fmt: skip
