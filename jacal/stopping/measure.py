"""Judging stopping criteria against a learning curve: the oracle stop and each criterion's cost.

The oracle stop is the first round after which test accuracy stays within ``tolerance`` (one
point) of its plateau, the plateau being the mean accuracy of the run's last ``tail`` rounds. A
criterion's stop is the first round it advised stopping; it is judged by the labels it spent
against the oracle's (``labels_ratio``) and the accuracy it gave up (``accuracy_lost`` = plateau −
accuracy at its stop).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["oracle_stop", "first_stop", "stop_table", "summarize", "stop_set_record", "replay_record",
           "REPLAYED", "STOP_SET_SIZE"]

#: How many items of a simulated loop's test split serve as its stop set (read without labels).
STOP_SET_SIZE = 1000

#: The criteria a loop replays from its stored stop-set predictions and runner-up classes (those
#: needing neither boundary distances, nor probabilities, nor a label budget).
REPLAYED = ("stabilizing-predictions", "classification-change", "boundary-pairs", "settled-predictions",
            "settled-boundaries")


def _curve(name: str, values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or not np.isfinite(a).all():
        raise ValueError(f"Expected `{name}` to be a non-empty 1-D array of finite numbers, got shape {a.shape}.")
    return a


def oracle_stop(accuracy: Sequence[float], *, tolerance: float = 0.01, tail: int = 3) -> int:
    """The first round index after which ``accuracy`` stays within ``tolerance`` of its plateau
    (the mean of the last ``tail`` rounds).

    >>> oracle_stop([0.5, 0.8, 0.9, 0.95, 0.94, 0.955, 0.95])
    3
    """
    acc = _curve("accuracy", accuracy)
    if not (isinstance(tail, int) and 1 <= tail <= len(acc)):
        raise ValueError(f"Expected `tail` to be an int in [1, {len(acc)}], got {tail!r}.")
    if not tolerance >= 0:
        raise ValueError(f"Expected `tolerance` to be ≥ 0, got {tolerance!r}.")
    plateau = acc[-tail:].mean()
    below = np.flatnonzero(acc < plateau - tolerance)
    # a last round below the plateau's band (a noisy tail): the run never settled, the oracle is its last round
    return min(int(below[-1] + 1), len(acc) - 1) if below.size else 0


def first_stop(stops: Sequence[bool]) -> Optional[int]:
    """The first round index with ``stop`` true, ``None`` if it never stopped."""
    s = np.flatnonzero(np.asarray(stops, dtype=bool))
    return int(s[0]) if s.size else None


def stop_table(labels: Sequence[int], accuracy: Sequence[float], stops: Dict[str, Sequence[bool]], *,
               tolerance: float = 0.01, tail: int = 3) -> Dict[str, dict]:
    """Each criterion's stop on one run, against the oracle's.

    Args:
        labels: ``(R,)`` labels at each round.
        accuracy: ``(R,)`` test accuracy at each round.
        stops: ``{criterion: (R,) advice.stop at each round}``.

    Returns:
        ``{criterion: {"round", "labels", "accuracy", "labels_ratio", "accuracy_lost", "stopped"}}``
        plus ``"oracle"``; a criterion that never stopped is charged the run's last round
        (``stopped`` false: a lower bound on its labels).
    """
    lab, acc = _curve("labels", labels), _curve("accuracy", accuracy)
    if len(lab) != len(acc):
        raise ValueError(f"Expected `labels` and `accuracy` of one length, got {len(lab)} and {len(acc)}.")
    plateau = float(acc[-tail:].mean())
    o = oracle_stop(acc, tolerance=tolerance, tail=tail)
    out: Dict[str, dict] = {"oracle": {"round": o, "labels": int(lab[o]), "accuracy": float(acc[o]),
                                       "labels_ratio": 1.0, "accuracy_lost": plateau - float(acc[o]),
                                       "stopped": True, "plateau": plateau,
                                       "settled": bool(acc[-1] >= plateau - tolerance)}}
    for name, s in stops.items():
        s = np.asarray(s, dtype=bool)
        if len(s) != len(acc):
            raise ValueError(f"Expected `stops[{name!r}]` to have {len(acc)} rounds, got {len(s)}.")
        r = first_stop(s)
        stopped = r is not None
        r = len(acc) - 1 if r is None else r
        out[name] = {"round": r, "labels": int(lab[r]), "accuracy": float(acc[r]),
                     "labels_ratio": float(lab[r] / lab[o]) if lab[o] > 0 else math.nan,
                     "accuracy_lost": plateau - float(acc[r]),
                     "stopped": stopped}
    return out


def summarize(tables: List[Dict[str, dict]]) -> Dict[str, dict]:
    """Mean / max over runs of each criterion's labels ratio and accuracy lost, and how often it stopped."""
    names = [n for n in tables[0] if n != "oracle"] if tables else []
    out = {}
    for n in names:
        ratio = np.array([t[n]["labels_ratio"] for t in tables], dtype=float)
        ratio = ratio[np.isfinite(ratio)]  # a run whose oracle stops at 0 labels has no ratio
        lost = np.array([t[n]["accuracy_lost"] for t in tables])
        out[n] = {"labels_ratio_mean": float(ratio.mean()) if ratio.size else math.nan,
                  "labels_ratio_max": float(ratio.max()) if ratio.size else math.nan,
                  "accuracy_lost_mean": float(lost.mean()), "accuracy_lost_max": float(lost.max()),
                  "stopped": int(sum(t[n]["stopped"] for t in tables)), "runs": len(tables),
                  "labels_mean": float(np.mean([t[n]["labels"] for t in tables]))}
    return out


def stop_set_record(model, stop_set, device=None) -> dict:
    """What a simulated loop stores per round to replay :data:`REPLAYED` later: the stop set's
    predictions and runner-up classes (JSON lists) and ``K``."""
    from jacal.stopping.criteria import observe

    obs = observe(model, stop_set, device=device)
    return {"predictions": obs.predictions.tolist(), "runner_up": obs.runner_up.tolist(),
            "n_classes": int(obs.probs.shape[1])}


def replay_record(labels: Sequence[int], accuracy: Sequence[float], records: Sequence[dict],
                  names: Sequence[str] = REPLAYED) -> Dict[str, dict]:
    """Each criterion in ``names`` (defaults) replayed over one run's stored :func:`stop_set_record`
    rounds: :func:`stop_table` of its stops."""
    from jacal.stopping.criteria import Observation, criterion

    stops = {}
    for name in names:
        c = criterion(name)
        s = []
        for rec, n in zip(records, labels):
            pred = np.asarray(rec["predictions"], dtype=np.int64)
            probs = np.zeros((len(pred), int(rec["n_classes"])))  # only K is read by these criteria
            s.append(c.step(Observation(pred, probs, np.asarray(rec["runner_up"], dtype=np.int64)),
                            labeled=int(n)).stop)
        stops[name] = s
    return stop_table(labels, accuracy, stops)
