"""Stopping criteria on the model's uncertainty (Zhu et al. 2008): the normalized entropy
``H(p)/log K`` of the items just picked (its largest) or of the whole stop set (its mean).
"""
from __future__ import annotations

import math

import numpy as np

from jacal.stopping.base import Criterion


def _entropy_normalized(p: np.ndarray) -> np.ndarray:
    """``H(p) / log K`` per row ``(n,)`` in [0, 1]."""
    k = p.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return h / math.log(k) if k > 1 else np.zeros(len(p))


class MaxUncertainty(Criterion):
    """Zhu et al. 2008: the most uncertain of the items just picked (normalized entropy) ≤ threshold."""

    name = "max-uncertainty"
    params = {"threshold": 0.1}
    uses_picked = True

    def _decide(self, obs, labeled):
        p = obs.picked_probs if obs.picked_probs is not None and len(obs.picked_probs) else obs.probs
        where = "of the picked items" if p is not obs.probs else "on the stop set"
        v = float(_entropy_normalized(p).max())
        t = self.config["threshold"]
        stop = v <= t
        reason = f"{'stop' if stop else 'continue'}: max uncertainty {where} {v:.4f} {'≤' if stop else '>'} {t:g}"
        return stop, v, reason, {"over": "picked" if p is not obs.probs else "stop set"}


class OverallUncertainty(Criterion):
    """Zhu et al. 2008: the mean normalized entropy over the stop set ≤ threshold."""

    name = "overall-uncertainty"
    params = {"threshold": 0.05}

    def _decide(self, obs, labeled):
        v = float(_entropy_normalized(obs.probs).mean())
        t = self.config["threshold"]
        stop = v <= t
        reason = f"{'stop' if stop else 'continue'}: mean uncertainty on the stop set {v:.4f} {'≤' if stop else '>'} {t:g}"
        return stop, v, reason, {}
