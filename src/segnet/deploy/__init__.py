"""Running trained models fast: device and precision (``runtime``), inference-ready copies with
BatchNorm folded (``optimize``), ONNX / ``torch.export`` files (``export``), the ONNX Runtime and
OpenVINO engines (``backends``), int8 quantization (``quantize``) and ``backend="auto"``
(``choose``).

Imports only :mod:`segnet.models` and :mod:`segnet.metrics`; the training and evaluation loops
(:mod:`segnet.engine`) build on it, never the other way round.
"""

from .backends import BACKENDS, DEFAULT_BACKEND, EngineModel, installed_backends
from .export import EXPORT_FORMATS, export_model
from .optimize import InferenceModel, OptimizedModel, fold_batchnorm, optimize_for_inference
from .runtime import (
    DEFAULT_INT8_PLAN,
    INFERENCE_PRECISIONS,
    INT8_PLANS,
    PRECISIONS,
    resolve_device,
    resolve_precision,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_INT8_PLAN",
    "EXPORT_FORMATS",
    "INFERENCE_PRECISIONS",
    "INT8_PLANS",
    "PRECISIONS",
    "EngineModel",
    "InferenceModel",
    "OptimizedModel",
    "export_model",
    "fold_batchnorm",
    "installed_backends",
    "optimize_for_inference",
    "resolve_device",
    "resolve_precision",
]
