"""Uncertainty scores on arrays: no model object needed (higher = acquire first).

Each takes class probabilities ``probs (N, K)`` (rows summing to 1), numpy or torch, and returns
``(N,)`` float64 numpy scores, so any labeling pipeline can call them on its own predictions.
"""
from __future__ import annotations

from jacal._internal.scores import bald, entropy, least_confidence, margin, max_softmax

__all__ = ["least_confidence", "margin", "entropy", "bald", "max_softmax"]
