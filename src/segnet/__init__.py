"""SegNet: a deep convolutional encoder-decoder for semantic segmentation (TPAMI 2017)."""

__version__ = "0.1.0"

from .deploy.optimize import optimize_for_inference
from .engine.weights import load_pretrained
from .errors import SegNetError
from .models import build_model, list_models

__all__ = [
    "SegNetError",
    "__version__",
    "build_model",
    "list_models",
    "load_pretrained",
    "optimize_for_inference",
]
