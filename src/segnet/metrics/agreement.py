"""How closely two models label the same images: what every deployment check reports (an
optimized or exported model against the eager fp32 model it came from)."""

from __future__ import annotations

import torch


def pixel_agreement(labels: torch.Tensor, reference: torch.Tensor) -> float:
    """Fraction of pixels given the same class; (N, H, W) integer labels of the same shape."""
    if labels.shape != reference.shape:
        raise ValueError(
            f"label maps differ in shape: {tuple(labels.shape)} vs {tuple(reference.shape)}"
        )
    return (labels == reference).float().mean().item()


def compare_logits(logits: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """(N, K, H, W) logits against reference logits: argmax agreement and largest difference."""
    logits, reference = logits.float().cpu(), reference.float().cpu()
    return {
        "agreement": pixel_agreement(logits.argmax(1), reference.argmax(1)),
        "max_abs_diff": (logits - reference).abs().max().item(),
    }
