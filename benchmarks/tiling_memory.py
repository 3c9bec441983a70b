"""Probe: sliding-window inference (`--tile`) on a large image -- peak memory, time, and how
many pixels keep the label the whole-image pass gives them.

Takes a CamVid val image, enlarges it (bilinear) to a large frame, and segments it with the
shipped SegNet-Basic weights through the same path as `segnet predict` (optimized torch model,
fp32): once whole, then tile by tile. With a fifth argument ``serve``: the same frame uploaded
once to `segnet serve` started whole, then with ``--tile`` (each server in its own process on
127.0.0.1; the figure is the server's peak RSS, VmHWM, beyond what it held before the upload).

    python benchmarks/tiling_memory.py ../shared/data/CamVid/val/0016E5_07959.png 3 360x480 32
    python benchmarks/tiling_memory.py ../shared/data/CamVid/val/0016E5_07959.png 3 360x480 32 serve
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segnet.benchmark.memory import PeakMemory
from segnet.engine.inference import Tiling
from segnet.engine.predict import Segmenter
from segnet.engine.weights import load_pretrained_with_config

CPU = torch.device("cpu")


def run(segmenter: Segmenter, image: np.ndarray) -> tuple[np.ndarray, float, float]:
    segmenter(image[:64, :64])  # warm-up outside the measurement
    with PeakMemory(CPU) as memory:
        start = time.perf_counter()
        labels, _ = segmenter(image)
        seconds = time.perf_counter() - start
    return labels, memory.mb, seconds


def _memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak) of a process, MB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v.split()[0]) / 1024 for k, v in (line.split(":", 1) for line in lines)
            if k in ("VmRSS", "VmHWM")}  # fmt: skip


def serve(image: np.ndarray, tile: tuple[int, int], overlap: int) -> None:
    import httpx
    from serve_load import png, start_server  # beside this file

    data = png(image)
    tiled = ["--tile", f"{tile[0]}x{tile[1]}", "--tile-overlap", str(overlap)]
    for name, extra in (("whole", []), (f"tiles {tile[0]}x{tile[1]}", tiled)):
        with start_server(["--model", "segnet_basic", "--weights", "camvid", *extra]) as server:
            before = _memory_mb(server.process.pid)
            start = time.perf_counter()
            answer = httpx.post(
                server.url + "/api/segment", files={"image": ("frame.png", data, "image/png")},
                params={"output": "labels"}, timeout=600,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            after = _memory_mb(server.process.pid)
        assert answer.status_code == 200, answer.text
        print(f"serve {name}: RSS {before['VmRSS']:.1f} MB before the upload, peak "
              f"{after['VmHWM']:.1f} MB (+{after['VmHWM'] - before['VmHWM']:.1f} MB), "
              f"{seconds:.2f} s")  # fmt: skip


def main() -> None:
    path, factor = sys.argv[1], int(sys.argv[2])
    tile = tuple(int(v) for v in sys.argv[3].split("x"))
    overlap = int(sys.argv[4])
    torch.set_num_threads(2)
    source = Image.open(path).convert("RGB")
    image = np.asarray(
        source.resize((source.width * factor, source.height * factor), Image.BILINEAR)
    )
    if sys.argv[5:] == ["serve"]:
        serve(image, tile, overlap)
        return
    model, config = load_pretrained_with_config("segnet_basic", "camvid")
    whole, whole_mb, whole_s = run(Segmenter(model, config, device=CPU), image)
    tiling = Tiling(size=tile, overlap=overlap)
    tiles = len(tiling.windows(*image.shape[:2]))
    tiled, tiled_mb, tiled_s = run(Segmenter(model, config, device=CPU, tiling=tiling), image)
    print(f"image {image.shape[0]}x{image.shape[1]}: whole {whole_mb:.1f} MB {whole_s:.2f} s; "
          f"{tiles} tiles {tile[0]}x{tile[1]} overlap {overlap}: {tiled_mb:.1f} MB {tiled_s:.2f} s; "
          f"same label {100 * (whole == tiled).mean():.3f}% of pixels")  # fmt: skip


if __name__ == "__main__":
    main()
