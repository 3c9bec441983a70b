"""The API described for clients and code generators (OpenAPI 3.1), written out by hand: five
routes do not need a framework to derive it. Served at ``GET /openapi.json``."""

from __future__ import annotations

from typing import Any

from .. import __version__
from .limits import OUTPUTS
from .render import DEFAULT_OPACITY
from .upload import FIELD
from .video import FIELD as VIDEO_FIELD

_ERROR = {
    "description": "JSON error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_PNG = {"image/png": {"schema": {"type": "string", "format": "binary"}}}


def openapi_spec(info: dict[str, Any]) -> dict[str, Any]:
    """The description for a server whose ``/api/info`` answer is ``info``."""
    limits = info["limits"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "segnet serve",
            "version": __version__,
            "description": (
                f"Semantic segmentation with {info['model']} ({len(info['classes'])} classes). "
                f"Uploads up to {limits['max_bytes']:,} bytes and {limits['max_pixels']:,} pixels."
            ),
        },
        "paths": {
            "/api/segment": {"post": _segment(info["outputs"])},
            **({"/api/segment-video": {"post": _segment_video(limits)}} if info["video"] else {}),
            "/api/info": {"get": _json_get("Model, runtime, classes, palette, tiling and limits")},
            "/healthz": {"get": _json_get("200 once the model is loaded")},
            "/openapi.json": {"get": _json_get("This description")},
            "/": {
                "get": {
                    "summary": "The demo page",
                    "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
                }
            },
        },
    }


def _json_get(summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": {"200": {"description": "JSON", "content": {"application/json": {}}}},
    }


def _multipart(field: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {field: {"type": "string", "format": "binary"}},
                    "required": [field],
                }
            }
        },
    }


_OPACITY_PARAMETERS = [
    {
        "name": "opacity",
        "in": "query",
        "description": "Colour weight of the overlay",
        "schema": {"type": "number", "minimum": 0, "maximum": 1, "default": DEFAULT_OPACITY},
    },
    {
        "name": "legend",
        "in": "query",
        "description": "1: draw the class legend into the overlay",
        "schema": {"type": "integer", "enum": [0, 1], "default": 0},
    },
]


def _segment_video(limits: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": f"Segment a short video (its first {limits['max_frames']} frames)",
        "parameters": _OPACITY_PARAMETERS,
        "requestBody": _multipart(VIDEO_FIELD),
        "responses": {
            "200": {
                "description": "The overlay, H.264 MP4; header X-Frames: frames segmented",
                "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
            },
            "400": _ERROR,
            "413": _ERROR,
            "415": _ERROR,
            "503": {**_ERROR, "description": "Queue full; retry after the Retry-After seconds"},
        },
    }


def _segment(outputs: list[str]) -> dict[str, Any]:
    return {
        "summary": "Segment one image",
        "parameters": [
            {
                "name": "output",
                "in": "query",
                "description": "What to return",
                "schema": {"type": "string", "enum": outputs, "default": OUTPUTS[0]},
            },
            *_OPACITY_PARAMETERS,
        ],
        "requestBody": _multipart(FIELD),
        "responses": {
            "200": {
                "description": (
                    "overlay/color/uncertainty: PNG; labels: 8-bit PNG of class indices; json: "
                    "classes with colours and pixel shares, timings_ms, and images as PNG data URLs"
                ),
                "content": {**_PNG, "application/json": {"schema": {"type": "object"}}},
            },
            "400": _ERROR,
            "413": _ERROR,
            "415": _ERROR,
            "503": {**_ERROR, "description": "Queue full; retry after the Retry-After seconds"},
        },
    }
