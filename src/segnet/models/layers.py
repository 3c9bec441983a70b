"""Building blocks shared by every model: conv-norm-act and index pooling/unpooling.

Pooling contract (SegNet paper, Sec. 3): a 2x2/2 max-pool remembers, for every output cell,
*which* of the 4 inputs of its window was the maximum. We store that as one ``uint8`` code per
cell, ``code = 2 * dy + dx`` with ``dy, dx`` in {0, 1} -- 8x smaller than PyTorch's int64 flat
indices (the paper notes 2 bits suffice). Windows are scanned in row-major order and the *first*
maximum wins, exactly as ``F.max_pool2d`` and Caffe do, so unpooling matches ``F.max_unpool2d``
bit for bit, ties included.

Pooling rounds up (Caffe's ceil mode): an odd side is padded (as if with -inf), so 45x60 -> 23x30,
and unpooling crops back to the exact pre-pool size (23x30 -> 45x60). Any input size works.

Unpooling is built from standard ops (compare, where, reshape, slice), so it exports to ONNX and
runs under ``torch.use_deterministic_algorithms``. Pooling has two exact paths: in eager mode the
native channels_last ``max_pool2d`` kernel (its int64 indices turned into codes at once, fastest
on CPU); under graph capture (torch.export, ONNX, torch.compile) a branch-free tournament of
max/greater/where that keeps H and W symbolic. In training, custom autograd functions keep only
the uint8 codes for the backward pass -- never int64 indices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

# Window position of each code in the (N, h, 2, w, 2, C) view: code 2*dy+dx sits at (dy, dx).
_WINDOW_CODES = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 1, 2, 1)


def _pad_to_even(x: Tensor, fill: float) -> Tensor:
    """Pads the bottom/right of (N, C, H, W) to even H and W (ceil-mode pooling)."""
    pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), value=fill)
    return x


# Two eager layouts, each on the path that was fastest for it (CPU, 2x64x224x288, ms):
# * channels_last: NHWC views (N, h, 2, w, 2, C), channels innermost so every elementwise op
#   vectorises; pooling through the native kernel's transient indices (64 vs 120 for the graph
#   path below).
# * NCHW (training's default on CPU, where conv backward is faster in NCHW): pooling by the
#   graph path's strided maxima (32, vs 57 for max_pool2d alone); unpooling and the backward
#   passes by scatter/gather on plane indices rebuilt from the codes for the op's duration
#   (scatter 16 + index rebuild 8, vs 104 through NHWC copies). Scatter and gather with unique
#   indices are deterministic; F.max_unpool2d is not allowed under deterministic algorithms.


def _windows(x: Tensor, h: int, w: int) -> Tensor:
    """(N, C, 2h, 2w) -> (N, h, 2, w, 2, C) view of each 2x2 window."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], h, 2, w, 2, x.shape[1])


def _tracing() -> bool:
    """True while torch.jit/torch.compile/torch.export/ONNX capture a graph."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def _nchw(x: Tensor) -> bool:
    """Eager tensors not in channels_last take the NCHW paths."""
    return not x.is_contiguous(memory_format=torch.channels_last)


def _pool_forward(x: Tensor) -> tuple[Tensor, Tensor]:
    if _tracing() or _nchw(x):
        return _pool_forward_graph(x)
    return _pool_forward_native(x)


def _pool_forward_native(x: Tensor) -> tuple[Tensor, Tensor]:
    """Eager path: the native channels_last kernel's int64 indices, turned into uint8 codes.

    ``max_pool2d`` on a channels_last tensor is ~10x faster than on NCHW and than the graph
    path below (measured on CPU); its indices are transient, only the uint8 codes survive.
    An NCHW input is pooled through a channels_last copy and gets NCHW outputs back.
    """
    nchw = not x.is_contiguous(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    values, flat = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)  # (N, C, h, w)
    h, w, width = values.shape[-2], values.shape[-1], x.shape[-1]
    rows = torch.arange(h, device=x.device).view(h, 1) * (2 * width)
    window_start = rows + torch.arange(w, device=x.device).view(1, w) * 2  # flat index of (2i, 2j)
    offset = flat.sub_(window_start)  # in {0, 1, W, W + 1}: (dy, dx) = (0,0) (0,1) (1,0) (1,1)
    dy = (offset >= width).to(torch.uint8)
    codes = offset.to(torch.uint8).bitwise_and_(1)  # low bit of the offset (kept mod 256)
    if width % 2:  # W odd: W and W + 1 have the low bits 1 and 0
        codes.bitwise_xor_(dy)
    codes.add_(dy).add_(dy)  # code = 2 * dy + dx
    return (values.contiguous(), codes.contiguous()) if nchw else (values, codes)


def _pool_forward_graph(x: Tensor) -> tuple[Tensor, Tensor]:
    """Graph path (export, compile): Pad, strided Slice, Max, Greater, And/Or -- no MaxPool with
    indices, no branch on the input size, so ONNX/torch.export graphs keep H and W dynamic.

    A tournament per window: the top pair's winner (right only if strictly greater), the bottom
    pair's, then bottom only if strictly greater: the first maximum in row-major order wins.
    Ceil mode pads odd sides by repeating the last row/column: a repeat ties with the value it
    copies and sits after it, so it never wins -- the same values and codes as padding with -inf,
    and no infinity in the graph (OpenVINO's NNCF quantizer refuses a Pad with -inf).
    The four corners are taken with stride-2 slices, not a 6-D reshape and integer indexing:
    the reshape's Gathers made SegNet's int8 OpenVINO graph ~20% slower (benchmarks/README.md);
    eager NCHW speed is the same either way.
    """
    height, width = x.shape[-2:]
    h, w = (height + 1) // 2, (width + 1) // 2
    x = F.pad(x, (0, 2 * w - width, 0, 2 * h - height), mode="replicate")  # ceil mode
    a, b = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]  # (N, C, h, w) each: window corners
    c_, d = x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]
    top, bottom = torch.maximum(a, b), torch.maximum(c_, d)
    down = bottom > top
    right = (down & (d > c_)) | (~down & (b > a))  # And/Or, not a bool Where (onnxruntime lacks it)
    codes = down.to(torch.uint8) * 2 + right.to(torch.uint8)
    return torch.maximum(top, bottom), codes


def _unpool_forward(values: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
    if not _tracing() and _nchw(values):
        return _unpool_scatter(values, indices, size)
    n, c, h, w = values.shape
    v = values.permute(0, 2, 3, 1).reshape(n, h, 1, w, 1, c)
    codes = indices.permute(0, 2, 3, 1).reshape(n, h, 1, w, 1, c)
    out = torch.where(codes == _WINDOW_CODES.to(codes.device), v, v.new_zeros(()))
    out = out.reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)  # (N, C, 2h, 2w), channels_last
    out = out[:, :, : size[0], : size[1]]
    return out if values.is_contiguous(memory_format=torch.channels_last) else out.contiguous()


def _unpool_scatter(values: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
    """NCHW unpooling: each value scattered to its plane index, (N, C, *size)."""
    n, c = values.shape[:2]
    flat = indices_to_flat(indices, size).reshape(n, c, -1)  # int64, for this op only
    out = values.new_zeros(n, c, size[0] * size[1])
    return out.scatter_(2, flat, values.reshape(n, c, -1)).view(n, c, size[0], size[1])


def _unpool_backward(grad_out: Tensor, indices: Tensor) -> Tensor:
    """Gathers, for each pooled cell, the gradient at the position its value was sent to."""
    n, c, h, w = indices.shape
    if _nchw(grad_out):
        flat = indices_to_flat(indices, grad_out.shape[-2:]).reshape(n, c, -1)
        return grad_out.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)
    grad = _windows(_pad_to_even(grad_out, 0.0), h, w)  # (N, h, 2, w, 2, C)
    codes = indices.permute(0, 2, 3, 1)  # (N, h, w, C)
    # Three selects at pooled size (5x faster than a masked sum over full-size windows).
    picked = torch.where(codes == 2, grad[:, :, 1, :, 0], grad[:, :, 1, :, 1])
    picked = torch.where(codes == 1, grad[:, :, 0, :, 1], picked)
    picked = torch.where(codes == 0, grad[:, :, 0, :, 0], picked).permute(0, 3, 1, 2)
    return (
        picked if grad_out.is_contiguous(memory_format=torch.channels_last) else picked.contiguous()
    )


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> tuple[Tensor, Tensor]:
        values, indices = _pool_forward(x)
        ctx.save_for_backward(indices)  # uint8 only: the point of the compact format
        ctx.size = tuple(x.shape[-2:])
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx: FunctionCtx, grad_values: Tensor, _grad_indices: Tensor) -> Tensor:
        (indices,) = ctx.saved_tensors
        return _unpool_forward(grad_values, indices, ctx.size)


class _MaxUnpool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, values: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(indices)
        return _unpool_forward(values, indices, size)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (indices,) = ctx.saved_tensors
        return _unpool_backward(grad_out, indices), None, None


def max_pool_2x2(x: Tensor) -> tuple[Tensor, Tensor]:
    """(N, C, H, W) -> values (N, C, ceil(H/2), ceil(W/2)) and uint8 window codes, same shape."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaxPool2x2.apply(x)
    return _pool_forward(x)


def max_unpool_2x2(values: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
    """Sends each value back to its window's max position, zeros elsewhere: (N, C, *size)."""
    if values.shape != indices.shape:
        raise ValueError(f"values {tuple(values.shape)} and indices {tuple(indices.shape)} differ")
    size = (size[0], size[1])  # no int(): a symbolic size (dynamic export) must stay symbolic
    if torch.is_grad_enabled() and values.requires_grad:
        return _MaxUnpool2x2.apply(values, indices, size)
    return _unpool_forward(values, indices, size)


def indices_to_flat(indices: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 window codes -> PyTorch's int64 flat plane indices (for ``F.max_unpool2d``).

    A code's offset from its window's top-left pixel comes from a 4-entry table (0, 1, W, W+1):
    one lookup and one broadcast add, ~3x faster than the arithmetic on every element.
    """
    h, w = indices.shape[-2:]
    width = int(size[1])
    device = indices.device
    offsets = torch.tensor([0, 1, width, width + 1], device=device)  # code = 2 * dy + dx
    rows = torch.arange(h, device=device).view(h, 1) * (2 * width)
    window_start = rows + torch.arange(w, device=device).view(1, w) * 2  # flat index of (2i, 2j)
    return torch.take(offsets, indices.long()).add_(window_start)


class MaxPool2x2(nn.Module):
    """2x2/2 ceil-mode max-pool returning ``(values, indices, size)`` for a later unpool."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        values, indices = max_pool_2x2(x)
        return values, indices, (x.shape[-2], x.shape[-1])


class MaxUnpool2x2(nn.Module):
    """Inverse of :class:`MaxPool2x2`: sparse (N, C, *size) map with values at their maxima."""

    def forward(self, values: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
        return max_unpool_2x2(values, indices, size)


class ConvBNReLU(nn.Sequential):
    """Conv (with bias, as the Caffe models) -> BatchNorm -> optional ReLU, 'same' padding."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        relu: bool = True,
        dilation: int = 1,
    ) -> None:
        padding = dilation * (kernel_size // 2)  # 'same' for odd kernels at any dilation
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def _reachable_taps(
    weight: Tensor, padding: tuple[int, int], size: tuple[int, int]
) -> tuple[Tensor, tuple[int, int]]:
    """Crops a (.., .., 2p+1, 2q+1) 'same' kernel to the taps that can meet real pixels.

    On an h x w map, stride 1, a tap more than h-1 rows (w-1 columns) from the centre only ever
    multiplies zero padding: dropping it changes no output and no gradient (its gradient is 0).
    """
    ph, pw = min(padding[0], size[0] - 1), min(padding[1], size[1] - 1)
    rows = slice(padding[0] - ph, padding[0] + ph + 1)
    cols = slice(padding[1] - pw, padding[1] + pw + 1)
    return weight[:, :, rows, cols], (ph, pw)


class SameConv2d(nn.Conv2d):
    """Stride-1 'same' conv (odd kernel k, padding k // 2) that skips taps reaching only padding.

    Same parameters, outputs and gradients as ``nn.Conv2d``. Why: FCN's and DeconvNet's 7x7 fc6
    sees a 1x1 or 2x2 pool5 on small inputs, where oneDNN's weight gradient for the full kernel
    takes ~15 s on one CPU core; the cropped 3x3 takes ~1 s. Maps >= k // 2 + 1 run unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:  # device: lets nn.utils.skip_init build it uninitialised
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            device=device,
            dtype=dtype,
        )

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2], x.shape[-1])
        if size[0] > self.padding[0] and size[1] > self.padding[1]:
            return super().forward(x)
        weight, padding = _reachable_taps(self.weight, self.padding, size)
        return F.conv2d(x, weight, self.bias, padding=padding)


class SameConvTranspose2d(nn.ConvTranspose2d):
    """Stride-1 'same' transposed conv; as :class:`SameConv2d`, skips taps reaching only padding."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            device=device,
            dtype=dtype,
        )

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        size = (x.shape[-2], x.shape[-1])
        if size[0] > self.padding[0] and size[1] > self.padding[1]:
            return super().forward(x, output_size)
        weight, padding = _reachable_taps(self.weight, self.padding, size)
        return F.conv_transpose2d(x, weight, self.bias, padding=padding)


def bilinear_kernel(channels: int, *, factor: int, kernel_size: int | None = None) -> Tensor:
    """(C, C, k, k) transposed-conv weight performing per-channel bilinear x``factor`` upsampling.

    The 2f-wide tent of bilinear interpolation (x2: 0.25, 0.75, 0.75, 0.25 per axis) sits at the
    centre of the k x k kernel (k = 2f by default; FCN-Basic's x2 deconvolutions are 8x8, the
    taps around the tent start at zero and are learned), on the channel diagonal.
    """
    size = 2 * factor
    kernel_size = kernel_size or size
    if kernel_size < size or (kernel_size - size) % 2:
        raise ValueError(f"kernel_size must be 2 * factor + an even number, got {kernel_size}")
    center = factor - 0.5  # even tent: the peak sits between the two middle taps
    taps = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor  # (2f,)
    tent = torch.zeros(kernel_size)
    start = (kernel_size - size) // 2
    tent[start : start + size] = taps
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = torch.outer(tent, tent)
    return weight


class BilinearDeconv(nn.ConvTranspose2d):
    """Learned x``factor`` upsampling (C -> C, stride f, no bias, as FCN's Caffe Deconvolution
    layers), initialised to bilinear interpolation: (N, C, h, w) -> (N, C, f*h, f*w); the caller
    crops to the exact size it needs. Padding (k - f) / 2 makes the output exactly f times larger.
    """

    _keep_init = True  # init_msra leaves the bilinear start alone

    def __init__(self, channels: int, *, factor: int, kernel_size: int | None = None) -> None:
        kernel_size = kernel_size or 2 * factor
        padding = (kernel_size - factor) // 2
        super().__init__(
            channels, channels, kernel_size, stride=factor, padding=padding, bias=False
        )
        self.factor = factor
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(channels, factor=factor, kernel_size=kernel_size))


def init_msra(module: nn.Module) -> None:
    """He (MSRA) initialisation, as the authors' solver files: convs N(0, 2/fan_in), BN 1/0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and not getattr(m, "_keep_init", False):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def stack_blocks(
    in_channels: int, blocks: Sequence[Sequence[int]], make_layer: Callable[[int, int], nn.Module]
) -> tuple[nn.ModuleList, int]:
    """Architecture as data: one ``nn.Sequential`` per block of widths, each layer built by
    ``make_layer(in_channels, out_channels)``; returns the blocks and the last width."""
    modules = nn.ModuleList()
    channels = in_channels
    for widths in blocks:
        layers = []
        for width in widths:
            layers.append(make_layer(channels, width))
            channels = width
        modules.append(nn.Sequential(*layers))
    return modules, channels
