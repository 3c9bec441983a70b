"""``segnet serve``: the web demo and HTTP API (``segnet.serve``; extra ``segnet[serve]``)."""

from __future__ import annotations

import argparse

from ..serve.limits import Limits
from .args import (
    Subparsers,
    add_runtime_flags,
    add_tiling_flags,
    engine_settings,
    positive_int,
    tiling_from_args,
)

_DEFAULTS = Limits()  # the flags' defaults live on Limits


def add_serve(sub: Subparsers) -> None:
    p = sub.add_parser(
        "serve",
        help="web demo and HTTP API: upload an image or a short video, see its segmentation",
    )
    p.add_argument("--checkpoint", help="a checkpoint from `segnet train`")
    p.add_argument("--model", help="with --weights: a model whose weights ship with the package")
    p.add_argument("--weights", help="shipped weights name, e.g. camvid")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines")
    p.add_argument("--port", type=_port, default=8000, help="default: %(default)s")
    p.add_argument(
        "--max-bytes", type=positive_int("--max-bytes"), default=_DEFAULTS.max_bytes,
        help="largest upload accepted, in bytes (default: %(default)s); larger -> 413",
    )  # fmt: skip
    p.add_argument(
        "--max-pixels", type=positive_int("--max-pixels"), default=_DEFAULTS.max_pixels,
        help="largest image or video frame, width x height (default: %(default)s); larger -> 413",
    )  # fmt: skip
    p.add_argument(
        "--max-frames", type=positive_int("--max-frames"), default=_DEFAULTS.max_frames,
        help="frames of an uploaded video segmented (default: %(default)s); the rest is cut off",
    )  # fmt: skip
    p.add_argument(
        "--workers", type=positive_int("--workers"), default=_DEFAULTS.workers,
        help="inference threads (default: %(default)s), each with its own model copy; the CPU "
        "threads are shared out among them",
    )  # fmt: skip
    p.add_argument(
        "--queue", type=_non_negative, default=_DEFAULTS.queue,
        help="requests waiting beyond those running (default: %(default)s); more -> 503",
    )  # fmt: skip
    p.add_argument(
        "--mc-samples", type=positive_int("--mc-samples"), default=0,
        help="Monte-Carlo dropout samples (Bayesian SegNet): adds the uncertainty view",
    )  # fmt: skip
    add_tiling_flags(p)  # every upload (and video frame) tile by tile: memory follows the tile
    add_runtime_flags(p, engines=True)
    p.set_defaults(run=run_serve)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {text!r}")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expects an integer >= 0, got {text!r}")
    return int(text)


def run_serve(args: argparse.Namespace) -> int:
    from ..serve import require_serve_extra

    require_serve_extra()  # before importing the server, which imports Starlette
    from ..deploy.runtime import resolve_device, resolve_precision
    from ..serve.server import check_address, load_service, serve

    tiling = tiling_from_args(args)  # bad tile values fail before the port or the model
    check_address(args.host, args.port)  # before the model loads: a taken port fails at once
    limits = Limits(
        max_bytes=args.max_bytes, max_pixels=args.max_pixels, max_frames=args.max_frames,
        workers=args.workers, queue=args.queue,
    )  # fmt: skip
    precision = resolve_precision(args.precision, resolve_device(args.device))
    engine = engine_settings(args, precision)  # backend, int8 calibration images
    service = load_service(
        checkpoint=args.checkpoint, model=args.model, weights=args.weights, limits=limits,
        mc_samples=args.mc_samples, tiling=tiling, device=args.device, precision=precision,
        **engine,
    )  # fmt: skip
    tile = service.tiling.size
    tiles = f", tiles {tile[0]}x{tile[1]}" if tile else ""
    print(
        f"segnet serve: {service.config.name} ({service.source}, {service.runtime}{tiles}) on "
        f"http://{args.host}:{args.port}"
    )
    stopped_by = serve(service, host=args.host, port=args.port)
    print(f"segnet serve: stopped{f' by {stopped_by}' if stopped_by else ''}; "
          f"{service.pool.served} segment requests handled", flush=True)  # fmt: skip
    return 0
