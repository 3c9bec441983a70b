"""Index pooling/unpooling: compact uint8 codes that reproduce max_pool2d/max_unpool2d exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segnet.models.layers import indices_to_flat, max_pool_2x2, max_unpool_2x2

SIZES = [(8, 8), (7, 9), (45, 60), (23, 30), (1, 5)]


def _reference(x: torch.Tensor):
    values, flat = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    return values, flat, F.max_unpool2d(values, flat, 2, 2, output_size=x.shape[-2:])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_torch_including_ties(size, channels_last) -> None:
    x = torch.randint(0, 3, (2, 4, *size)).float()  # few distinct values: many ties
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    values, indices = max_pool_2x2(x)
    ref_values, ref_flat, ref_unpooled = _reference(x)
    assert indices.dtype == torch.uint8 and indices.shape == values.shape
    assert torch.equal(values, ref_values)
    assert torch.equal(indices_to_flat(indices, size), ref_flat)
    assert torch.equal(max_unpool_2x2(values, indices, size), ref_unpooled)


def test_unpool_places_each_value_at_its_argmax() -> None:
    x = torch.tensor([[[[1.0, 5.0, 2.0], [3.0, 0.0, 9.0], [4.0, 4.0, 1.0]]]])
    values, indices = max_pool_2x2(x)
    assert values.flatten().tolist() == [5.0, 9.0, 4.0, 1.0]
    assert indices.flatten().tolist() == [1, 2, 0, 0]  # code = 2*dy + dx; first max wins
    out = max_unpool_2x2(values, indices, (3, 3))
    expected = torch.tensor([[[[0.0, 5.0, 0.0], [0.0, 0.0, 9.0], [4.0, 0.0, 1.0]]]])
    assert torch.equal(out, expected)


@pytest.mark.parametrize("size", [(7, 9), (8, 6)])
@pytest.mark.parametrize("channels_last", [False, True])  # the NCHW and NHWC paths
def test_gradients_match_torch(size, channels_last) -> None:
    x = torch.randint(0, 3, (2, 3, *size)).float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    weight = torch.randn(2, 3, *size)
    values, indices = max_pool_2x2(ours)
    (max_unpool_2x2(values * 3, indices, size) * weight).sum().backward()
    ref_values, ref_flat = F.max_pool2d(theirs, 2, 2, ceil_mode=True, return_indices=True)
    (F.max_unpool2d(ref_values * 3, ref_flat, 2, 2, output_size=size) * weight).sum().backward()
    assert torch.allclose(ours.grad, theirs.grad)


def test_autograd_saves_only_uint8_indices() -> None:
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        values, indices = max_pool_2x2(x)
        max_unpool_2x2(values, indices, (8, 8))
    assert saved and all(t.dtype == torch.uint8 for t in saved)


@pytest.mark.parametrize("channels_last", [False, True])
def test_deterministic_algorithms_allowed(channels_last) -> None:
    x = torch.randn(1, 3, 5, 4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.use_deterministic_algorithms(True)
    try:
        values, indices = max_pool_2x2(x.requires_grad_())
        max_unpool_2x2(values, indices, (5, 4)).sum().backward()
        assert x.grad is not None
    finally:
        torch.use_deterministic_algorithms(False)
