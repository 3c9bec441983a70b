"""SegNet: a deep convolutional encoder-decoder for semantic segmentation (TPAMI 2017)."""

from .errors import SegNetError
from .inference import optimize_for_inference
from .models import build_model, list_models
from .pretrained import load_pretrained

__all__ = ["SegNetError", "build_model", "list_models", "load_pretrained", "optimize_for_inference"]
__version__ = "0.1.0"
