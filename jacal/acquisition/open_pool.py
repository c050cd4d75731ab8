"""The open-pool layer: how every strategy selects when some items sent came back "none of these".

From those answers :func:`jacal.acquire` calibrates each item's probability ``P(in | x)`` of being
labelable and re-ranks it by spreading the answers over the pool
(:func:`jacal.confidence.openset.in_set_probability`), then applies an open-pool layer under
whichever strategy runs (``acquire(open_set=...)``, or a strategy's own ``open_set``):

* ``"auto"`` (the default): each strategy's own layer (its ``open_set`` attribute): ``"share-floor"``
  for ``jacobian``, ``"class-floor"`` for the others (the best of each strategy's measured layers,
  docs/benchmarks/open-pools.md).
* ``"share-floor"`` (:func:`share_floor_candidates`): within each predicted class, the items the
  calibration expects out of the set there (``round(Σ (1 − P(in)))`` of them) are dropped, the least
  likely labelable first; among the rest the strategy
  weighs what an item teaches by ``P(in)`` as under ``"weight"``. The cut follows the contamination:
  a pool 10% out of the set loses about a tenth of each class, one 70% out about seven tenths.
  Until every class has a labeled item, the candidates are the class floor's instead: the score
  compares an item with the labeled in-set items, so the items of a class nobody has labeled yet
  look as far from the set as the unknown ones do, and a deep cut would keep that class unlabeled.
* ``"class-floor"`` (:func:`class_floor_candidates`): the candidates are, within each
  predicted class, the items at or above that class's median ``P(in)``, and every item with
  ``P(in) >= 1/2``; the strategy then selects among them as on a closed pool. A known class that
  borders an unknown one keeps its most labelable half, where one global cut would empty it.
* ``"weight"``: the strategy weighs what an item teaches by ``P(in)`` (``PoolFeatures.in_set``): a
  strategy scored by ``scores`` ranks by ``P(in) × (percentile rank of its score)``
  (:func:`weighted_key`), ``random`` draws ∝ ``P(in)``, the k-means++ strategies draw ∝
  ``P(in)·D²``. A strategy with its own ``select`` that does not read ``in_set``
  (``weighs_in_set = False``, e.g. ``coreset``) gets the calibrated threshold ``P(in) >= 1/2`` instead.
* ``"off"``: the answers are ignored (the items stay excluded).

On a closed pool nothing changes.

The functions here are the layer's candidate rules and its weighting, arrays in and arrays out:
``in_set (N,)`` is ``P(in | x)`` per pool item (NaN counts as 0), ``probs (N, K)`` the class
probabilities, ``candidates`` the pool indices a strategy may pick.
"""
from __future__ import annotations

import numpy as np

__all__ = ["weighted_key", "in_set_candidates", "class_floor_candidates", "share_floor_candidates"]


def weighted_key(scores: np.ndarray, in_set: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``(N,)`` ``P(in) × u`` with ``u`` each candidate's percentile rank of ``scores`` among the
    candidates (the highest 1, ties averaged; scale-free, so any score works, negative ones too);
    NaN outside the candidates."""
    from scipy.stats import rankdata

    out = np.full(len(scores), np.nan)
    s = np.nan_to_num(scores[candidates], nan=-np.inf)
    out[candidates] = np.nan_to_num(in_set[candidates], nan=0.0) * rankdata(s) / max(1, len(candidates))
    return out


def in_set_candidates(in_set: np.ndarray, candidates: np.ndarray, k: int, threshold: float = 0.5) -> np.ndarray:
    """The candidates with ``P(in) >= threshold``; when fewer than ``k`` are, the ``k`` most likely in-set."""
    p = np.nan_to_num(in_set[candidates], nan=0.0)
    keep = candidates[p >= threshold]
    return keep if len(keep) >= k else candidates[np.sort(np.argsort(-p, kind="stable")[:k])]


def class_floor_candidates(in_set: np.ndarray, probs: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The ``"class-floor"`` layer's candidates (module docstring): within each predicted class
    (``probs (N, K)``'s argmax), those at or above the class's median ``P(in)``, together with every
    candidate at ``P(in) >= 1/2``; the ``k`` most likely in-set when that leaves fewer than ``k``."""
    p = np.nan_to_num(in_set[candidates], nan=0.0)
    pred = np.nan_to_num(probs[candidates], nan=0.0).argmax(1)
    keep = p >= 0.5
    for c in np.unique(pred):
        m = pred == c
        keep |= m & (p >= np.median(p[m]))
    out = candidates[keep]
    return out if len(out) >= k else in_set_candidates(in_set, candidates, k)


def share_floor_candidates(in_set: np.ndarray, probs: np.ndarray, candidates: np.ndarray, k: int,
                           labeled_classes: "np.ndarray | None" = None) -> np.ndarray:
    """The ``"share-floor"`` layer's candidates (module docstring): within each predicted class
    (``probs (N, K)``'s argmax), its ``round(Σ P(in))`` most likely labelable candidates (ties by
    position); the ``k`` most likely in-set when that leaves fewer than ``k``.

    ``labeled_classes``: the classes of the labeled in-set items (:func:`jacal.acquire` passes the
    model's predictions for them, since it is given no labels). While one of the ``K`` classes is
    missing from it, the class floor's candidates (:func:`class_floor_candidates`) are returned
    instead, so that a class nobody has labeled yet stays within reach (module docstring). ``None``:
    the share floor whatever has been labeled."""
    if labeled_classes is not None:
        cls = np.asarray(labeled_classes).reshape(-1)
        if len(cls) and (not np.issubdtype(cls.dtype, np.integer) or cls.min() < 0 or cls.max() >= probs.shape[1]):
            raise ValueError(f"Expected `labeled_classes` to be class indices in [0, {probs.shape[1]}), got {cls[:5]!r}.")
        if (np.bincount(cls.astype(np.int64), minlength=probs.shape[1]) == 0).any():
            return class_floor_candidates(in_set, probs, candidates, k)
    p = np.nan_to_num(in_set[candidates], nan=0.0)
    pred = np.nan_to_num(probs[candidates], nan=0.0).argmax(1)
    keep = np.zeros(len(p), dtype=bool)
    for c in np.unique(pred):
        m = np.flatnonzero(pred == c)
        keep[m[np.argsort(-p[m], kind="stable")[:int(round(p[m].sum()))]]] = True
    out = candidates[keep]
    return out if len(out) >= k else in_set_candidates(in_set, candidates, k)
