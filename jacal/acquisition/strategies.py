"""Acquisition strategies: one interface, a registry by name.

Every strategy answers ``select(features, k, candidates=..., labeled_embeddings=..., seed=...)``
with a :class:`Selection`: indices in rank order ``(k,)``, per-item scores ``(N,)`` and the score
of each pick at the moment it was picked ``(k,)``. Higher scores are acquired first; exact ties
are broken by a seeded random key. A new strategy subclasses :class:`Strategy`, names the features
it reads in ``needs`` (members of :class:`jacal.features.Need`) and implements ``scores`` (top-k
is then done for it) or ``select``; ``@register_strategy`` makes it available by name
(``examples/custom_strategy.py``). Each strategy's ``use_when`` says in one line when to pick it.

Open pools: when some items sent came back "none of these", :func:`jacal.acquire` calibrates each
item's probability ``P(in | x)`` of being labelable and applies an open-pool layer under whichever
strategy runs (``acquire(open_set=...)``, or a strategy's own ``open_set``): the layers and their
candidate rules are in :mod:`jacal.acquisition.open_pool`. On a closed pool nothing changes.
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple, Type

import numpy as np
import torch

from jacal.acquisition import scores as S
from jacal.acquisition.open_pool import (class_floor_candidates, in_set_candidates, share_floor_candidates,
                                         weighted_key)
from jacal.features import Need, PoolFeatures
from jacal.acquisition.selection import k_center_greedy, kmeans_pp, kmeans_pp_outer
from jacal.acquisition.selection.kernels import min_distances, row_mean, row_norms

__all__ = ["Strategy", "ProbabilityStrategy", "Selection", "STRATEGIES", "RETIRED", "register_strategy",
           "get_strategy", "top_k", "as_selection", "weighted_key", "weighs_in_set", "in_set_candidates",
           "class_floor_candidates", "share_floor_candidates"]


class Selection(NamedTuple):
    """What :meth:`Strategy.select` returns (a tuple: ``idx, s, sel = strategy.select(...)`` works)."""

    indices: np.ndarray  #: (k,) pool indices in rank order (first = label first)
    scores: np.ndarray  #: (N,) every item's score (NaN where it has none)
    selection_scores: np.ndarray  #: (k,) each pick's score at the moment it was picked


def as_selection(out: Any, *, n: int, k: int, candidates: np.ndarray, name: str) -> Selection:
    """A strategy's answer checked against its contract: ``k`` distinct candidate indices, ``n``
    scores, ``k`` selection scores (a custom strategy's mistake is named, never passed on)."""
    if not isinstance(out, tuple) or len(out) != 3:
        raise TypeError(f"strategy {name!r}: `select` must return a Selection (indices, scores, selection_scores), "
                        f"got {type(out).__name__}.")
    idx, s, sel = (np.asarray(a) for a in out)
    if idx.shape != (k,) or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"strategy {name!r}: expected {k} integer indices, got shape {idx.shape} of {idx.dtype}.")
    if s.shape != (n,) or sel.shape != (k,):
        raise ValueError(f"strategy {name!r}: expected scores of shape ({n},) and selection scores of shape ({k},), "
                         f"got {s.shape} and {sel.shape}.")
    allowed = np.zeros(n, dtype=bool)
    allowed[candidates] = True
    if len(np.unique(idx)) != k or ((idx < 0) | (idx >= n)).any() or not allowed[idx].all():
        raise ValueError(f"strategy {name!r}: selected indices must be {k} distinct candidates (valid, unlabeled "
                         "pool items).")
    return Selection(idx.astype(np.int64), s.astype(np.float64), sel.astype(np.float64))


def top_k(scores: np.ndarray, candidates: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` among ``candidates``, ties broken by a seeded key."""
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(len(scores))[candidates]
    order = np.lexsort((tiebreak, -scores[candidates]))
    return candidates[order[:k]]


class Strategy:
    """Base class. Subclasses set ``name``, ``needs``, a one-line ``use_when`` and implement
    :meth:`scores` or :meth:`select`.

    Open pools (:mod:`jacal.acquisition.open_pool`): ``open_set`` names the layer this strategy runs under when
    ``acquire``'s ``open_set`` is ``"auto"`` (``None``: ``"class-floor"``); a subclass with its own
    ``select`` that weighs ``f.in_set`` (the ``"weight"`` and ``"share-floor"`` layers hand it over)
    sets ``weighs_in_set = True``, otherwise those layers restrict its candidates to the items more
    likely labelable than not.
    """

    name: str = ""
    needs: frozenset = frozenset()
    uses_labeled: bool = False
    use_when: str = ""
    open_set: Optional[str] = None
    weighs_in_set: Optional[bool] = None  # None: True exactly when `select` is the base class's

    def scores(self, f: PoolFeatures) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self, f: PoolFeatures, k: int, *, candidates: np.ndarray, labeled_embeddings: Optional[np.ndarray] = None,
               seed: int = 0) -> Selection:
        s = self.scores(f)
        if f.in_set is None:
            idx = top_k(s, candidates, k, seed)
            return Selection(idx, s, s[idx])
        key = weighted_key(s, f.in_set, candidates)
        idx = top_k(key, candidates, k, seed)
        return Selection(idx, s, key[idx])


def weighs_in_set(strategy: Strategy) -> bool:
    """Whether ``strategy`` weighs ``PoolFeatures.in_set`` itself (see :class:`Strategy`)."""
    own = getattr(strategy, "weighs_in_set", None)
    return type(strategy).select is Strategy.select if own is None else bool(own)


STRATEGIES: Dict[str, Type[Strategy]] = {}


#: Names that no longer select anything, with the strategy that replaced each (see
#: docs/benchmarks/jacobian_acquisition.md): asking for one raises a one-line error that names its replacement.
RETIRED: Dict[str, Tuple[str, str]] = {
    "jacobian-diverse": ("jacobian", "top 5k by Jacobian norm, then k-center greedy, lost to random on MNIST"),
}


def register_strategy(cls: Type[Strategy]) -> Type[Strategy]:
    """Class decorator: make a :class:`Strategy` available to :func:`jacal.acquire` by its ``name``."""
    if not cls.name:
        raise ValueError("A strategy needs a non-empty `name`.")
    if cls.name in RETIRED or (cls.name in STRATEGIES and STRATEGIES[cls.name] is not cls):
        raise ValueError(f"A strategy named {cls.name!r} is already registered ({STRATEGIES.get(cls.name, 'retired')}); "
                         "choose another `name`.")
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> Strategy:
    """The registered strategy called ``name`` (``ValueError`` naming the replacement of a retired one)."""
    if name in RETIRED:
        new, why = RETIRED[name]
        raise ValueError(f"strategy {name!r} was retired ({why}); use {new!r}, its batch-aware replacement.")
    if name not in STRATEGIES:
        raise ValueError(f"Expected `strategy` to be one of {sorted(STRATEGIES)}, got {name!r}.")
    return STRATEGIES[name]()


def _allowed(n: int, candidates: np.ndarray) -> torch.Tensor:
    """The candidates as a boolean mask over all ``n`` rows: the diversity functions take the whole
    feature matrix and this mask, so a million-row embedding is never copied."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.from_numpy(np.asarray(candidates, dtype=np.int64))] = True
    return mask


def _in_set_weights(f: PoolFeatures) -> Optional[torch.Tensor]:
    return None if f.in_set is None else torch.from_numpy(np.nan_to_num(np.asarray(f.in_set, dtype=np.float64), nan=0.0))


def _seeded_from_origin(e: torch.Tensor, k: int, candidates: np.ndarray, seed: int,
                        weights: Optional[torch.Tensor] = None) -> Tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding over the rows of ``e`` with the origin a center from the start (draws ∝
    ``weights·D²`` when given): ``(picks, distance of each pick to the nearest earlier center)``."""
    picks, d2 = kmeans_pp(e, k, centers=torch.zeros(1, e.shape[1], dtype=e.dtype),
                          allowed=_allowed(len(e), candidates), seed=seed, weights=weights)
    return picks, np.sqrt(d2)


def _probs_or_nan(f: PoolFeatures, fn) -> np.ndarray:
    out = np.full(len(f.finite), np.nan)
    out[f.finite] = fn(f.probs[f.finite])
    return out


@register_strategy
class RandomStrategy(Strategy):
    """Uniform draws; on an open pool, draws ∝ ``P(in)`` (Efraimidis–Spirakis keys ``u^(1/P)``)."""

    name = "random"
    use_when = "the yardstick; under the class floor it wastes few labels on open pools"
    weighs_in_set = True

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        s = np.random.default_rng(seed).random(len(f.finite))
        s[~f.finite] = np.nan
        key = s
        if f.in_set is not None:  # sampling without replacement ∝ P(in)
            with np.errstate(divide="ignore"):
                key = np.where(np.isfinite(s), s ** (1.0 / np.clip(np.nan_to_num(f.in_set, nan=0.0), 1e-12, 1.0)),
                               np.nan)
        idx = top_k(key, candidates, k, seed + 1)
        return Selection(idx, s, key[idx])


class ProbabilityStrategy(Strategy):
    """A strategy scored from class probabilities alone by ``array_score(probs) -> (N,)``, so it
    also works on a bare ``predict_proba`` (see :func:`jacal.modal_query_strategy`)."""

    array_score = None

    def scores(self, f):
        return _probs_or_nan(f, type(self).array_score)


@register_strategy
class LeastConfidence(ProbabilityStrategy):
    name = "least-confidence"
    use_when = "a cheap uncertainty score; margin measured as well or better on every jacal benchmark"
    array_score = staticmethod(S.least_confidence)


@register_strategy
class Margin(ProbabilityStrategy):
    name = "margin"
    use_when = "a cheap uncertainty baseline; within 0.01 of the best on 40% near open sets and mixes, under the layer"
    array_score = staticmethod(S.margin)


@register_strategy
class Entropy(ProbabilityStrategy):
    name = "entropy"
    use_when = "an uncertainty score over all classes; margin measured as well or better on jacal's benchmarks"
    array_score = staticmethod(S.entropy)


@register_strategy
class BALD(Strategy):
    """Mutual information between prediction and weights, from MC-dropout samples."""

    name = "bald"
    use_when = "a model with dropout, when MC sampling's extra passes are affordable"
    needs = frozenset({Need.BALD})  # scored chunk by chunk from the MC samples (not kept)

    def scores(self, f):
        return f.bald.copy()


@register_strategy
class JacobianTopK(Strategy):
    """The paper's score as it stands: highest per-point Jacobian norm ‖∂softmax/∂x‖_F first.

    Batch-blind: its top tail sits on the steepest decision boundary, so a batch fills with
    near-duplicates (see docs/benchmarks/jacobian_acquisition.md); kept as the reference for the batch-aware
    Jacobian strategies.
    """

    name = "jacobian-topk"
    use_when = "reference only: batch-blind, its batches fill with near-duplicates"
    needs = frozenset({Need.JACOBIAN})

    def scores(self, f):
        return f.jacobian.copy()


@register_strategy
class JacobianKMeans(Strategy):
    """k-means++ seeding over Jacobian embeddings, starting from the origin.

    Each item is its softmax Jacobian ``J(x)`` (K−1 rows, sketched to ``(K−1)·64`` numbers by one
    fixed Gaussian matrix, see :func:`jacal.sensitivity.jacobian_embedding`). Picks are drawn with
    probability ∝ the squared Jacobian distance to the nearest pick so far, and the origin (the
    Jacobian of a perfectly confident point) is a center from the start: an item's chance never
    exceeds ‖J(x)‖², so sensitivity decides how likely it is, and items whose Jacobians resemble an
    earlier pick's (the same boundary, the same direction) lose their chance: the batch spreads.
    Per-item score: the exact Jacobian norm.
    """

    name = "jacobian-kmeans"
    use_when = "the Jacobian family over full softmax Jacobians; jacobian measured as well or better"
    needs = frozenset({Need.JACOBIAN, Need.JACOBIAN_EMBEDDING})
    weighs_in_set = True

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        picks, dist = _seeded_from_origin(torch.from_numpy(f.jacobian_embedding), k, candidates, seed,
                                          _in_set_weights(f))
        return Selection(picks, f.jacobian.copy(), dist)


class _BoundarySeeding(Strategy):
    """k-means++ seeding over boundary embeddings ``v(x) = ∇ₓ(z_a − z_b) / (z_a − z_b)`` (see ``jacobian``),
    optionally extended by unit penultimate features scaled by ‖v‖ (``feature_weight``: diversity where
    ``v`` has few directions, e.g. a linear head)."""

    needs = frozenset({Need.BOUNDARY_EMBEDDING})
    feature_weight: float = 0.0
    weighs_in_set = True

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        e = torch.from_numpy(f.boundary_embedding)
        scores = row_norms(e).numpy()  # NaN scores for invalid items (NaN rows)
        if self.feature_weight:
            h = torch.from_numpy(f.embeddings).double()
            h = h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)
            e = torch.cat([e.double(), self.feature_weight * h * torch.from_numpy(scores)[:, None]], dim=1).float()
        picks, dist = _seeded_from_origin(e, k, candidates, seed, _in_set_weights(f))
        return Selection(picks, scores, dist)


@register_strategy
class JacobianBoundary(_BoundarySeeding):
    """``jacobian``: k-means++ seeding over boundary embeddings ``v(x) = ∇ₓ(z_a − z_b) / (z_a − z_b)``.

    It carries the family's name because it is the family's member with the best mean area under
    the learning curve across the active-learning benchmarks (digits, MNIST, a CNN).

    ``a, b`` are the item's top two classes, so ``1/‖v(x)‖`` is the first-order (DeepFool) distance
    from ``x`` to its nearest decision boundary: the input-space margin, which divides the logit gap
    by the Jacobian of that gap instead of multiplying probabilities by a Jacobian as ‖J‖ does. Picks
    are drawn ∝ the squared distance to the nearest pick so far, the origin being a center from the
    start: an item's chance never exceeds 1/distance², and items that face the same boundary from
    the same side (similar ``v``) lose their chance once one of them is picked.

    Open pools (its layer: ``"share-floor"``, module docstring): when the layer hands over ``P(in)``,
    the draws change. ``‖v‖`` is largest at the boundaries where unknown classes sit, and its
    unbounded square outweighs any probability, so the weight of an item is bounded instead, as
    LDM-S bounds its metric (:func:`jacal.acquisition.ldm.ldm_seeding` with the distance
    ``δ = 1/‖v‖`` in place of the LDM: ``γ = exp(−max(δ − q, 0)/q)``, ``q`` the k-th smallest
    distance), multiplied by ``P(in)``, and the batch spreads by the cosine distance between
    boundary directions ``v/‖v‖`` (which boundary, crossed which way). On a closed pool, and under
    ``"class-floor"`` or ``"off"``, the draws are the ones above.
    Per-item score: ``‖v(x)‖`` = 1 / (distance to the boundary).
    """

    name = "jacobian"
    use_when = "the default: ties the best on clean pools; on open pools within 0.008 of LDM-S, wasting fewer labels"
    open_set = "share-floor"

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        if f.in_set is None:
            return super().select(f, k, candidates=candidates, labeled_embeddings=labeled_embeddings, seed=seed)
        from jacal.acquisition.ldm import ldm_seeding

        scores, delta = self._open_pool_distance(f)
        picks, w = ldm_seeding(delta, self._open_pool_space(f), k, candidates, seed=seed, weights=f.in_set)
        return Selection(picks, scores, w)

    def _open_pool_distance(self, f):
        """``(scores, δ)``: per item ``‖v‖`` and the boundary distance ``δ = 1/‖v‖`` the open-pool draws
        weigh by (finite everywhere: an item with no boundary in reach counts as twice the farthest)."""
        v = f.boundary_embedding
        norm = np.empty(len(v))  # NaN for invalid rows; float64 a chunk at a time (a float64 copy of v: 4 GB at 10^6 × 512)
        for s in range(0, len(v), 65536):
            norm[s:s + 65536] = torch.from_numpy(np.ascontiguousarray(v[s:s + 65536])).double().norm(dim=1).numpy()
        ok = np.isfinite(norm) & (norm > 0)
        delta = np.where(ok, 1.0 / np.maximum(norm, 1e-300), np.nan)
        # ‖v‖ = 0 (no boundary within first-order reach, e.g. every unit dead): farther than any other item
        delta[~ok] = 2.0 * np.max(delta[ok]) if ok.any() else 1.0
        return norm, delta

    def _open_pool_space(self, f):
        """The rows whose cosine distances spread the open-pool batch: the boundary embeddings."""
        return f.boundary_embedding


@register_strategy
class LDMSeeding(Strategy):
    """LDM-S (Cho et al., ICLR 2024): small least-disagree-metric items, spread by weighted k-means++
    seeding on cosine distances of penultimate features (see :mod:`jacal.acquisition.ldm`).
    Per-item score: −LDM (higher = closer to the boundary)."""

    name = "ldm-s"
    use_when = "open pools, with --open-set share-floor: within 0.005 of the best on all 8 MNIST open pools"
    needs = frozenset({Need.LDM, Need.EMBEDDINGS})
    weighs_in_set = True

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        from jacal.acquisition.ldm import ldm_seeding

        picks, w = ldm_seeding(f.ldm, f.embeddings, k, candidates, seed=seed, weights=f.in_set)
        return Selection(picks, -f.ldm, w)


@register_strategy
class Coreset(Strategy):
    """k-center greedy on penultimate-layer embeddings, starting from the labeled set (Sener & Savarese 2018).

    Per-item score: distance to the nearest labeled embedding (or to the pool mean without labels).
    """

    name = "coreset"
    use_when = "coverage of feature space (e.g. a large first batch); not measured on open pools"
    needs = frozenset({Need.EMBEDDINGS})
    uses_labeled = True

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        emb = torch.from_numpy(f.embeddings)
        allowed = _allowed(len(emb), candidates)
        centers = torch.from_numpy(labeled_embeddings) if labeled_embeddings is not None and len(labeled_embeddings) else None
        picks, dist = k_center_greedy(emb, k, centers=centers, allowed=allowed, seed=seed)
        s = np.full(len(f.finite), np.nan)
        if centers is None:  # the mean of the candidates
            centers = row_mean(emb, allowed)[None, :]
        s[candidates] = min_distances(emb, centers, allowed=allowed).numpy()[candidates]
        return Selection(picks, s, dist)


@register_strategy
class Badge(Strategy):
    """BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings (p − onehot(ŷ)) ⊗ h.

    Per-item score: the gradient-embedding norm ‖p − onehot(ŷ)‖·‖h‖.
    """

    name = "badge"
    use_when = "large batches; on open pools it wastes fewer labels than ldm-s or margin, and led on 3 of 16 pool-seed sets"
    needs = frozenset({Need.EMBEDDINGS})
    weighs_in_set = True

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        a = np.nan_to_num(f.probs, nan=0.0)  # (N, K): a few numbers per item, the one copy made
        a[np.arange(len(a)), a.argmax(1)] -= 1.0
        h = torch.from_numpy(f.embeddings)
        picks, d2 = kmeans_pp_outer(torch.from_numpy(a), h, k, allowed=_allowed(len(a), candidates), seed=seed,
                                    weights=_in_set_weights(f))
        s = np.full(len(f.finite), np.nan)
        s[candidates] = (np.linalg.norm(a, axis=1) * row_norms(h).numpy())[candidates]
        return Selection(picks, s, np.sqrt(d2))
