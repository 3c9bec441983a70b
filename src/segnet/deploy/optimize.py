"""Inference-ready models: ``optimize_for_inference(model)`` -> an eval-mode module mapping images
(N, C, H, W) to fp32 logits (N, K, H, W).

What it does, each step measured on CPU (see ``benchmarks/README.md``):

* folds every BatchNorm into the convolution before it (``W' = W * g / s``, ``b' = (b - m) * g / s
  + beta`` with ``s = sqrt(var + eps)``): one pass over each feature map less, and no BN buffers;
* runs in channels_last (NHWC), the layout oneDNN convolutions and the index pooling prefer;
* picks the precision: ``"auto"`` is fp16 on CUDA and fp32 on CPU; ``"bf16"`` is asked for,
  not assumed (slower without AMX, faster with it but moving some labels: ``deploy/runtime.py``).
  Reduced precision casts the weights once; layers that overflow in fp16 (LRN on 0-255 input)
  stay fp32;
* optionally ``compile=True``: ``torch.compile`` (fuses the pooling/unpooling elementwise ops;
  costs a compilation per input size).

Other backends (ONNX Runtime, OpenVINO) and int8 live in :mod:`.backends` and :mod:`.quantize`;
``optimize_for_inference`` is the one entry point for all of them.

The argmax of the optimized model agrees with the fp32 eager model on >= 99.5% of pixels
(tested); in fp32 the only difference is the rounding of the folded weights.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .runtime import DEFAULT_INT8_PLAN, check_int8_plan, resolve_precision

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_KEEP_FP32 = (nn.LocalResponseNorm,)  # sums of squares of 0-255 inputs overflow fp16


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Folds, in place, each eval-mode BatchNorm2d that directly follows a Conv2d inside an
    ``nn.Sequential`` (our ConvBNReLU blocks) into that conv; the BN becomes ``nn.Identity``.

    BNs elsewhere (e.g. attributes of a residual block) are left as they are. Returns ``model``.
    """
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for first, second in itertools.pairwise(names):
            conv, bn = parent._modules[first], parent._modules[second]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.running_var is not None
            ):
                _fold_into(conv, bn)
                parent._modules[second] = nn.Identity()
    return model


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = torch.rsqrt(bn.running_var + bn.eps)  # (C_out,)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale
    if bn.bias is not None:
        new_bias = new_bias + bn.bias
    conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(new_bias, requires_grad=False)


class _Float32(nn.Module):
    """Runs a wrapped layer in fp32 inside a reduced-precision model."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer.float()

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x.float()).to(x.dtype)


def _keep_fp32(model: nn.Module) -> None:
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, _KEEP_FP32):
                setattr(parent, name, _Float32(child))


class OptimizedModel(nn.Module):
    """What :func:`optimize_for_inference` returns, whatever the backend: ``images``
    (N, C, H, W) float -> fp32 ``logits`` (N, K, H, W) as a torch tensor, already in its own
    precision (callers put no autocast around it). ``backend``, ``precision``, ``device`` say
    where and how it runs."""

    backend: str
    precision: str
    device: torch.device
    int8_plan: str | None = None  # int8 engines: which convolutions stay fp32 (quantize.py)

    @property
    def runtime(self) -> str:
        """How it runs, in words: "openvino int8 (fast plan)", "torch fp32"."""
        plan = f" ({self.int8_plan} plan)" if self.int8_plan else ""
        return f"{self.backend} {self.precision}{plan}"

    def replica(self) -> OptimizedModel:
        """An independent copy for another thread (serve's workers), without optimizing,
        calibrating or measuring again."""
        return copy.deepcopy(self)


class InferenceModel(OptimizedModel):
    """The torch backend: ``images`` (N, C, H, W), any float dtype/layout -> fp32 ``logits``.

    Holds the optimized network as ``.model``; dropout layers stay reachable through
    ``.modules()``, so Monte-Carlo dropout (``set_mc_dropout``) still works.
    """

    backend = "torch"

    def __init__(
        self, model: nn.Module, *, device: torch.device, precision: str, compiled: bool
    ) -> None:
        super().__init__()
        self.model = model
        self.device, self.precision, self.compiled = device, precision, compiled
        self.dtype = DTYPES[precision]
        self._forward = torch.compile(model) if compiled else model

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        images = images.to(self.device, self.dtype, memory_format=torch.channels_last)
        return self._forward(images).float()  # (N, K, H, W)


def optimize_for_inference(
    model: nn.Module,
    *,
    precision: str = "auto",
    backend: str = "torch",
    calibration: Iterable[Tensor] | None = None,
    device: str | torch.device | None = None,
    compile: bool = False,
    int8_plan: str = DEFAULT_INT8_PLAN,
) -> OptimizedModel:
    """A copy of ``model`` made for fast inference: a callable mapping normalized images
    (N, C, H, W) to fp32 logits (N, K, H, W), a torch tensor, whatever runs it.

    ``backend``: ``"torch"`` (BN folded, channels_last, precision), ``"onnxruntime"`` or
    ``"openvino"`` (CPU engines, extras ``segnet[onnx]`` / ``segnet[openvino]``; any N, H, W),
    or ``"auto"``: the fastest installed one for this model on this machine, measured once and
    cached, whose labels agree with eager fp32 (:mod:`.choose`).
    ``precision``: ``"auto"`` (fp32 on CPU, fp16 on CUDA; with ``backend="auto"``, bf16 too on
    CPUs with AMX and, with ``calibration``, int8, where faster and agreeing), ``"fp32"``,
    ``"bf16"``, ``"fp16"`` (CUDA) or ``"int8"`` (CPU engines; needs ``calibration``: an iterable of
    (N, C, H, W) normalized image tensors, e.g. 32 training images).
    ``int8_plan``: which convolutions int8 keeps fp32: ``"fast"`` (the first two and the
    classifier) or ``"accurate"`` (every convolution reading a map at full or half resolution:
    the first two pooling and the last two unpooling stages; more of the fp32 labels kept,
    slower; :mod:`.quantize`).
    ``device`` defaults to the model's. ``compile=True`` (torch backend) wraps the network in
    ``torch.compile`` (measure first: it pays off only for many images of one size). The input
    model is left untouched.
    """
    if isinstance(model, OptimizedModel):
        return model
    check_int8_plan(int8_plan)  # on every backend: a misspelt plan is never silently ignored
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    resolved = resolve_precision(precision, device)
    if backend != "torch" or resolved == "int8":
        from .backends import build_backend  # engines import this module

        return build_backend(
            model, backend=backend, precision=precision, calibration=calibration, device=device,
            int8_plan=int8_plan,
        )  # fmt: skip
    return optimize_torch(model, precision=resolved, device=device, compile=compile)


def optimize_torch(
    model: nn.Module, *, precision: str, device: torch.device, compile: bool = False
) -> InferenceModel:
    """The torch backend for a resolved ``precision`` ("fp32", "bf16", "fp16")."""
    optimized = fold_batchnorm(copy.deepcopy(model).eval())
    optimized.requires_grad_(False)
    if precision != "fp32":
        _keep_fp32(optimized)
        optimized.to(DTYPES[precision])
        for module in optimized.modules():
            if isinstance(module, _Float32):
                module.layer.float()
    optimized.to(device=device, memory_format=torch.channels_last)
    return InferenceModel(optimized, device=device, precision=precision, compiled=compile).eval()
