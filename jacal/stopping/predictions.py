"""Stopping criteria on the stop set's predicted classes: agreement between successive rounds
(Cohen's κ, the share that changed class) and the settled test (changes over ``lag`` rounds against
changes over one). The agreement and settled bases also serve the boundary-pair criteria
(:mod:`jacal.stopping.boundaries`), which apply the same tests to the nearest-boundary class pairs.
"""
from __future__ import annotations

import math

import numpy as np

from jacal._internal.validation import check_positive_int
from jacal.stopping.base import Criterion, Observation, kappa


class _AgreementCriterion(Criterion):
    """κ between this round's and the last round's labels of the stop set (``_labels(obs)``)."""

    params = {"threshold": 0.99, "window": 3}
    what = "κ"

    def _labels(self, obs: Observation) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decide(self, obs, labeled):
        cur = self._labels(obs)
        prev = self.memory_.get("labels")
        self.memory_["labels"] = cur
        if prev is None:
            return False, math.nan, "continue: first round, nothing to compare yet", {"run": 0}
        k = kappa(prev, cur)
        ok = k >= self.config["threshold"]
        stop, run = self._windowed(ok)
        reason = self._reason(k, ok, stop, run)
        return stop, k, reason, {"run": run, "changed": float(np.mean(prev != cur)), "_ok": ok}

    def _reason(self, k, ok, stop, run):
        w, t = self.config["window"], self.config["threshold"]
        if stop:
            return f"stop: {self.what} {k:.4f} ≥ {t:g} for {run} rounds in a row (window {w})"
        if ok:
            return f"continue: {self.what} {k:.4f} ≥ {t:g}, {run} of {w} rounds"
        return f"continue: {self.what} {k:.4f} < {t:g}"


class StabilizingPredictions(_AgreementCriterion):
    """Bloodgood & Vijay-Shanker 2009: κ of successive models' predictions on the stop set."""

    name = "stabilizing-predictions"
    what = "κ(predictions)"

    def _labels(self, obs):
        return obs.predictions


class ClassificationChange(Criterion):
    """Zhu et al. 2008: the share of the stop set whose predicted class changed since the last round."""

    name = "classification-change"
    params = {"threshold": 0.0, "window": 1}

    def _decide(self, obs, labeled):
        prev = self.memory_.get("labels")
        self.memory_["labels"] = obs.predictions
        if prev is None:
            return False, math.nan, "continue: first round, nothing to compare yet", {"run": 0}
        share = float(np.mean(prev != obs.predictions))
        ok = share <= self.config["threshold"]
        stop, run = self._windowed(ok)
        w, t = self.config["window"], self.config["threshold"]
        if stop:
            reason = f"stop: {share:.2%} of the stop set changed class (≤ {t:.2%}) for {run} round(s) in a row"
        else:
            reason = f"continue: {share:.2%} of the stop set changed class" + (f" (≤ {t:.2%}, {run} of {w} rounds)"
                                                                                 if ok else f" (> {t:.2%})")
        return stop, share, reason, {"run": run, "_ok": ok}


class _SettledCriterion(Criterion):
    """Learning accumulates across rounds, retraining noise does not: the stop set's labels
    (``_labels(obs)``) disagree with the model ``lag`` rounds back by ``d_lag`` and with the last
    round's by ``d_1``. While the model still learns, ``d_lag`` exceeds ``d_1`` (the changes add
    up); once it has settled, both are the noise of one retraining. Stop once ``d_lag − d_1`` ≤
    ``tolerance`` for ``window`` rounds in a row."""

    params = {"lag": 3, "tolerance": 0.01, "window": 2}  # measured: docs/benchmarks/stopping.md
    what = "labels"

    def _check_config(self):
        super()._check_config()
        check_positive_int("lag", self.config["lag"])
        if self.config["lag"] < 2:
            raise ValueError(f"Expected `lag` to be at least 2 rounds, got {self.config['lag']!r}.")

    def _labels(self, obs: Observation) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decide(self, obs, labeled):
        lag = int(self.config["lag"])
        past = [np.asarray(p) for p in self.memory_.get("past", [])]
        cur = self._labels(obs)
        self.memory_["past"] = [p for p in (past + [cur])[-lag:]]
        if len(past) < lag:
            return False, math.nan, (f"continue: {len(past) + 1} of {lag + 1} rounds seen, "
                                     f"nothing to compare {lag} rounds back yet"), {"run": 0}
        d1, dl = float(np.mean(past[-1] != cur)), float(np.mean(past[0] != cur))
        v = dl - d1
        ok = v <= self.config["tolerance"]
        stop, run = self._windowed(ok)
        w, t = self.config["window"], self.config["tolerance"]
        head = "stop" if stop else "continue"
        reason = (f"{head}: {self.what} changed {dl:.2%} since {lag} rounds back vs {d1:.2%} since the last round "
                  f"(excess {v:+.2%}, ≤ {t:.2%}: {run} of {w} rounds)")
        return stop, v, reason, {"changed_last": d1, "changed_lag": dl, "run": run, "_ok": ok}


class SettledPredictions(_SettledCriterion):
    """jacal: predictions on the stop set change no more over ``lag`` rounds than over one."""

    name = "settled-predictions"
    what = "predictions"

    def _labels(self, obs):
        return obs.predictions
