"""Metrics of a confidence score: failure detection, selective risk, calibration, OOD detection.

Failure metrics take ``(confidence, correct)`` pairs (higher confidence = "more likely correct"):

* ``failure_auroc``: AUROC of ``−confidence`` for detecting errors (scikit-learn's ``roc_auc_score``);
* ``aurc``: area under the risk–coverage curve (Geifman & El-Yaniv 2017): sort by confidence,
  risk at coverage i/N is the error rate of the i most confident, averaged over i;
* ``e_aurc``: AURC minus the AURC of a perfect ranking with the same error rate;
* ``fpr_at_95_tpr``: the fraction of errors accepted when 95% of correct predictions are kept
  (from scikit-learn's ``roc_curve``);
* ``ece``: expected calibration error with equal-width bins (only for probabilities).

Out-of-distribution metrics take the confidences of in-distribution items and of OOD items:
``ood_auroc`` is the AUROC of confidence for telling them apart (in-distribution = positive), and
``ood_fpr_at_95_tpr`` the fraction of OOD items still accepted at the threshold that keeps 95% of
the in-distribution items.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["failure_auroc", "aurc", "e_aurc", "fpr_at_95_tpr", "ece", "confidence_metrics", "ood_auroc",
           "ood_fpr_at_95_tpr", "ood_metrics"]


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


def _in_out(confidence_in, confidence_out):
    c_in = np.asarray(confidence_in, dtype=np.float64).reshape(-1)
    c_out = np.asarray(confidence_out, dtype=np.float64).reshape(-1)
    if len(c_in) == 0 or len(c_out) == 0:
        raise ValueError(f"Expected in-distribution and OOD confidences, got {len(c_in)} and {len(c_out)} items.")
    return np.r_[c_in, c_out], np.r_[np.ones(len(c_in), bool), np.zeros(len(c_out), bool)]


def ood_auroc(confidence_in, confidence_out) -> float:
    """AUROC of confidence for separating in-distribution items (positives) from OOD items (0.5 = chance)."""
    c, is_in = _in_out(confidence_in, confidence_out)
    return failure_auroc(c, is_in)


def ood_fpr_at_95_tpr(confidence_in, confidence_out) -> float:
    """Fraction of OOD items accepted at the threshold that keeps ≥ 95% of the in-distribution items."""
    c, is_in = _in_out(confidence_in, confidence_out)
    return fpr_at_95_tpr(c, is_in)


def ood_metrics(confidence_in, confidence_out) -> Dict[str, float]:
    """``{"ood_auroc", "ood_fpr_at_95_tpr"}`` as a dict."""
    return {"ood_auroc": ood_auroc(confidence_in, confidence_out),
            "ood_fpr_at_95_tpr": ood_fpr_at_95_tpr(confidence_in, confidence_out)}
