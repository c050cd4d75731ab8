"""Uncertainty scores on arrays: no model object needed (higher = acquire first).

Each takes class probabilities ``probs (N, K)`` (rows summing to 1), numpy or torch, and returns
``(N,)`` float64 numpy scores, so any labeling pipeline can call them on its own predictions.
"""
from __future__ import annotations

import numpy as np

from jacal._validation import check_probabilities

__all__ = ["least_confidence", "margin", "entropy", "bald", "max_softmax"]


def max_softmax(probs) -> np.ndarray:
    """``max_k p_k`` ``(N,)``: a confidence, not an acquisition score."""
    return check_probabilities("probs", probs).max(axis=1)


def least_confidence(probs) -> np.ndarray:
    """``1 − max_k p_k``."""
    return 1.0 - max_softmax(probs)


def margin(probs) -> np.ndarray:
    """``−(p_(1) − p_(2))``: a small gap between the two top classes scores high."""
    p = np.sort(check_probabilities("probs", probs), axis=1)
    return -(p[:, -1] - p[:, -2])


def entropy(probs) -> np.ndarray:
    """Predictive entropy ``−Σ_k p_k log p_k`` (nats)."""
    p = check_probabilities("probs", probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)


def bald(mc_probs) -> np.ndarray:
    """BALD mutual information from MC-dropout samples ``mc_probs (T, N, K)``.

    ``H(mean_t p_t) − mean_t H(p_t)`` (Houlsby et al. 2011; Gal et al. 2017).
    """
    p = check_probabilities("mc_probs", mc_probs, ndim=3)
    if p.shape[0] < 2:
        raise ValueError(f"Expected at least 2 MC samples in `mc_probs`, got shape {p.shape}.")
    mean = p.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h_mean = -np.sum(np.where(mean > 0, mean * np.log(mean), 0.0), axis=1)
        h_each = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=2).mean(axis=0)
    return np.maximum(h_mean - h_each, 0.0)
