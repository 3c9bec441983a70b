"""Loading the model into workers and running the app under uvicorn until SIGTERM or Ctrl-C.

On either signal uvicorn stops accepting connections, lets the admitted requests finish (up to
``DRAIN_SECONDS``), then the app's shutdown stops the workers; :func:`serve` then returns the
signal's name, and ``segnet serve`` exits 0.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Sequence
from pathlib import Path

import torch

from ..deploy.runtime import DEFAULT_INT8_PLAN, resolve_device, resolve_precision
from ..engine.inference import WHOLE_IMAGE, Tiling
from ..engine.predict import Segmenter
from ..engine.weights import load_for_inference
from ..errors import ArgumentError
from ..models import has_dropout
from .app import Service, build_app
from .limits import DRAIN_SECONDS, Limits
from .pool import InferencePool, threads_per_worker

CONNECTIONS_PER_SLOT = 4  # open connections allowed per admitted request (+8 for health checks)


def check_address(host: str, port: int) -> None:
    """``host``:``port`` can be listened on now (uvicorn would exit with a log line instead)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ArgumentError("host", f"{host}: not an address of this machine ({error})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as error:
            raise ArgumentError(
                "port", f"{port}: cannot listen on {host}:{port} ({error.strerror})"
            ) from None


def load_service(
    *,
    checkpoint: str | Path | None = None,
    model: str | None = None,
    weights: str | None = None,
    limits: Limits | None = None,
    mc_samples: int = 0,
    tiling: Tiling = WHOLE_IMAGE,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "torch",
    calibration: Sequence[torch.Tensor] | None = None,
    int8_plan: str = DEFAULT_INT8_PLAN,
) -> Service:
    """The model loaded once and copied into ``limits.workers`` optimized segmenters, on
    ``backend`` (``segnet.optimize_for_inference``; int8 calibrates on ``calibration`` and
    keeps ``int8_plan``'s convolutions fp32);
    with a ``tiling`` size every upload runs tile by tile, so a request's memory follows the
    tile rather than the upload (up to ``limits.max_pixels``)."""
    limits = limits or Limits()
    if mc_samples < 0:
        raise ArgumentError("mc_samples", f"must be >= 0, got {mc_samples}")
    torch_device = resolve_device(device)
    resolved = resolve_precision(precision, torch_device)
    net, config = load_for_inference(checkpoint=checkpoint, model=model, weights=weights)
    if mc_samples and not has_dropout(net):
        raise ArgumentError(
            "mc_samples", f"{config.name} has no dropout; serve a bayesian_* model for uncertainty"
        )
    threads = threads_per_worker(limits.workers)
    torch.set_num_threads(threads)
    first = Segmenter(
        net, config, device=torch_device, precision=resolved, backend=backend,
        calibration=calibration, int8_plan=int8_plan, tiling=tiling,
    )  # fmt: skip
    # Each worker runs its own copy (an engine's infer request serves one call at a time); the
    # first one's optimized model is copied, so int8 calibrates and auto measures only once.
    segmenters = [first] + [first.replica() for _ in range(limits.workers - 1)]
    pool = InferencePool(segmenters, queue_size=limits.queue, threads=threads)
    source = Path(checkpoint).name if checkpoint is not None else f"{weights} weights"
    return Service(
        config=config, source=source, pool=pool, limits=limits, mc_samples=mc_samples,
        tiling=tiling, runtime=first.model.runtime,
    )  # fmt: skip


def serve(service: Service, *, host: str = "127.0.0.1", port: int = 8000) -> str | None:
    """Serves until SIGTERM/SIGINT, drains, returns the signal's name (None if none came)."""
    import uvicorn

    config = uvicorn.Config(
        build_app(service),
        host=host,
        port=port,
        timeout_graceful_shutdown=DRAIN_SECONDS,
        # Connections beyond this get uvicorn's own 503 before any body is read: uploads being
        # received at once stay bounded (each up to max_bytes) however many clients connect.
        limit_concurrency=CONNECTIONS_PER_SLOT * service.pool.capacity + 8,
        log_level="info",
    )
    # uvicorn handles the signals while it runs and raises them again once drained; these
    # handlers receive that second delivery, so the process ends normally, not killed.
    received: list[str] = []
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {
        s: signal.signal(s, lambda n, _f: received.append(signal.Signals(n).name)) for s in stops
    }
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return received[0] if received else None
