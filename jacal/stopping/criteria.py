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

This module names the criteria (:func:`criterion`) and saves their state; the classes live by what
they watch: :mod:`jacal.stopping.predictions`, :mod:`jacal.stopping.uncertainty`,
:mod:`jacal.stopping.boundaries` and :mod:`jacal.stopping.budget`, over the shared
:mod:`jacal.stopping.base` (:func:`observe`, :class:`Observation`, :class:`Advice`, :class:`Criterion`).

State: ``crit.state_dict()`` / ``crit.load_state_dict(d)`` (JSON-safe), and :func:`save_state` /
:func:`load_state` write and read a JSON file atomically, so a CLI run carries a criterion from round
to round.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Type, Union

from jacal._internal.io import atomic_open
from jacal._internal.validation import JacalError
from jacal.stopping.base import Advice, Criterion, Observation, kappa, observe
from jacal.stopping.boundaries import BoundaryPairs, BoundaryShare, SettledBoundaries
from jacal.stopping.budget import Budget
from jacal.stopping.predictions import ClassificationChange, SettledPredictions, StabilizingPredictions
from jacal.stopping.uncertainty import MaxUncertainty, OverallUncertainty

__all__ = ["Advice", "Observation", "Criterion", "CRITERIA", "DEFAULT_CRITERION", "criterion", "observe", "kappa",
           "save_state", "load_state"]

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
