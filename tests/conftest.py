"""Shared fixtures. Tests run on tiny CPU inputs; real CamVid files are used when ../shared exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segnet
from segnet.data.base import DatasetInfo
from segnet.data.folder import default_palette
from segnet.engine.checkpoint import ModelConfig, save_checkpoint

CAMVID_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "CamVid"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

# 130-250M parameters: seconds to build, tens of seconds to export on 2 cores, ~1 GB each.
# The generic suite runs them behind the slow marker (CI runs it), one at a time.
HEAVY_MODELS = ("deconvnet", "fcn8s", "fcn16s", "fcn32s")


def model_params() -> list:
    """Every registered model as a pytest parameter, the heavy ones marked slow."""
    return [
        pytest.param(n, marks=pytest.mark.slow) if n in HEAVY_MODELS else n
        for n in segnet.list_models()
    ]


@pytest.fixture
def model_factory():
    """``model_factory(name, num_classes=5, in_channels=3)``: a seeded model in eval mode with
    trained-looking BN statistics."""

    def make(name: str, *, num_classes: int = 5, in_channels: int = 3) -> torch.nn.Module:
        torch.manual_seed(0)
        model = segnet.build_model(name, num_classes=num_classes, in_channels=in_channels)
        return with_trained_bn(model)

    return make


def with_trained_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics and affine terms, as after training (fresh BN folds to nearly
    nothing, which would hide folding errors)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.2)
    return model.eval()


@pytest.fixture
def camvid_root() -> Path:
    if not (CAMVID_ROOT / "train").is_dir():
        pytest.skip(f"real CamVid not found at {CAMVID_ROOT} (CI has it beside the project)")
    return CAMVID_ROOT


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def write_folder_dataset(
    root: Path,
    *,
    num_classes: int = 3,
    counts: dict[str, int] | None = None,
    size: tuple[int, int] = (32, 48),
) -> Path:
    """A tiny folder dataset (ROOT/SPLIT/images, ROOT/SPLIT/masks) of coloured class blocks,
    so a model can learn something in a few steps."""
    rng = np.random.default_rng(0)
    colors = rng.integers(0, 256, (num_classes, 3))
    for split, count in (counts or {"train": 4, "val": 2}).items():
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            # 8x8-pixel blocks of random classes; each class has its own colour plus noise.
            blocks = rng.integers(0, num_classes, (-(-size[0] // 8), -(-size[1] // 8)))
            mask = np.kron(blocks, np.ones((8, 8), np.int64))[: size[0], : size[1]].astype(np.uint8)
            noise = rng.normal(0, 20, (*size, 3))
            image = np.clip(colors[mask] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{split}_{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{split}_{i}.png")
    return root


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    """3 classes, 4 train + 2 val images of 32x48."""
    return write_folder_dataset(tmp_path / "data")


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """An untrained 3-class SegNet-Basic checkpoint (outputs need not be good, only valid)."""
    info = DatasetInfo(class_names=("a", "b", "c"), palette=default_palette(3), ignore_index=255)
    config = ModelConfig.for_dataset("segnet_basic", info)
    path = tmp_path / "model.pt"
    save_checkpoint(path, config=config, model=config.build())
    return path
