"""jacal: how sensitive is a trained classifier to its input, and what to do with it.

Everything public, one hop from here (names in ``jacal.<module>``; the common ones also as ``jacal.<name>``):

Sensitivity core (``jacal.sensitivity``)
    :func:`jacobian_norm` (per-point ‖∂softmax/∂x‖_F, exact, any classifier), :func:`jacobian_embedding`,
    :func:`jacobian_gram` (``J Jᵀ`` of the logits), :func:`transitions` (→ :class:`TransitionResult`) and
    :func:`activation_codes` (linear-region transitions along :func:`ellipse` / :func:`random_ellipse` trajectories).
Data, models, training
    :func:`load_dataset` → :class:`Splits`, :func:`register_dataset`, :data:`DATASETS` (``jacal.data``;
    digits offline, MNIST, Fashion-MNIST, CIFAR-10 through torchvision), :func:`mlp` / :class:`MLP`,
    :func:`cnn` / :class:`SmallCNN` (``jacal.models``), :func:`train` → :class:`TrainResult` (early
    stopping with ``val=``, ``patience=``), :func:`evaluate` (``jacal.training``), :func:`save_checkpoint`,
    :func:`load_checkpoint` → :class:`Checkpoint`,
    :func:`load_model_file` (``jacal.checkpoint``: jacal checkpoints, TorchScript, ``torch.export``),
    populations of MLPs trained at once (``jacal.population``), augmentations (``jacal.augment``).
Acquisition (``jacal.acquisition``)
    :func:`acquire` → :class:`AcquisitionResult`; the strategies in :data:`STRATEGIES`; a new one
    subclasses :class:`Strategy`, reads the feature pass (``jacal.features``: :class:`Need`,
    :class:`PoolFeatures`, :func:`extract_features`), returns a :class:`Selection` and is made
    available by :func:`register_strategy` (``examples/custom_strategy.py``); array scores for any
    pipeline (``jacal.acquisition.scores``); :func:`modal_query_strategy` for modAL; local or Ray
    execution (``jacal.backends``: :func:`get_backend`). Open pools: ``acquire(..., out_of_set=...)``
    hears which items came back "none of these", calibrates from them the probability that an item
    can be labeled (``jacal.confidence.openset``) and applies an open-pool layer under any strategy
    (``open_set``: ``"class-floor"``, ``"weight"``, ``"off"``); a first batch with
    nothing labeled comes from ``jacal.acquisition.coldstart``.
Labeling pipelines (``jacal.io``)
    pools from arrays, image folders and manifests (:func:`open_pool`), Label Studio / Argilla / CSV
    annotations back in (:func:`read_annotations`), batches out in every format (:func:`write_batch`);
    each command's step on files in one call (``jacal.pipeline``: a pool file in, a batch file out);
    a live loop inside Label Studio as its ML backend (``jacal.serve``, ``jacal serve``; the ``serve`` extra).
Confidence (``jacal.confidence``)
    :func:`confidence_from` (arrays in), :class:`ConfidenceEstimator` (fit, save, load), failure and
    OOD metrics; MNIST-C-style corruptions and offline far-OOD sets in ``jacal.shift``.
Experiments
    the Novak et al. 2018 replication (``jacal.replication``: :func:`run_replication`) and simulated
    active-learning loops with learning curves (``jacal.loop``: :func:`run_loop`, :class:`LoopConfig`)
    on the pools teams have (``jacal.scenarios``: :func:`build_scenario` → :class:`ScenarioPool`: open
    sets, long tails, repeated items, frozen embeddings, larger images).

Errors a user can fix are :class:`JacalError` (a ``ValueError``) or ``TypeError``, in one line.
"""
import importlib
from typing import Any

from jacal._validation import JacalError
from jacal.acquisition import (STRATEGIES, AcquisitionResult, Selection, Strategy, acquire, modal_query_strategy,
                               register_strategy)
from jacal.checkpoint import Checkpoint, load_checkpoint, load_model_file, save_checkpoint
from jacal.data import DATASETS, Splits, load_dataset, register_dataset
from jacal.models import MLP, SmallCNN, cnn, mlp
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
_SUBMODULES = ("acquisition", "augment", "backends", "checkpoint", "confidence", "data", "features", "io", "loop",
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
