"""jacal: how sensitive is a trained classifier to its input, and what to do with it.

Per-point sensitivity metrics (:func:`jacobian_norm`, :func:`transitions`), the Novak et al. 2018
replication (``jacal.replication``), and acquisition for labeling pipelines (:func:`acquire`). The
common names are importable from ``jacal`` itself; each subpackage's ``__all__`` lists the rest, and
the API reference in the docs is generated from those lists.

Errors a user can fix are :class:`JacalError` (a ``ValueError``) or ``TypeError``, in one line.
"""
import importlib
from typing import Any

from jacal._internal.validation import JacalError
from jacal.acquisition import (STRATEGIES, AcquisitionResult, Selection, Strategy, acquire, modal_query_strategy,
                               register_strategy)
from jacal.data import DATASETS, Splits, load_dataset, register_dataset
from jacal.models import MLP, Checkpoint, SmallCNN, cnn, load_checkpoint, load_model_file, mlp, save_checkpoint
from jacal.sensitivity import (
    TransitionResult,
    activation_codes,
    ellipse,
    jacobian_embedding,
    jacobian_gram,
    jacobian_norm,
    random_ellipse,
    transitions,
)
from jacal.features import Need, PoolFeatures, extract_features
from jacal.training import TrainResult, evaluate, train

__version__ = "0.1.0"

# Heavier parts (scikit-learn, matplotlib, sqlite stores) load on first use: ``import jacal`` stays quick.
_LAZY = {
    "get_backend": "jacal.backends",
    "open_pool": "jacal.io", "read_annotations": "jacal.io", "write_batch": "jacal.io",
    "confidence_from": "jacal.confidence", "ConfidenceEstimator": "jacal.confidence",
    "run_replication": "jacal.replication",
    "run_loop": "jacal.loop", "LoopConfig": "jacal.loop",
    "build_scenario": "jacal.scenarios", "ScenarioPool": "jacal.scenarios",
}
_SUBMODULES = ("acquisition", "augment", "backends", "confidence", "data", "features", "io", "loop",
               "models", "pipeline", "population", "replication", "scenarios", "sensitivity", "shift", "training")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"jacal.{name}")
    raise AttributeError(f"module 'jacal' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))

__all__ = [
    "JacalError",
    "acquire", "AcquisitionResult", "STRATEGIES", "Strategy", "Selection", "register_strategy", "modal_query_strategy",
    "Need", "PoolFeatures", "extract_features",
    "jacobian_norm", "jacobian_embedding", "jacobian_gram", "transitions", "activation_codes", "TransitionResult", "ellipse", "random_ellipse",
    "load_dataset", "register_dataset", "Splits", "DATASETS",
    "MLP", "SmallCNN", "mlp", "cnn",
    "train", "evaluate", "TrainResult",
    "save_checkpoint", "load_checkpoint", "load_model_file", "Checkpoint",
    *_LAZY,
]
