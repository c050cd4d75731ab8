"""jacal's stopping criteria on the geometry of the stop set (they need :func:`~jacal.stopping.base.observe`
with ``geometry=True``): which decision boundary each item sits against (its nearest-boundary class
pair ``{a, b}``, compared between rounds like the predictions are) and how many items sit within
``δ`` of one.
"""
from __future__ import annotations

import numpy as np

from jacal.stopping.base import Criterion, Observation
from jacal.stopping.predictions import _AgreementCriterion, _SettledCriterion


def _pair_labels(obs: Observation) -> np.ndarray:
    """Each stop-set item's nearest-boundary class pair ``{a, b}`` as one label ``min·K + max``."""
    a, b = np.minimum(obs.predictions, obs.runner_up), np.maximum(obs.predictions, obs.runner_up)
    return a * obs.probs.shape[1] + b


class BoundaryPairs(_AgreementCriterion):
    """jacal: κ of successive rounds' nearest-boundary class pairs ``{a, b}`` on the stop set."""

    name = "boundary-pairs"
    what = "κ(boundary pairs)"

    def _labels(self, obs):
        return _pair_labels(obs)


class BoundaryShare(Criterion):
    """jacal: the share of the stop set within ``δ`` of a decision boundary has stopped falling.

    ``δ`` is fixed at the first round: the stop set's median first-order distance then (so the
    share starts at ½ and is in the model's input units, whatever their scale). While the model
    still learns, items move away from the boundaries and the share falls; stop once it fell by at
    most ``tolerance`` in each of the last ``window`` rounds.
    """

    name = "boundary-share"
    params = {"tolerance": 0.005, "window": 3}
    geometry = True

    def _decide(self, obs, labeled):
        d = obs.boundary_distance
        if "delta" not in self.memory_:
            self.memory_["delta"] = float(np.median(d))
        delta = self.memory_["delta"]
        share = float(np.mean(d <= delta))
        prev = self.memory_.get("share")
        self.memory_["share"] = share
        if prev is None:
            return False, share, f"continue: first round, {share:.2%} of the stop set within δ={delta:.4g}", \
                {"delta": delta, "run": 0}
        drop = prev - share
        ok = drop <= self.config["tolerance"]
        stop, run = self._windowed(ok)
        w, t = self.config["window"], self.config["tolerance"]
        verb = "stop" if stop else "continue"
        reason = (f"{verb}: {share:.2%} of the stop set within δ={delta:.4g} of a boundary, "
                  f"{'fell' if drop > 0 else 'rose'} {abs(drop):.2%} (fall ≤ {t:.2%}: {run} of {w} rounds)")
        return stop, share, reason, {"delta": delta, "drop": drop, "run": run, "_ok": ok}


class SettledBoundaries(_SettledCriterion):
    """jacal: the stop set's nearest-boundary class pairs ``{a, b}`` change no more over ``lag`` rounds than over one."""

    name = "settled-boundaries"
    what = "boundary pairs"

    def _labels(self, obs):
        return _pair_labels(obs)
