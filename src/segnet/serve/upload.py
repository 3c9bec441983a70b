"""Uploads, checked before any inference: the multipart field ``image`` read within the byte limit,
then decoded within the pixel limit. Every bad upload becomes an :class:`UploadError` (a 4xx with
a one-line reason), never an exception that reaches the server as a 500."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message, Receive

from ..data.io import to_rgb

FIELD = "image"  # the multipart field POST /api/segment reads (/api/segment-video: "video")
_MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself


class UploadError(Exception):
    """A request the server refuses: HTTP ``status`` (4xx) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def read_upload(
    request: Request, *, max_bytes: int, field_name: str = FIELD
) -> tuple[bytes, str]:
    """(bytes, file name) of the multipart file field ``field_name``; the body is read at most
    to the limit (plus multipart overhead), so an endless upload costs no more memory than an
    allowed one."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        raise UploadError(415, f"send the file as multipart/form-data field {field_name!r}")
    body = await _read_body(request, max_bytes)
    try:
        form = await Request(request.scope, _replay(body)).form(max_files=1, max_fields=8)
    except HTTPException as error:  # python-multipart's complaint, e.g. a missing boundary
        raise UploadError(400, f"malformed multipart body: {error.detail}") from None
    try:
        field = form.get(field_name)
        if field is None:
            got = ", ".join(repr(k) for k in form.keys()) or "none"
            raise UploadError(400, f"no multipart field {field_name!r} (fields sent: {got})")
        if not isinstance(field, UploadFile):
            raise UploadError(400, f"field {field_name!r} must be a file, not a text value")
        data, name = await field.read(), field.filename or ""
    finally:
        await form.close()
    if not data:
        raise UploadError(400, "the uploaded file is empty")
    if len(data) > max_bytes:
        raise UploadError(413, _too_many_bytes(len(data), max_bytes))
    return data, name


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, refused (413) as soon as it passes ``max_bytes`` plus the multipart
    allowance: by its Content-Length, or while streaming when it has none (chunked)."""
    limit = max_bytes + _MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadError(413, _too_many_bytes(int(declared), max_bytes))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadError(413, _too_many_bytes(size, max_bytes, at_least=True))
        chunks.append(chunk)
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    """An ASGI ``receive`` that hands out the already-read body once."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _too_many_bytes(size: int, limit: int, *, at_least: bool = False) -> str:
    return f"upload is {'over ' if at_least else ''}{size:,} bytes; this server accepts {limit:,}"


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 (H, W, 3), upright as a browser shows it (EXIF).

    The header's size is checked before any pixel is decoded, so a decompression bomb (a small
    file claiming a huge image) costs nothing. Anything Pillow cannot decode -- not an image,
    truncated, corrupt -- is a 400: decoders raise many exception types on hostile input, so
    every one of them is caught here, where the input alone is at fault."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UploadError(
                        413,
                        f"image is {width}x{height} ({width * height:,} pixels); "
                        f"this server accepts at most {max_pixels:,} pixels",
                    )
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(
            400, "not an image this server reads (PNG, JPEG, BMP, GIF, TIFF, WebP)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(413, "image claims more pixels than Pillow agrees to decode") from None
    except Exception as error:  # hostile bytes: any decoder error (see the docstring)
        raise UploadError(
            400, f"not a readable image ({type(error).__name__}: {str(error)[:200]})"
        ) from None
