"""The Starlette application: the page, the segmentation API, health and the OpenAPI description.

    GET  /               the demo page (one self-contained HTML file, no CDN)
    POST /api/segment    multipart field ``image`` -> ?output=overlay|color|labels|uncertainty|json
    POST /api/segment-video  multipart field ``video`` -> the overlay as MP4 (with segnet[video])
    GET  /api/info       model, classes, palette, limits (the page reads it on load)
    GET  /healthz        200 once the model is loaded; requests admitted and served
    GET  /openapi.json   the API described (OpenAPI 3.1)

Every error is JSON ``{"error": "..."}``: bad uploads are 4xx (:mod:`.upload`), a full queue is
503 with Retry-After (:mod:`.pool`); anything unforeseen is answered 500 (and its traceback
logged), never a dropped connection.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..engine.checkpoint import ModelConfig
from ..engine.inference import WHOLE_IMAGE, Tiling
from ..engine.predict import OverlayStyle
from .limits import OUTPUTS, Limits
from .openapi import openapi_spec
from .pool import Busy, InferencePool
from .render import DEFAULT_OPACITY, Job, Rendered, run_request
from .upload import UploadError, read_upload
from .video import VideoJob, run_video, video_available


@dataclass
class Service:
    """What the routes share: the loaded model's description, its workers and the limits."""

    config: ModelConfig
    source: str  # where the weights came from: a checkpoint file or "camvid" shipped weights
    pool: InferencePool
    limits: Limits
    mc_samples: int = 0  # > 0: Bayesian SegNet, uncertainty output available
    runtime: str = "torch fp32"  # the workers' backend and precision, e.g. "openvino int8"
    tiling: Tiling = WHOLE_IMAGE  # how the workers run each upload: whole or tile by tile

    def info(self) -> dict:
        return {
            "model": self.config.name,
            "source": self.source,
            "runtime": self.runtime,
            "classes": list(self.config.class_names),
            "palette": [list(c) for c in self.config.palette],
            "mc_samples": self.mc_samples,
            **self.tiling.describe(),  # tile, tile_overlap
            "opacity": DEFAULT_OPACITY,
            "video": video_available(),
            "outputs": [o for o in OUTPUTS if o != "uncertainty" or self.mc_samples],
            "limits": {"max_bytes": self.limits.max_bytes, "max_pixels": self.limits.max_pixels,
                       "max_frames": self.limits.max_frames, "workers": self.limits.workers,
                       "queue": self.limits.queue},
        }  # fmt: skip


def build_app(service: Service) -> Starlette:
    """The ASGI app; on shutdown (after uvicorn has drained the requests) the workers stop."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        service.pool.close()

    routes = [
        Route("/", partial(page, service), methods=["GET"]),
        Route("/api/segment", partial(segment, service), methods=["POST"]),
        Route("/api/segment-video", partial(segment_video, service), methods=["POST"]),
        Route("/api/info", partial(info, service), methods=["GET"]),
        Route("/healthz", partial(healthz, service), methods=["GET"]),
        Route("/openapi.json", partial(openapi, service), methods=["GET"]),
    ]
    handlers = {
        UploadError: _upload_error,
        Busy: _busy,
        HTTPException: _http_error,
        Exception: _internal_error,
    }
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


async def page(service: Service, request: Request) -> HTMLResponse:
    html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


async def segment(service: Service, request: Request) -> Response:
    output = request.query_params.get("output", OUTPUTS[0])
    if output not in OUTPUTS:
        raise UploadError(400, f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
    if output == "uncertainty" and not service.mc_samples:
        raise UploadError(400, "uncertainty needs a Bayesian model served with mc_samples > 0")
    style = _style(request)
    service.pool.check_capacity()
    data, _ = await read_upload(request, max_bytes=service.limits.max_bytes)
    job = Job(
        data=data, output=output, style=style, mc_samples=service.mc_samples,
        max_pixels=service.limits.max_pixels, queued_at=time.perf_counter(),
    )  # fmt: skip
    return _respond(await service.pool.run(partial(run_request, job=job)))


async def segment_video(service: Service, request: Request) -> Response:
    if not video_available():
        raise UploadError(415, "this server has no video support: pip install 'segnet[video]'")
    style = _style(request)
    service.pool.check_capacity()
    data, filename = await read_upload(
        request, max_bytes=service.limits.max_bytes, field_name="video"
    )
    job = VideoJob(
        data=data, filename=filename, style=style, max_pixels=service.limits.max_pixels,
        max_frames=service.limits.max_frames, queued_at=time.perf_counter(),
    )  # fmt: skip
    return _respond(await service.pool.run(partial(run_video, job=job)))


def _respond(rendered: Rendered) -> Response:
    timing = ", ".join(f"{k};dur={v}" for k, v in rendered.timings.items())
    headers = {"Server-Timing": timing, **rendered.headers}
    return Response(rendered.body, media_type=rendered.media_type, headers=headers)


def _style(request: Request) -> OverlayStyle:
    """?opacity= (0-1) and ?legend=1 of an overlay."""
    text = request.query_params.get("opacity")
    legend = request.query_params.get("legend", "0") not in ("0", "false", "")
    if text is None:
        return OverlayStyle(legend=legend)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise UploadError(400, f"opacity must be a number from 0 to 1; got {text!r}")
    return OverlayStyle(opacity=value, legend=legend)


async def info(service: Service, request: Request) -> JSONResponse:
    return JSONResponse(service.info())


async def healthz(service: Service, request: Request) -> JSONResponse:
    pool = service.pool
    return JSONResponse(
        {"status": "ok", "model": service.config.name, "admitted": pool.admitted,
         "capacity": pool.capacity, "served": pool.served}
    )  # fmt: skip


async def openapi(service: Service, request: Request) -> JSONResponse:
    return JSONResponse(openapi_spec(service.info()))


async def _upload_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, UploadError)
    return JSONResponse({"error": error.message}, status_code=error.status)


async def _busy(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, Busy)
    headers = {"Retry-After": str(error.retry_after)}
    return JSONResponse({"error": str(error)}, status_code=503, headers=headers)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    return JSONResponse({"error": error.detail}, status_code=error.status_code)


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    # Starlette re-raises after this response is sent, so uvicorn logs the traceback.
    return JSONResponse({"error": f"internal error: {type(error).__name__}"}, status_code=500)
