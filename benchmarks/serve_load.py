"""Load test of ``segnet serve``: N requests at C concurrent, malformed uploads mixed in.

Starts the real server (``python -m segnet serve``) on a free 127.0.0.1 port, sends the requests
with an async httpx client, and records status counts, p50/p99 latency and throughput. Every
``--bad-every``-th request is malformed (not an image, truncated, empty, wrong field name, a
decompression bomb); those must come back 4xx, and no request may come back 5xx.

    python benchmarks/serve_load.py --model segnet_basic --weights camvid \\
        --requests 1000 --concurrency 16 --size 96x128 --out benchmarks/serve_load.md

``tests/test_serve.py`` imports this file for its server fixture and for its slow load test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import platform
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

STARTUP_SECONDS = 180  # importing torch and loading a model on a busy 2-core machine
TITLE = """# `segnet serve` under load

Written by `benchmarks/serve_load.py` (the command is above each table). Latency is per request
as the client sees it, queueing included: with 16 requests in flight and `--workers` inferences
at a time, a request waits for those ahead of it, so p50 is about 16 / workers x one image's time.
"""


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def start_server(args: Sequence[str], *, log_dir: Path | None = None) -> Iterator[Server]:
    """``segnet serve ARGS`` on a free 127.0.0.1 port, ready (``/healthz`` 200) on entry,
    stopped (SIGTERM, then SIGKILL after 60 s) on exit; its log is read with ``log_text()``
    inside the block and removed after it."""
    import httpx

    port = free_port()
    log = Path(tempfile.mkstemp(prefix="segnet-serve-", suffix=".log", dir=log_dir)[1])
    command = [sys.executable, "-m", "segnet", "serve", *args, "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited {process.returncode}:\n{server.log_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {STARTUP_SECONDS} s:\n{server.log_text()}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.unlink(missing_ok=True)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with noise: compresses like a photo, not like random bytes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width, 1), y * 255 / max(height, 1), (x + y) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class Upload:
    """One request body: ``field`` = ``data``; ``ok``: a valid image (expect 200, else 4xx)."""

    name: str
    data: bytes
    field: str = "image"
    ok: bool = False


def malformed_uploads(valid: bytes) -> list[Upload]:
    return [
        Upload("not an image", b"hello, this is not an image\n" * 4),
        Upload("truncated", valid[: len(valid) // 2]),
        Upload("empty", b""),
        Upload("wrong field", valid, field="file"),
        Upload("decompression bomb", bomb_png()),
    ]


def request_plan(size: tuple[int, int], count: int, bad_every: int) -> list[Upload]:
    """``count`` uploads: every ``bad_every``-th a malformed one (round robin), the rest valid
    (four different images of ``size``)."""
    valid = [Upload("valid", png(sample_image(*size, seed=s)), ok=True) for s in range(4)]
    bad = malformed_uploads(valid[0].data)
    plan = []
    for i in range(count):
        if bad_every and i % bad_every == bad_every - 1:
            plan.append(bad[(i // bad_every) % len(bad)])
        else:
            plan.append(valid[i % len(valid)])
    return plan


@dataclass
class LoadResult:
    statuses: Counter = field(default_factory=Counter)
    latencies: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    wrong: list[str] = field(default_factory=list)  # a valid upload not 200, or a bad one not 4xx
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


async def run_load(url: str, plan: Sequence[Upload], *, concurrency: int) -> LoadResult:
    """Sends ``plan`` with ``concurrency`` requests in flight; a transport error (connection
    dropped or refused) counts as status 599, a server failure like a 5xx."""
    import httpx

    result, queue = LoadResult(), list(reversed(plan))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            while queue:
                upload = queue.pop()
                files = {upload.field: ("upload.png", upload.data, "image/png")}
                start = time.perf_counter()
                try:
                    status = (await client.post("/api/segment", files=files)).status_code
                except httpx.TransportError:
                    status = 599
                result.latencies[upload.ok].append(1000 * (time.perf_counter() - start))
                result.statuses[status] += 1
                if (status == 200) != upload.ok or not (upload.ok or 400 <= status < 500):
                    result.wrong.append(f"{upload.name}: {status}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def cpu_model() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def report(
    result: LoadResult, *, command: str, server_args: Sequence[str], size: str, load: float
) -> str:
    import torch

    valid, bad = result.latencies[True], result.latencies[False]
    total = sum(result.statuses.values())
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(result.statuses.items()))
    return "\n".join([
        f"## `segnet serve {' '.join(server_args)}`",
        "",
        f"```\n{command}\n```",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} CPUs visible, torch {torch.__version__}, "
        f"Python {platform.python_version()}; {date.today().isoformat()}; load average "
        f"{load:.1f} before the run (other jobs share the CPUs).",
        f"- Server: `segnet serve {' '.join(server_args)}` on 127.0.0.1; client: httpx, same machine.",
        f"- Requests: {total} ({len(valid)} valid {size} PNGs, {len(bad)} malformed: not an image, "
        "truncated, empty, wrong field, decompression bomb).",
        "",
        "| requests | 5xx | wrong status | wall s | req/s | images/s | valid p50 ms | valid p99 ms "
        "| malformed p50 ms | malformed p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {total} | {result.server_errors} | {len(result.wrong)} | {result.seconds:.1f} "
        f"| {total / result.seconds:.1f} | {len(valid) / result.seconds:.1f} "
        f"| {percentile(valid, 50):.0f} | {percentile(valid, 99):.0f} "
        f"| {percentile(bad, 50):.0f} | {percentile(bad, 99):.0f} |",
        "",
        f"Status counts: {statuses}.",
        "",
    ])  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--model")
    p.add_argument("--weights")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--size", default="96x128", help="HxW of the valid images")
    p.add_argument("--bad-every", type=int, default=5, help="every Nth request is malformed")
    p.add_argument("--serve-args", default="", help="more `segnet serve` flags, one string")
    p.add_argument("--out", help="Markdown report (default: print only)")
    p.add_argument("--append", action="store_true", help="add this run's section to --out")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    model = ["--checkpoint", args.checkpoint] if args.checkpoint else []
    model += ["--model", args.model, "--weights", args.weights] if args.model else []
    server_args = model + shlex.split(args.serve_args)
    plan = request_plan((height, width), args.requests, args.bad_every)
    load = os.getloadavg()[0]
    with start_server(server_args) as server:
        result = asyncio.run(run_load(server.url, plan, concurrency=args.concurrency))
    command = "python benchmarks/serve_load.py " + shlex.join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    text = report(result, command=command, server_args=server_args, size=args.size, load=load)
    print(text)
    if args.out:
        out = Path(args.out)
        keep = out.read_text() if args.append and out.exists() else TITLE
        out.write_text(keep.rstrip("\n") + "\n\n" + text)
    if result.wrong:
        print(f"unexpected statuses: {Counter(result.wrong).most_common(5)}", file=sys.stderr)
    return 1 if result.server_errors or result.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
