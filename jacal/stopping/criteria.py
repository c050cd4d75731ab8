"""Stopping criteria: watch a fixed stop set of unlabeled items across rounds and say when to stop.

Every criterion answers ``update(model, stop_set) -> Advice`` (the model as :func:`jacal.acquire`
takes it, the stop set an array or tensor of items like its pool). The work is split in two so
nothing is computed twice: :func:`observe` is the one pass over the stop set (predictions,
probabilities, and on request each item's nearest boundary: the class pair ``a | b`` and the
first-order distance ``(z_a − z_b) / ‖∇ₓ(z_a − z_b)‖``), and :meth:`Criterion.step` decides from an
:class:`Observation` alone, so one pass per round can feed every criterion.

The criteria (``CRITERIA``):

- ``stabilizing-predictions`` (Bloodgood & Vijay-Shanker 2009): Cohen's κ between successive
  models' predictions on the stop set ≥ ``threshold`` (0.99) for ``window`` (3) rounds in a row.
- ``classification-change`` (Zhu et al. 2008): the share of the stop set whose predicted class
  changed since the last round ≤ ``threshold`` (0: none) for ``window`` rounds.
- ``max-uncertainty`` (Zhu et al. 2008): the largest normalized entropy ``H(p)/log K`` among the
  items just picked (``picked``; the stop set without them) ≤ ``threshold``.
- ``overall-uncertainty`` (Zhu et al. 2008): the mean normalized entropy over the stop set ≤ ``threshold``.
- ``budget``: the labels so far (``labeled``) ≥ ``labels``.
- ``boundary-pairs`` (jacal): Cohen's κ between successive rounds' nearest-boundary class pairs
  ``{a, b}`` (the top two classes, whose logit gap the boundary distance divides) ≥ ``threshold``
  for ``window`` rounds: the map of which boundaries the stop set sits against has stopped moving,
  a stricter test than the predictions alone (an item can keep its class while its nearest
  boundary turns to face another class).
- ``boundary-share`` (jacal): the share of the stop set within ``δ`` of a boundary (``δ``: the
  stop set's median first-order distance at the first round, kept in the state) has stopped
  falling: it fell by at most ``tolerance`` over each of the last ``window`` rounds.

- ``settled-predictions`` (jacal, the default): the share of the stop set whose prediction changed
  since ``lag`` (3) rounds back exceeds the share changed since the last round by at most
  ``tolerance`` (0.01) for ``window`` (2) rounds: learning accumulates over rounds, the noise of
  retraining a deep model does not, so this fires when only the noise is left.
- ``settled-boundaries`` (jacal): the same on the nearest-boundary class pairs ``{a, b}``.

State: ``crit.state_dict()`` / ``crit.load_state_dict(d)`` (JSON-safe), and :func:`save_state` /
:func:`load_state` write and read a JSON file atomically, so a CLI run carries a criterion from round
to round.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Type, Union

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score

from jacal._io import atomic_open
from jacal._validation import JacalError, check_positive_int
from jacal.features import Need, extract_features, pool_length
from jacal.acquisition.engine import default_batch_size

__all__ = ["Advice", "Observation", "Criterion", "CRITERIA", "DEFAULT_CRITERION", "criterion", "observe", "kappa",
           "save_state", "load_state"]

STATE_VERSION = 1


@dataclass
class Observation:
    """One model's view of the stop set (``n`` items; NaN/Inf items are dropped by :func:`observe`).

    Attributes:
        predictions: ``(n,)`` predicted class.
        probs: ``(n, K)`` class probabilities.
        runner_up: ``(n,)`` second most likely class: the other side of the item's nearest boundary.
        boundary_distance: ``(n,)`` first-order distance ``(z_a − z_b)/‖∇ₓ(z_a − z_b)‖`` in input
            units, or ``None`` when not asked for.
        picked_probs: ``(k, K)`` probabilities of the items just acquired, or ``None``.
    """

    predictions: np.ndarray
    probs: np.ndarray
    runner_up: np.ndarray
    boundary_distance: Optional[np.ndarray] = None
    picked_probs: Optional[np.ndarray] = None


@dataclass
class Advice:
    """What a criterion says after a round.

    Attributes:
        stop: whether to stop labeling now.
        reason: one line saying why.
        value: the number the criterion tests (κ, a share, an uncertainty, a label count); NaN at a
            first round with nothing to compare.
        criterion: its name.
        round: rounds seen so far (1 at the first update).
        labeled: labels so far, when given.
        measured: what else it measured (threshold, window, the values of the last rounds...).
    """

    stop: bool
    reason: str
    value: float
    criterion: str
    round: int
    labeled: Optional[int] = None
    measured: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["value"] = _json_num(self.value)
        return d


def _json_num(v: Any) -> Optional[float]:
    v = float(v)
    return v if math.isfinite(v) else None


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's κ between two label vectors (sklearn's), 1.0 when they are identical (sklearn gives
    NaN when both are one constant label: no disagreement to correct for chance)."""
    a, b = np.asarray(a), np.asarray(b)
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b))


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _entropy_normalized(p: np.ndarray) -> np.ndarray:
    """``H(p) / log K`` per row ``(n,)`` in [0, 1]."""
    k = p.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return h / math.log(k) if k > 1 else np.zeros(len(p))


def observe(model: torch.nn.Module, stop_set: Any, *, geometry: bool = False, picked: Any = None,
            batch_size: Optional[int] = None, device: Any = None, force_eval: bool = False) -> Observation:
    """One pass over the stop set: what every criterion needs.

    Args:
        model: a trained classifier returning logits ``(N, K)``.
        stop_set: the stop set ``(n, *input_shape)`` (array, tensor or ``Dataset``, as a pool).
        geometry: also compute each item's first-order boundary distance (one Jacobian-vector pass).
        picked: the items just acquired ``(k, *input_shape)`` (for ``max-uncertainty``), or ``None``.
        batch_size, device, force_eval: as for :func:`jacal.acquire`.

    Returns:
        :class:`Observation` over the stop set's finite items.
    """
    if pool_length(stop_set) == 0:
        raise ValueError("`stop_set` is empty: a stopping criterion watches at least one item.")
    need = {Need.BOUNDARY_EMBEDDING} if geometry else set()
    if batch_size is None:  # the default chunk of `acquire`, from the item size
        batch_size = default_batch_size(stop_set)
    f = extract_features(model, stop_set, need=need, batch_size=batch_size, device=device, force_eval=force_eval)
    keep = f.finite
    p = f.probs[keep]
    order = np.argsort(-p, axis=1, kind="stable")
    dist = None
    if geometry:
        norms = np.linalg.norm(f.boundary_embedding[keep].astype(np.float64), axis=1)
        dist = 1.0 / np.maximum(norms, 1e-300)
    picked_probs = None
    if picked is not None:
        fp = extract_features(model, picked, need=set(), batch_size=batch_size, device=device, force_eval=force_eval)
        picked_probs = fp.probs[fp.finite]
    return Observation(order[:, 0].astype(np.int64), p, order[:, 1].astype(np.int64), dist, picked_probs)


class Criterion:
    """Base class: subclasses set ``name``, ``params`` (defaults) and implement :meth:`_decide`.

    Constructors store; :meth:`step` validates. Learned state lives in ``history_`` (one entry per
    round: its value and the stop decision) and ``memory_`` (what the next round compares against).
    """

    name: str = ""
    params: Dict[str, Any] = {}
    geometry: bool = False  # needs boundary distances from :func:`observe`
    uses_picked: bool = False

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.params)
        if unknown:
            raise ValueError(f"criterion {self.name!r} takes {sorted(self.params) or 'no parameters'}, "
                             f"got {sorted(unknown)}.")
        self.config = {**self.params, **params}
        self.history_: List[dict] = []
        self.memory_: Dict[str, Any] = {}
        self._check_config()

    # -- validation -----------------------------------------------------------------------------
    def _check_config(self) -> None:
        c = self.config
        if "window" in c:
            check_positive_int("window", c["window"])
        for key in ("threshold", "tolerance"):
            if key in c and (isinstance(c[key], bool) or not isinstance(c[key], (int, float))
                             or not math.isfinite(c[key])):
                raise ValueError(f"Expected `{key}` to be a finite number, got {c[key]!r}.")
        if "threshold" in c and self.name in ("stabilizing-predictions", "boundary-pairs") and not -1 <= c["threshold"] <= 1:
            raise ValueError(f"Expected `threshold` to be a κ in [-1, 1], got {c['threshold']!r}.")
        if "threshold" in c and self.name in ("classification-change", "max-uncertainty", "overall-uncertainty") \
                and not 0 <= c["threshold"] <= 1:
            raise ValueError(f"Expected `threshold` to be a share in [0, 1], got {c['threshold']!r}.")
        if "tolerance" in c and c["tolerance"] < 0:
            raise ValueError(f"Expected `tolerance` to be ≥ 0, got {c['tolerance']!r}.")

    # -- the verb ---------------------------------------------------------------------------------
    def update(self, model: torch.nn.Module, stop_set: Any, *, labeled: Optional[int] = None, picked: Any = None,
               batch_size: Optional[int] = None, device: Any = None, force_eval: bool = False) -> Advice:
        """Observe ``model`` on ``stop_set`` (the same items every round) and advise.

        Args:
            model: this round's model (as :func:`jacal.acquire` takes it).
            stop_set: ``(n, *input_shape)`` unlabeled items, the same every round.
            labeled: labels so far (needed by ``budget``; reported by every criterion).
            picked: the items just acquired (``max-uncertainty``); ``None``: the stop set stands in.
        """
        obs = observe(model, stop_set, geometry=self.geometry, picked=picked if self.uses_picked else None,
                      batch_size=batch_size, device=device, force_eval=force_eval)
        return self.step(obs, labeled=labeled)

    def step(self, obs: Observation, *, labeled: Optional[int] = None) -> Advice:
        """Advise from an :class:`Observation` (the functional core of :meth:`update`)."""
        if not isinstance(obs, Observation):
            raise TypeError(f"Expected `obs` to be an Observation, got {type(obs).__name__}.")
        if labeled is not None and (isinstance(labeled, bool) or not isinstance(labeled, (int, np.integer))
                                    or labeled < 0):
            raise ValueError(f"Expected `labeled` to be a non-negative int, got {labeled!r}.")
        if self.geometry and obs.boundary_distance is None:
            raise ValueError(f"criterion {self.name!r} needs boundary distances: observe(..., geometry=True).")
        n = self.memory_.get("n")
        if n is not None and len(obs.predictions) != n:
            raise ValueError(f"Expected the same `stop_set` every round ({n} items), got {len(obs.predictions)}.")
        stop, value, reason, measured = self._decide(obs, None if labeled is None else int(labeled))
        ok = bool(measured.pop("_ok", stop))
        self.memory_["n"] = len(obs.predictions)
        rnd = len(self.history_) + 1
        self.history_.append({"round": rnd, "value": _json_num(value), "stop": bool(stop), "ok": ok,
                              "labeled": None if labeled is None else int(labeled)})
        return Advice(bool(stop), reason, float(value), self.name, rnd, labeled, {**self.config, **measured})

    def _decide(self, obs: Observation, labeled: Optional[int]):  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, ok: bool) -> int:
        """How many rounds in a row (this one included) met the condition."""
        run = 0
        for h in reversed(self.history_):
            if not h.get("ok"):
                break
            run += 1
        return run + 1 if ok else 0

    def _windowed(self, ok: bool):
        """``(stop, run)``: stop once ``ok`` held ``window`` rounds in a row (this one included)."""
        run = self._run(ok)
        return run >= int(self.config.get("window", 1)), run

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-safe state: name, parameters, history and what the next round compares against."""
        mem = {k: _jsonable(v) for k, v in self.memory_.items()}
        return {"version": STATE_VERSION, "criterion": self.name, "config": self.config, "history": self.history_,
                "memory": mem}

    def load_state_dict(self, state: dict) -> "Criterion":
        if not isinstance(state, dict) or state.get("criterion") != self.name:
            raise ValueError(f"Expected a state of criterion {self.name!r}, got "
                             f"{state.get('criterion') if isinstance(state, dict) else type(state).__name__!r}.")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"Expected state version {STATE_VERSION}, got {state.get('version')!r}.")
        self.config = {**self.params, **state.get("config", {})}
        self._check_config()
        self.history_ = list(state.get("history", []))
        self.memory_ = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in state.get("memory", {}).items()}
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"criterion({self.name!r}{', ' if args else ''}{args})"


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


def _pair_labels(obs: Observation) -> np.ndarray:
    """Each stop-set item's nearest-boundary class pair ``{a, b}`` as one label ``min·K + max``."""
    a, b = np.minimum(obs.predictions, obs.runner_up), np.maximum(obs.predictions, obs.runner_up)
    return a * obs.probs.shape[1] + b


class StabilizingPredictions(_AgreementCriterion):
    """Bloodgood & Vijay-Shanker 2009: κ of successive models' predictions on the stop set."""

    name = "stabilizing-predictions"
    what = "κ(predictions)"

    def _labels(self, obs):
        return obs.predictions


class BoundaryPairs(_AgreementCriterion):
    """jacal: κ of successive rounds' nearest-boundary class pairs ``{a, b}`` on the stop set."""

    name = "boundary-pairs"
    what = "κ(boundary pairs)"

    def _labels(self, obs):
        return _pair_labels(obs)


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


class Budget(Criterion):
    """Stop once ``labels`` items are labeled."""

    name = "budget"
    params = {"labels": None}

    def _check_config(self):
        b = self.config["labels"]
        if b is not None:
            check_positive_int("labels", b)

    def _decide(self, obs, labeled):
        b = self.config["labels"]
        if b is None:
            raise ValueError("criterion 'budget' needs `labels` (the label budget): criterion('budget', labels=N).")
        if labeled is None:
            raise ValueError("criterion 'budget' needs `labeled` (the labels so far) at each update.")
        stop = labeled >= b
        reason = f"{'stop' if stop else 'continue'}: {labeled} labels {'≥' if stop else '<'} budget {b}"
        return stop, float(labeled), reason, {}


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


class SettledBoundaries(_SettledCriterion):
    """jacal: the stop set's nearest-boundary class pairs ``{a, b}`` change no more over ``lag`` rounds than over one."""

    name = "settled-boundaries"
    what = "boundary pairs"

    def _labels(self, obs):
        return _pair_labels(obs)


_CLASSES: Dict[str, Type[Criterion]] = {c.name: c for c in (
    StabilizingPredictions, ClassificationChange, MaxUncertainty, OverallUncertainty, Budget, BoundaryPairs,
    BoundaryShare, SettledPredictions, SettledBoundaries)}

#: Every criterion's name.
CRITERIA = tuple(_CLASSES)

#: The criterion :func:`criterion` returns without a name: on MNIST loops it stopped within 1.5× the
#: oracle's labels losing under a point of accuracy, where κ ≥ 0.99 never fired (docs/benchmarks/stopping.md).
DEFAULT_CRITERION = "settled-predictions"


def criterion(name: Optional[str] = None, **params: Any) -> Criterion:
    """A fresh stopping criterion by name (``None``: :data:`DEFAULT_CRITERION`).

    >>> criterion()
    criterion('settled-predictions', lag=3, tolerance=0.01, window=2)
    >>> criterion("stabilizing-predictions", window=2)
    criterion('stabilizing-predictions', threshold=0.99, window=2)
    """
    name = DEFAULT_CRITERION if name is None else name
    if name not in _CLASSES:
        raise ValueError(f"Expected `name` to be one of {list(CRITERIA)}, got {name!r}.")
    return _CLASSES[name](**params)


def save_state(crit: Criterion, path: Union[str, Path]) -> None:
    """Write ``crit``'s state to a JSON file, atomically."""
    if not isinstance(crit, Criterion):
        raise TypeError(f"Expected `crit` to be a stopping Criterion, got {type(crit).__name__}.")
    text = json.dumps(crit.state_dict())
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def load_state(path: Union[str, Path]) -> Criterion:
    """The criterion saved at ``path`` by :func:`save_state`, ready for its next update."""
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JacalError(f"stop state not found: {path}") from None
    except (OSError, ValueError) as e:
        raise JacalError(f"stop state {path} is not a JSON file: {e}") from None
    if not isinstance(state, dict) or state.get("criterion") not in _CLASSES:
        raise JacalError(f"stop state {path} names no known criterion (expected one of {list(CRITERIA)})")
    try:
        return criterion(state["criterion"]).load_state_dict(state)
    except ValueError as e:
        raise JacalError(f"stop state {path}: {e}") from None
