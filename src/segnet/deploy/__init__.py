"""Running trained models fast: device and precision (``runtime``), inference-ready copies with
BatchNorm folded (``optimize``), and ONNX / ``torch.export`` files (``export``).

Imports only :mod:`segnet.models`; the training and evaluation loops (:mod:`segnet.engine`) build
on it, never the other way round.
"""

from .export import EXPORT_FORMATS, export_model
from .optimize import InferenceModel, fold_batchnorm, optimize_for_inference
from .runtime import PRECISIONS, resolve_device, resolve_precision

__all__ = [
    "EXPORT_FORMATS",
    "PRECISIONS",
    "InferenceModel",
    "export_model",
    "fold_batchnorm",
    "optimize_for_inference",
    "resolve_device",
    "resolve_precision",
]
