"""Training, evaluation and prediction loops, checkpoints, precise BN, run plots, the package's
shipped weights and the built-in demo. Built on ``models``, ``data``, ``metrics`` and ``deploy``;
nothing below imports it."""

from .checkpoint import ModelConfig, load_model, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluate import evaluate
from .inference import Probabilities, predict_probabilities
from .predict import Segmenter, predict_files
from .train import fit
from .weights import available_weights, load_for_inference, load_pretrained

__all__ = [
    "ModelConfig",
    "Probabilities",
    "Segmenter",
    "TrainConfig",
    "available_weights",
    "evaluate",
    "fit",
    "load_for_inference",
    "load_model",
    "load_pretrained",
    "predict_files",
    "predict_probabilities",
    "read_checkpoint",
    "save_checkpoint",
]
