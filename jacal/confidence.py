"""Confidence estimators (which predictions to trust, which to send to human review) and their metrics.

Estimators follow scikit-learn's contract: the constructor stores, :meth:`ConfidenceEstimator.fit`
learns (``logreg_``), and higher confidence means "more likely correct".

Metrics take ``(confidence, correct)`` pairs:

* ``failure_auroc``: AUROC of ``−confidence`` for detecting errors (scikit-learn's ``roc_auc_score``);
* ``aurc``: area under the risk–coverage curve (Geifman & El-Yaniv 2017): sort by confidence,
  risk at coverage i/N is the error rate of the i most confident, averaged over i;
* ``e_aurc``: AURC minus the AURC of a perfect ranking with the same error rate;
* ``fpr_at_95_tpr``: the fraction of errors accepted when 95% of correct predictions are kept
  (from scikit-learn's ``roc_curve``);
* ``ece``: expected calibration error with equal-width bins (only for probabilities).
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve

from jacal._validation import check_choice
from jacal.acquisition import scores as S
from jacal.acquisition._features import extract_features

__all__ = ["ConfidenceEstimator", "METHODS", "failure_auroc", "aurc", "e_aurc", "fpr_at_95_tpr", "ece",
           "confidence_metrics"]

METHODS = ("max_softmax", "entropy", "margin", "jacobian", "combined")
PROBABILISTIC = ("max_softmax", "combined")


def _pairs(confidence, correct):
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    y = np.asarray(correct).reshape(-1)
    if c.shape != y.shape:
        raise ValueError(f"Expected `confidence` and `correct` of one length, got {c.shape[0]} and {y.shape[0]}.")
    if len(c) == 0:
        raise ValueError("Expected at least one (confidence, correct) pair, got none.")
    if not np.isfinite(c).all():
        raise ValueError("`confidence` contains NaN or Inf.")
    if not np.isin(y, (0, 1, True, False)).all():
        raise ValueError("Expected `correct` to hold 0/1 or booleans.")
    return c, y.astype(bool)


def failure_auroc(confidence, correct) -> float:
    """AUROC of low confidence as a detector of errors (0.5 = chance). NaN if all or none are correct."""
    c, y = _pairs(confidence, correct)
    if y.all() or (~y).all():
        return float("nan")
    return float(roc_auc_score(~y, -c))


def aurc(confidence, correct) -> float:
    """Area under the risk–coverage curve (lower is better)."""
    c, y = _pairs(confidence, correct)
    order = np.argsort(-c, kind="stable")
    errors = np.cumsum(~y[order])
    return float(np.mean(errors / np.arange(1, len(c) + 1)))


def e_aurc(confidence, correct) -> float:
    """Excess AURC over an oracle that ranks every error last."""
    c, y = _pairs(confidence, correct)
    n_err = int((~y).sum())
    oracle = np.r_[np.zeros(len(y) - n_err), np.ones(n_err)]
    best = float(np.mean(np.cumsum(oracle) / np.arange(1, len(y) + 1)))
    return aurc(c, y) - best


def fpr_at_95_tpr(confidence, correct) -> float:
    """Fraction of errors kept at the threshold that keeps ≥ 95% of the correct predictions."""
    c, y = _pairs(confidence, correct)
    if y.all() or (~y).all():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, c)
    return float(fpr[np.searchsorted(tpr, 0.95, side="left")])


def ece(probability, correct, *, n_bins: int = 15) -> float:
    """Expected calibration error of a probability of being correct (equal-width bins)."""
    p, y = _pairs(probability, correct)
    if (p < 0).any() or (p > 1).any():
        raise ValueError("`probability` must lie in [0, 1] for ECE.")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            total += sel.mean() * abs(p[sel].mean() - y[sel].mean())
    return float(total)


def confidence_metrics(confidence, correct, *, probabilistic: bool = False) -> Dict[str, float]:
    """All metrics above as a dict (``ece`` only when ``probabilistic``)."""
    out = {"n": int(len(np.asarray(correct))), "accuracy": float(np.mean(np.asarray(correct).astype(bool))),
           "failure_auroc": failure_auroc(confidence, correct), "aurc": aurc(confidence, correct),
           "e_aurc": e_aurc(confidence, correct), "fpr_at_95_tpr": fpr_at_95_tpr(confidence, correct)}
    if probabilistic:
        out["ece"] = ece(confidence, correct)
    return out


class ConfidenceEstimator:
    """Per-prediction confidence of a classifier.

    Args:
        method: ``"max_softmax"`` (default), ``"entropy"`` (negated), ``"margin"`` (top-1 minus
            top-2 probability), ``"jacobian"`` (negated log Jacobian norm: sensitive points are
            less trustworthy), or ``"combined"``: logistic regression on (max softmax, log ‖J‖)
            fitted with :meth:`fit` on a held-out labeled split, giving P(correct).
        batch_size, device, seed: passed to the feature pass.

    Example:
        >>> import torch, jacal
        >>> from jacal.confidence import ConfidenceEstimator
        >>> model = jacal.mlp(8, 3, width=8, depth=1, seed=0).eval()
        >>> ConfidenceEstimator("max_softmax").predict_confidence(model, torch.rand(4, 8)).shape
        (4,)
    """

    def __init__(self, method: str = "max_softmax", *, batch_size: int = 256, device=None, seed: int = 0) -> None:
        self.method = method
        self.batch_size = batch_size
        self.device = device
        self.seed = seed

    def _features(self, model, x) -> Dict[str, np.ndarray]:
        check_choice("method", self.method, METHODS)
        need = {"jacobian"} if self.method in ("jacobian", "combined") else set()
        f = extract_features(model, x, need=need, batch_size=self.batch_size, device=self.device, seed=self.seed)
        if not f.finite.all():
            bad = np.flatnonzero(~f.finite)
            raise ValueError(f"`x` contains NaN or Inf in {len(bad)} row(s): {', '.join(map(str, bad[:5]))}.")
        out = {"probs": f.probs}
        if f.jacobian is not None:
            out["log_jacobian"] = np.log(np.maximum(f.jacobian, 1e-30))
        return out

    def _raw(self, feats: Dict[str, np.ndarray]) -> np.ndarray:
        p = feats["probs"]
        if self.method == "max_softmax":
            return S.max_softmax(p)
        if self.method == "entropy":
            return -S.entropy(p)
        if self.method == "margin":
            return -S.margin(p)
        if self.method == "jacobian":
            return -feats["log_jacobian"]
        return self.logreg_.predict_proba(self._design(feats))[:, 1]

    @staticmethod
    def _design(feats: Dict[str, np.ndarray]) -> np.ndarray:
        return np.c_[S.max_softmax(feats["probs"]), feats["log_jacobian"]]

    def fit(self, model, x, y) -> "ConfidenceEstimator":
        """Fit the ``combined`` estimator on a held-out labeled split ``x (N, ...)``, ``y (N,)``.

        Other methods need no fitting; ``fit`` only validates for them.
        """
        feats = self._features(model, x)
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
        if len(y) != len(feats["probs"]):
            raise ValueError(f"Expected one label per item: {len(feats['probs'])} items, {len(y)} labels.")
        correct = feats["probs"].argmax(1) == y
        if self.method == "combined":
            if correct.all() or not correct.any():
                raise ValueError("cannot fit the combined estimator: the held-out split has no errors (or no correct "
                                 "predictions); use a larger split or method='max_softmax'.")
            self.logreg_ = LogisticRegression(random_state=self.seed).fit(self._design(feats), correct)
        self.n_features_in_ = 2 if self.method == "combined" else 1
        return self

    def predict_confidence(self, model, x) -> np.ndarray:
        """Confidence ``(N,)``: higher = more likely correct."""
        return self.confidence_and_prediction(model, x)[0]

    def confidence_and_prediction(self, model, x):
        """``(confidence (N,), predicted class (N,))`` from one pass over ``x``."""
        if self.method == "combined" and not hasattr(self, "logreg_"):
            raise ValueError("the combined estimator is not fitted: call fit(model, x_heldout, y_heldout) first.")
        feats = self._features(model, x)
        return self._raw(feats), feats["probs"].argmax(1)

    def predict_proba(self, model, x) -> np.ndarray:
        """``(N, 2)``: [P(wrong), P(correct)]; only for ``max_softmax`` and ``combined``."""
        if self.method not in PROBABILISTIC:
            raise ValueError(f"method {self.method!r} does not output a probability; use predict_confidence.")
        p = self.predict_confidence(model, x)
        return np.c_[1 - p, p]

    def evaluate(self, model, x, y) -> Dict[str, float]:
        """Metrics of this estimator on labeled data."""
        conf, pred = self.confidence_and_prediction(model, x)
        return self.metrics(conf, pred, y)

    def metrics(self, confidence, predicted, y) -> Dict[str, float]:
        """Metrics from already computed confidences and predictions (no model pass)."""
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
        if len(y) != len(predicted):
            raise ValueError(f"Expected one label per item: {len(predicted)} items, {len(y)} labels.")
        return confidence_metrics(confidence, np.asarray(predicted) == y, probabilistic=self.method in PROBABILISTIC)
