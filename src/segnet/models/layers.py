"""Building blocks shared by every model: conv-norm-act and index pooling/unpooling.

Pooling contract (SegNet paper, Sec. 3): a 2x2/2 max-pool remembers, for every output cell,
*which* of the 4 inputs of its window was the maximum. We store that as one ``uint8`` code per
cell, ``code = 2 * dy + dx`` with ``dy, dx`` in {0, 1} -- 8x smaller than PyTorch's int64 flat
indices (the paper notes 2 bits suffice). Windows are scanned in row-major order and the *first*
maximum wins, exactly as ``F.max_pool2d`` and Caffe do, so unpooling matches ``F.max_unpool2d``
bit for bit, ties included.

Pooling rounds up (Caffe's ceil mode): an odd side is padded with -inf, so 45x60 -> 23x30, and
unpooling crops back to the exact pre-pool size (23x30 -> 45x60). Any input size works.

Unpooling is built from standard ops (compare, where, reshape, slice), so it exports to ONNX and
runs under ``torch.use_deterministic_algorithms``. In training, custom autograd functions keep
only the uint8 codes for the backward pass -- never int64 indices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Window position of each code in the (N, h, 2, w, 2, C) view: code 2*dy+dx sits at (dy, dx).
_WINDOW_CODES = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 1, 2, 1)
_WINDOW_ORDER = ((0, 0), (0, 1), (1, 0), (1, 1))  # row-major: the order max_pool2d scans


def _pad_to_even(x: Tensor, fill: float) -> Tensor:
    """Pads the bottom/right of (N, C, H, W) to even H and W (ceil-mode pooling)."""
    pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), value=fill)
    return x


# The helpers below work on NHWC views, (N, h, 2, w, 2, C): channels are the innermost,
# contiguous dim, so every elementwise op vectorises. A size-2 innermost dim (the NCHW view)
# is 2-4x slower. For channels_last tensors the permutes are free.


def _windows(x: Tensor, h: int, w: int) -> Tensor:
    """(N, C, 2h, 2w) -> (N, h, 2, w, 2, C) view of each 2x2 window."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], h, 2, w, 2, x.shape[1])


def _pool_forward(x: Tensor) -> tuple[Tensor, Tensor]:
    values = F.max_pool2d(x, 2, 2, ceil_mode=True)  # (N, C, h, w)
    n, c, h, w = values.shape
    windows = _windows(_pad_to_even(x, float("-inf")), h, w)
    maxima = values.permute(0, 2, 3, 1)  # (N, h, w, C)
    # First maximum in row-major order wins: later positions are written first and then
    # overwritten by earlier ones. A window with no match (NaN) keeps code 3.
    codes = torch.full(maxima.shape, 3, dtype=torch.uint8, device=x.device)
    for code in (2, 1, 0):
        dy, dx = _WINDOW_ORDER[code]
        codes.masked_fill_(windows[:, :, dy, :, dx, :] == maxima, code)
    return values, codes.permute(0, 3, 1, 2)


def _unpool_forward(values: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
    n, c, h, w = values.shape
    v = values.permute(0, 2, 3, 1).reshape(n, h, 1, w, 1, c)
    codes = indices.permute(0, 2, 3, 1).reshape(n, h, 1, w, 1, c)
    out = torch.where(codes == _WINDOW_CODES.to(codes.device), v, v.new_zeros(()))
    out = out.reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)  # (N, C, 2h, 2w), channels_last
    return out[:, :, : size[0], : size[1]]


def _unpool_backward(grad_out: Tensor, indices: Tensor) -> Tensor:
    """Gathers, for each pooled cell, the gradient at the position its value was sent to."""
    n, c, h, w = indices.shape
    grad = _windows(_pad_to_even(grad_out, 0.0), h, w)
    codes = indices.permute(0, 2, 3, 1).reshape(n, h, 1, w, 1, c)
    picked = torch.where(codes == _WINDOW_CODES.to(codes.device), grad, grad.new_zeros(()))
    return picked.sum(dim=(2, 4)).permute(0, 3, 1, 2)


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, Tensor]:
        values, indices = _pool_forward(x)
        ctx.save_for_backward(indices)  # uint8 only: the point of the compact format
        ctx.size = tuple(x.shape[-2:])
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values: Tensor, _grad_indices: Tensor) -> Tensor:
        (indices,) = ctx.saved_tensors
        return _unpool_forward(grad_values, indices, ctx.size)


class _MaxUnpool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(indices)
        return _unpool_forward(values, indices, size)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
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
    size = (int(size[0]), int(size[1]))
    if torch.is_grad_enabled() and values.requires_grad:
        return _MaxUnpool2x2.apply(values, indices, size)
    return _unpool_forward(values, indices, size)


def indices_to_flat(indices: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 window codes -> PyTorch's int64 flat plane indices (for ``F.max_unpool2d``)."""
    h, w = indices.shape[-2:]
    rows = torch.arange(h, device=indices.device).view(h, 1) * 2 + (indices >> 1).long()
    cols = torch.arange(w, device=indices.device).view(1, w) * 2 + (indices & 1).long()
    return rows * size[1] + cols


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
        self, in_channels: int, out_channels: int, *, kernel_size: int = 3, relu: bool = True
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


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
