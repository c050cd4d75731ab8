"""The parts every stopping criterion shares: the one pass over the stop set (:func:`observe`, giving
an :class:`Observation`), what a criterion says after a round (:class:`Advice`), and the base class
:class:`Criterion` (validation, the ``update``/``step`` verb, windows of rounds, a JSON-safe state).

The criteria themselves live beside it by what they watch (:mod:`jacal.stopping.predictions`,
:mod:`jacal.stopping.uncertainty`, :mod:`jacal.stopping.boundaries`, :mod:`jacal.stopping.budget`);
:mod:`jacal.stopping.criteria` names them and saves their state.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score

from jacal._internal.validation import check_positive_int
from jacal.features import Need, extract_features, pool_length
from jacal.acquisition.engine import default_batch_size

#: the version of :meth:`Criterion.state_dict`'s layout (a saved state of another version is refused)
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
