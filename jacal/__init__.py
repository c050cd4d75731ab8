"""jacal: how sensitive is a trained classifier to its input, and what to do with it.

The public surface: per-point sensitivity metrics (:func:`jacobian_norm`, :func:`transitions`,
:func:`activation_codes`, :func:`ellipse`, :func:`random_ellipse`), datasets
(:func:`load_dataset`), models (:func:`mlp`, :func:`cnn`), training (:func:`train`),
checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`), acquisition (:func:`acquire`), and
``jacal.io`` for labeling pipelines (pools from arrays, image folders and manifests; Label Studio and
Argilla tasks out, their exports back in).
"""
from jacal._validation import JacalError
from jacal.acquisition import STRATEGIES, AcquisitionResult, acquire, modal_query_strategy, register_strategy
from jacal.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from jacal.data import DATASETS, Splits, load_dataset, register_dataset
from jacal.models import MLP, SmallCNN, cnn, mlp
from jacal.sensitivity import (
    TransitionResult,
    activation_codes,
    ellipse,
    jacobian_embedding,
    jacobian_norm,
    random_ellipse,
    transitions,
)
from jacal.training import TrainResult, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "JacalError",
    "acquire", "AcquisitionResult", "STRATEGIES", "register_strategy", "modal_query_strategy",
    "jacobian_norm", "jacobian_embedding", "transitions", "activation_codes", "TransitionResult", "ellipse", "random_ellipse",
    "load_dataset", "register_dataset", "Splits", "DATASETS",
    "MLP", "SmallCNN", "mlp", "cnn",
    "train", "evaluate", "TrainResult",
    "save_checkpoint", "load_checkpoint", "Checkpoint",
]
