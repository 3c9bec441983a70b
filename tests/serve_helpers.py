"""Shared by the ``segnet serve`` tests: the server launcher and load generator of
``benchmarks/serve_load.py`` (one home for both), and tiny checkpoints for module-scoped servers
(the ``checkpoint`` fixture of conftest is per test; a server takes seconds to start)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from segnet.data.base import DatasetInfo
from segnet.data.folder import default_palette
from segnet.engine.checkpoint import ModelConfig, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("serve_load", ROOT / "benchmarks/serve_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


serve_load = _load_benchmark()


def tiny_checkpoint(path: Path, model: str = "segnet_basic") -> Path:
    """As conftest's ``checkpoint``: an untrained 3-class model (outputs valid, not good)."""
    info = DatasetInfo(class_names=("a", "b", "c"), palette=default_palette(3), ignore_index=255)
    config = ModelConfig.for_dataset(model, info)
    save_checkpoint(path, config=config, model=config.build())
    return path


def write_clip(path: Path, *, frames: int = 6, size: tuple[int, int] = (48, 64), fps: int = 10):
    """A short H.264 MP4 of moving gradients, made here (no data committed); needs PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for k in range(frames):
            image = np.roll(serve_load.sample_image(*size, seed=k), 4 * k, axis=1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path
