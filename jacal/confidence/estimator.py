"""A model-level confidence estimator over the array core, and its file format.

:class:`ConfidenceEstimator` runs the model pass a method needs (:func:`confidence_features`, a call
of the one feature pass, :func:`jacal.features.extract_features`), then the array core (:mod:`jacal.confidence.core`). Its verbs take a *model and items*, so they are
named for what they do, not after scikit-learn's ``fit``/``predict_proba`` (whose contract is arrays
in): :meth:`~ConfidenceEstimator.learn`, :meth:`~ConfidenceEstimator.predict_confidence`,
:meth:`~ConfidenceEstimator.probability_correct`. Arrays-in users call
:func:`~jacal.confidence.confidence_from` and :func:`~jacal.confidence.fit_confidence` directly.

A fitted estimator saves to one file (:meth:`~ConfidenceEstimator.save`): ``torch.save`` of a dict of
tensors and plain values, read back with ``weights_only=True`` (no pickled code), carrying the
method, its options, the state and a fingerprint of the model's weights it was fitted with.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from jacal._internal.validation import JacalError, check_choice, check_positive_int, first_line
from jacal.confidence.core import FITTED, METHODS, NEEDS_LABELS, PROBABILISTIC, confidence_from, fit_confidence, inputs_of
from jacal.confidence.metrics import confidence_metrics
from jacal.features import Need, extract_features, pool_length
from jacal.models.checkpoint import read_tagged, write_tagged

__all__ = ["ConfidenceEstimator", "ConfidenceFeatures", "confidence_features"]

#: what each confidence input is called in the feature pass
INPUTS = {"embeddings": Need.EMBEDDINGS, "gram": Need.GRAM, "jacobian": Need.JACOBIAN, "odin_logits": Need.ODIN_LOGITS}

FORMAT = "jacal-confidence-estimator"
VERSION = 1
_STATE_KEYS = {"temperature": ("temperature",), "mahalanobis": ("means", "precision"), "knn": ("bank", "k"),
               "jacobian-residual": ("coef",), "jacobian-noise": ("sigma2",), "combined": ("mean", "scale", "coef", "intercept")}


@dataclass
class ConfidenceFeatures:
    """Per-item arrays (float64 unless noted), ``None`` where not asked for."""

    logits: np.ndarray                         # (N, K)
    embeddings: Optional[np.ndarray] = None    # (N, d) float32, the input of the last nn.Linear
    gram: Optional[np.ndarray] = None          # (N, K, K) J Jᵀ of the logits' Jacobian
    jacobian: Optional[np.ndarray] = None      # (N,) ‖∂softmax/∂x‖_F
    odin_logits: Optional[np.ndarray] = None   # (N, K) logits at ODIN's perturbed input

    def arrays(self) -> dict:
        """The keyword arguments of :func:`jacal.confidence.confidence_from` / ``fit_confidence``."""
        return {"logits": self.logits, "embeddings": self.embeddings, "gram": self.gram, "jacobian": self.jacobian,
                "odin_logits": self.odin_logits}


def confidence_features(model: nn.Module, x: Any, *, need: Iterable[str] = (), batch_size: int = 256, device=None,
                        odin_temperature: float = 1000.0, odin_epsilon: float = 0.002) -> ConfidenceFeatures:
    """Logits and whatever else ``need``s (a subset of ``{"embeddings", "gram", "jacobian", "odin_logits"}``).

    One call of the feature pass (:func:`jacal.features.extract_features`), which reads ``x`` chunk by
    chunk; the confidence methods take every item's prediction, so an item with NaN or Inf is refused.

    Args:
        model: a classifier ``(N, ...) → (N, K)``; left as found (a train-mode model with dropout or
            BatchNorm is refused, as everywhere in jacal).
        x: items ``(N, ...)``: tensor, numpy array, Dataset or DataLoader (not shuffled).
        batch_size: items per chunk; every array is computed chunk by chunk.
        device: ``None`` (the model's), ``"auto"``, ``"cpu"``, ``"cuda"``...

    Raises:
        ValueError: non-finite items (named by index), items the model rejects, an empty pool.
    """
    need = set(need)
    unknown = need - set(INPUTS)
    if unknown:
        raise ValueError(f"Expected `need` to be a subset of {list(INPUTS)}, got {sorted(unknown)}.")
    check_positive_int("batch_size", batch_size)
    if pool_length(x) == 0:
        raise ValueError("`x` is empty: nothing to score.")
    f = extract_features(model, x, need={Need.LOGITS} | {INPUTS[name] for name in need}, batch_size=batch_size,
                         device=device, odin_temperature=odin_temperature, odin_epsilon=odin_epsilon)
    if not f.finite.all():
        idx = np.flatnonzero(~f.finite).tolist()
        more = " ..." if len(idx) > 5 else ""
        raise ValueError(f"`x` contains NaN or Inf in row(s) {', '.join(map(str, idx[:5]))}{more}.")
    return ConfidenceFeatures(logits=f.logits, **{name: getattr(f, name) for name in need})


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a model's parameter values in their iteration order."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class ConfidenceEstimator:
    """Per-prediction confidence of a classifier: higher = more likely correct.

    Args:
        method: one of :data:`jacal.confidence.METHODS` (defined in :mod:`jacal.confidence.core`).
            ``temperature``, ``jacobian-residual`` and ``combined`` learn from a held-out labeled
            split, ``mahalanobis`` and ``knn`` from the training data (:meth:`learn`).
        k: the neighbour rank of ``knn``.
        odin_temperature, odin_epsilon: ODIN's T and input step (for inputs in [0, 1]).
        batch_size, device: of the model pass.
        seed: seeds the logistic regression of ``combined``.

    Learned state: ``state_`` (a dict of arrays), ``n_classes_``, ``model_fingerprint_``.

    Example:
        >>> import torch, jacal
        >>> from jacal.confidence import ConfidenceEstimator
        >>> model = jacal.mlp(8, 3, width=8, depth=1, seed=0).eval()
        >>> ConfidenceEstimator("energy").predict_confidence(model, torch.rand(4, 8)).shape
        (4,)
    """

    def __init__(self, method: str = "max-softmax", *, k: int = 10, odin_temperature: float = 1000.0,
                 odin_epsilon: float = 0.002, batch_size: int = 256, device=None, seed: int = 0) -> None:
        self.method = method
        self.k = k
        self.odin_temperature = odin_temperature
        self.odin_epsilon = odin_epsilon
        self.batch_size = batch_size
        self.device = device
        self.seed = seed

    # -- the model pass -------------------------------------------------------------------------
    def features(self, model: nn.Module, x: Any) -> ConfidenceFeatures:
        """The arrays this method needs for items ``x (N, ...)`` (logits always)."""
        check_choice("method", self.method, METHODS)
        return confidence_features(model, x, need=inputs_of(self.method), batch_size=self.batch_size,
                                   device=self.device, odin_temperature=self.odin_temperature,
                                   odin_epsilon=self.odin_epsilon)

    # -- learning -------------------------------------------------------------------------------
    def learn(self, model: nn.Module, x: Any, y: Any = None) -> "ConfidenceEstimator":
        """Learn this method's state from items ``x (N, ...)`` and labels ``y (N,)``.

        ``x`` is a held-out labeled split for ``temperature`` and ``combined`` (``jacobian-residual``
        needs no labels), the training data for ``mahalanobis`` (labels) and ``knn`` (no labels).
        Methods without state only record the model's fingerprint.
        """
        check_choice("method", self.method, METHODS)
        if self.method in NEEDS_LABELS and y is None:
            raise ValueError(f"method {self.method!r} learns from labeled {FITTED[self.method]} data: pass `y`.")
        if self.method in FITTED:
            self.learn_from(self.features(model, x), y)
        else:
            self.state_ = {}
        self.model_fingerprint_ = model_fingerprint(model)
        return self

    def learn_from(self, features: ConfidenceFeatures, y: Any = None) -> "ConfidenceEstimator":
        """:meth:`learn` from already computed features (no model pass)."""
        check_choice("method", self.method, METHODS)
        arrays = features.arrays()
        arrays.pop("odin_logits")
        self.state_ = fit_confidence(**arrays, y=y, method=self.method, k=self.k, seed=self.seed)
        self.n_classes_ = int(features.logits.shape[1])
        return self

    # -- scoring --------------------------------------------------------------------------------
    def _check_ready(self, model: Optional[nn.Module]) -> None:
        check_choice("method", self.method, METHODS)
        if self.method in FITTED and not getattr(self, "state_", None):
            raise ValueError(f"the {self.method!r} estimator is not fitted: call learn(model, x, y) on "
                             f"{FITTED[self.method]} data first.")
        fp = getattr(self, "model_fingerprint_", None)
        if model is not None and fp is not None and self.method in FITTED and model_fingerprint(model) != fp:
            raise ValueError(f"this {self.method!r} estimator was fitted on another model (its weights differ); "
                             "learn it again for this model.")

    def confidence_from_features(self, features: ConfidenceFeatures) -> np.ndarray:
        """Confidence ``(N,)`` from already computed features (no model pass)."""
        self._check_ready(None)
        return confidence_from(**features.arrays(), method=self.method, state=getattr(self, "state_", None),
                               odin_temperature=self.odin_temperature)

    def confidence_and_prediction(self, model: nn.Module, x: Any) -> Tuple[np.ndarray, np.ndarray]:
        """``(confidence (N,), predicted class (N,))`` from one pass over ``x``."""
        self._check_ready(model)
        feats = self.features(model, x)
        return self.confidence_from_features(feats), feats.logits.argmax(1)

    def predict_confidence(self, model: nn.Module, x: Any) -> np.ndarray:
        """Confidence ``(N,)``: higher = more likely correct."""
        return self.confidence_and_prediction(model, x)[0]

    def probability_correct(self, model: nn.Module, x: Any) -> np.ndarray:
        """P(the prediction is correct) ``(N,)``; for ``max-softmax``, ``temperature`` and ``combined``."""
        if self.method not in PROBABILISTIC:
            raise ValueError(f"method {self.method!r} does not output a probability; use predict_confidence "
                             f"(probabilities: {', '.join(PROBABILISTIC)}).")
        return self.predict_confidence(model, x)

    def evaluate(self, model: nn.Module, x: Any, y: Any) -> Dict[str, float]:
        """Metrics of this estimator on labeled data."""
        conf, pred = self.confidence_and_prediction(model, x)
        return self.metrics(conf, pred, y)

    def metrics(self, confidence, predicted, y) -> Dict[str, float]:
        """Metrics from already computed confidences and predictions (no model pass)."""
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
        if len(y) != len(predicted):
            raise ValueError(f"Expected one label per item: {len(predicted)} items, {len(y)} labels.")
        return confidence_metrics(confidence, np.asarray(predicted) == y, probabilistic=self.method in PROBABILISTIC)

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: Union[str, Path]) -> Path:
        """Write this (learned) estimator to ``path`` atomically; read it back with :meth:`load`."""
        self._check_ready(None)
        if not hasattr(self, "model_fingerprint_"):
            raise ValueError("this estimator has not been learned on a model: call learn(model, x, y) before save.")
        payload = {"format": FORMAT, "version": VERSION, "method": self.method,
                   "params": {"k": int(self.k), "odin_temperature": float(self.odin_temperature),
                              "odin_epsilon": float(self.odin_epsilon), "seed": int(self.seed)},
                   "state": {k: torch.from_numpy(np.array(v)) for k, v in self.state_.items()},
                   "model_fingerprint": self.model_fingerprint_}
        return write_tagged(path, payload)

    @classmethod
    def load(cls, path: Union[str, Path], *, batch_size: int = 256, device=None) -> "ConfidenceEstimator":
        """Read an estimator written by :meth:`save` (tensors and plain values only).

        Raises:
            JacalError: a missing, unreadable or foreign file, or an incomplete state.
        """
        path = Path(path)
        payload = read_tagged(path, FORMAT, "estimator file", "jacal confidence estimator")
        try:
            method, params, state = payload["method"], dict(payload["params"]), dict(payload["state"])
            check_choice("method", method, METHODS)
            missing = [k for k in _STATE_KEYS.get(method, ()) if k not in state]
            if missing:
                raise ValueError(f"its {method!r} state lacks {', '.join(missing)}")
            est = cls(method, k=int(params["k"]), odin_temperature=float(params["odin_temperature"]),
                      odin_epsilon=float(params["odin_epsilon"]), seed=int(params["seed"]), batch_size=batch_size,
                      device=device)
            est.state_ = {k: v.numpy() for k, v in state.items()}
            est.model_fingerprint_ = str(payload["model_fingerprint"])
            if "n_classes" in est.state_:
                est.n_classes_ = int(est.state_["n_classes"])
        except (KeyError, ValueError, TypeError, AttributeError) as err:
            raise JacalError(f"corrupt estimator file: {path} ({first_line(err)})") from err
        return est
