"""``segnet serve``: a web demo and HTTP API around a trained model (Starlette under uvicorn;
the extra ``segnet[serve]``). Built on ``engine`` (loading, :class:`Segmenter`, colours).

    limits.py   what a request may be and how much work is admitted (the flags' defaults)
    upload.py   reading and decoding uploads; every bad one -> a 4xx
    pool.py     bounded inference workers; full -> 503 + Retry-After
    render.py   one request's work: decode, segment, encode as the asked output
    app.py      routes and error handlers;  openapi.py  the API description
    page.html   the demo page;  server.py  loading the model, running uvicorn, draining on SIGTERM

The modules above import Starlette: import them once :func:`require_serve_extra` has passed.
"""

from __future__ import annotations

import importlib.util

from ..errors import SegNetError
from .limits import OUTPUTS, Limits

INSTALL_HINT = "pip install 'segnet[serve]'"

__all__ = ["INSTALL_HINT", "OUTPUTS", "Limits", "require_serve_extra"]


def require_serve_extra() -> None:
    """Starlette, uvicorn and python-multipart, or a one-line error naming the extra."""
    missing = [m for m in ("starlette", "uvicorn", "multipart") if not importlib.util.find_spec(m)]
    if missing:
        raise SegNetError(f"serve needs {', '.join(missing)}, not installed: {INSTALL_HINT}")
