"""Shared fixtures. Tests run on tiny CPU inputs; real CamVid files are used when ../shared exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CAMVID_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "CamVid"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def camvid_root() -> Path:
    if not (CAMVID_ROOT / "train").is_dir():
        pytest.skip(f"real CamVid not found at {CAMVID_ROOT} (CI has it beside the project)")
    return CAMVID_ROOT


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
