"""Acquisition strategies: one interface, a registry by name.

Every strategy answers ``select(features, k, candidates=..., labeled_embeddings=..., seed=...)``
with a :class:`Selection`: indices in rank order ``(k,)``, per-item scores ``(N,)`` and the score
of each pick at the moment it was picked ``(k,)``. Higher scores are acquired first; exact ties
are broken by a seeded random key. A new strategy subclasses :class:`Strategy`, names the features
it reads in ``needs`` (members of :class:`jacal.features.Need`) and implements ``scores`` (top-k
is then done for it) or ``select``; ``@register_strategy`` makes it available by name
(``examples/custom_strategy.py``).
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple, Type

import numpy as np
import torch

from jacal.acquisition import scores as S
from jacal.features import Need, PoolFeatures
from jacal.acquisition.diversity import k_center_greedy, kmeans_pp, kmeans_pp_outer, min_distances, row_mean, row_norms

__all__ = ["Strategy", "ProbabilityStrategy", "Selection", "STRATEGIES", "RETIRED", "register_strategy",
           "get_strategy", "top_k", "as_selection", "id_candidates"]


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
    """Base class. Subclasses set ``name``, ``needs`` and implement :meth:`scores` or :meth:`select`."""

    name: str = ""
    needs: frozenset = frozenset()
    uses_labeled: bool = False

    def scores(self, f: PoolFeatures) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self, f: PoolFeatures, k: int, *, candidates: np.ndarray, labeled_embeddings: Optional[np.ndarray] = None,
               seed: int = 0) -> Selection:
        s = self.scores(f)
        idx = top_k(s, candidates, k, seed)
        return Selection(idx, s, s[idx])


STRATEGIES: Dict[str, Type[Strategy]] = {}


#: Names that no longer select anything, with the strategy that replaced each (see
#: docs/jacobian_acquisition.md): asking for one raises a one-line error that names its replacement.
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


def _seeded_from_origin(e: torch.Tensor, k: int, candidates: np.ndarray, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding over the rows of ``e`` with the origin a center from the start: ``(picks,
    distance of each pick to the nearest earlier center)``."""
    picks, d2 = kmeans_pp(e, k, centers=torch.zeros(1, e.shape[1], dtype=e.dtype),
                          allowed=_allowed(len(e), candidates), seed=seed)
    return picks, np.sqrt(d2)


def _probs_or_nan(f: PoolFeatures, fn) -> np.ndarray:
    out = np.full(len(f.finite), np.nan)
    out[f.finite] = fn(f.probs[f.finite])
    return out


@register_strategy
class RandomStrategy(Strategy):
    name = "random"

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        s = np.random.default_rng(seed).random(len(f.finite))
        s[~f.finite] = np.nan
        idx = top_k(s, candidates, k, seed + 1)
        return Selection(idx, s, s[idx])


class ProbabilityStrategy(Strategy):
    """A strategy scored from class probabilities alone by ``array_score(probs) -> (N,)``, so it
    also works on a bare ``predict_proba`` (see :func:`jacal.modal_query_strategy`)."""

    array_score = None

    def scores(self, f):
        return _probs_or_nan(f, type(self).array_score)


@register_strategy
class LeastConfidence(ProbabilityStrategy):
    name = "least-confidence"
    array_score = staticmethod(S.least_confidence)


@register_strategy
class Margin(ProbabilityStrategy):
    name = "margin"
    array_score = staticmethod(S.margin)


@register_strategy
class Entropy(ProbabilityStrategy):
    name = "entropy"
    array_score = staticmethod(S.entropy)


@register_strategy
class BALD(Strategy):
    """Mutual information between prediction and weights, from MC-dropout samples."""

    name = "bald"
    needs = frozenset({Need.BALD})  # scored chunk by chunk from the MC samples (not kept)

    def scores(self, f):
        return f.bald.copy()


@register_strategy
class JacobianTopK(Strategy):
    """The paper's score as it stands: highest per-point Jacobian norm ‖∂softmax/∂x‖_F first.

    Batch-blind: its top tail sits on the steepest decision boundary, so a batch fills with
    near-duplicates (see docs/jacobian_acquisition.md); kept as the reference for the batch-aware
    Jacobian strategies.
    """

    name = "jacobian-topk"
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
    needs = frozenset({Need.JACOBIAN, Need.JACOBIAN_EMBEDDING})

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        picks, dist = _seeded_from_origin(torch.from_numpy(f.jacobian_embedding), k, candidates, seed)
        return Selection(picks, f.jacobian.copy(), dist)


def id_candidates(f: PoolFeatures, candidates: np.ndarray, k: int, threshold: Optional[float] = None) -> np.ndarray:
    """The candidates the in-distribution score calls labelable: ``f.in_distribution >= threshold``,
    by default the conformal floor ``f.in_distribution_floor`` (the score 95% of the labeled in-set
    items reach, see :func:`jacal.confidence.openset.in_distribution_floor`); when fewer than ``k``
    are, the ``k`` candidates with the highest score."""
    threshold = f.in_distribution_floor if threshold is None else threshold
    s = f.in_distribution[candidates]
    keep = candidates[s >= threshold]
    if len(keep) >= k:
        return keep
    return candidates[np.argsort(-s, kind="stable")[:k]]


class _BoundarySeeding(Strategy):
    """k-means++ seeding over boundary embeddings ``v(x) = ∇ₓ(z_a − z_b) / (z_a − z_b)`` (see ``jacobian``),
    optionally restricted to the items the in-distribution score calls labelable (``id_filter``) and
    extended by unit penultimate features scaled by ‖v‖ (``feature_weight``: diversity where ``v``
    has few directions, e.g. a linear head)."""

    needs = frozenset({Need.BOUNDARY_EMBEDDING})
    id_filter: bool = False
    id_threshold: Optional[float] = None  # None: the conformal floor; a number: a fixed cut on the score
    feature_weight: float = 0.0

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        e = torch.from_numpy(f.boundary_embedding)
        scores = row_norms(e).numpy()  # NaN scores for invalid items (NaN rows)
        if self.id_filter:
            candidates = id_candidates(f, candidates, k, self.id_threshold)
        if self.feature_weight:
            h = torch.from_numpy(f.embeddings).double()
            h = h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)
            e = torch.cat([e.double(), self.feature_weight * h * torch.from_numpy(scores)[:, None]], dim=1).float()
        picks, dist = _seeded_from_origin(e, k, candidates, seed)
        return Selection(picks, scores, dist)


@register_strategy
class JacobianBoundary(_BoundarySeeding):
    """``jacobian``: k-means++ seeding over boundary embeddings ``v(x) = ∇ₓ(z_a − z_b) / (z_a − z_b)``,
    among the items annotators can label.

    It carries the family's name because it is the family's member with the best mean area under
    the learning curve across the active-learning benchmarks (digits, MNIST, a CNN).

    ``a, b`` are the item's top two classes, so ``1/‖v(x)‖`` is the first-order (DeepFool) distance
    from ``x`` to its nearest decision boundary: the input-space margin, which divides the logit gap
    by the Jacobian of that gap instead of multiplying probabilities by a Jacobian as ‖J‖ does. Picks
    are drawn ∝ the squared distance to the nearest pick so far, the origin being a center from the
    start: an item's chance never exceeds 1/distance², and items that face the same boundary from
    the same side (similar ``v``) lose their chance once one of them is picked.

    Open pools: when some items already sent came back "none of these" (``acquire(...,
    out_of_set=...)``), only the items that the in-distribution score
    (:func:`jacal.confidence.openset.in_distribution`, nearest labeled items in feature space) puts
    nearer the labeled classes than the known out-of-set items are candidates. Without such answers
    every item is a candidate and the selection is the closed-pool one.
    Per-item score: ``‖v(x)‖`` = 1 / (distance to the boundary).
    """

    name = "jacobian"
    needs = frozenset({Need.BOUNDARY_EMBEDDING, Need.IN_DISTRIBUTION})
    id_filter = True


@register_strategy
class JacobianBoundaryClosed(_BoundarySeeding):
    """``jacobian`` without the open-set filter: every unlabeled item is a candidate (the selection of
    ``jacobian`` on a closed pool; kept to measure what the filter buys)."""

    name = "jacobian-closed"


@register_strategy
class JacobianBoundaryHalf(_BoundarySeeding):
    """Open-set variant measured against ``jacobian``: its filter with a fixed cut at score ½ (nearer
    the labeled classes than the known out-of-set items) instead of the conformal floor."""

    name = "jacobian-id-half"
    needs = frozenset({Need.BOUNDARY_EMBEDDING, Need.IN_DISTRIBUTION})
    id_filter = True
    id_threshold = 0.5


@register_strategy
class JacobianBoundaryFeatures(_BoundarySeeding):
    """Variant measured against ``jacobian``: ``[v(x), ‖v(x)‖·ĥ(x)]`` (ĥ the unit penultimate features), so
    items facing one boundary still differ by their features (a linear head's ``v`` has one
    direction per class pair); open-set filter as ``jacobian``."""

    name = "jacobian-features"
    needs = frozenset({Need.BOUNDARY_EMBEDDING, Need.IN_DISTRIBUTION, Need.EMBEDDINGS})
    id_filter = True
    feature_weight = 1.0


@register_strategy
class MarginKNN(Strategy):
    """Open-set baseline: ``margin`` among the items the in-distribution score calls labelable (the
    candidates of ``jacobian``'s filter, :func:`id_candidates`). Per-item score: the margin score."""

    name = "margin-knn"
    needs = frozenset({Need.IN_DISTRIBUTION})
    id_threshold: Optional[float] = None

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        s = _probs_or_nan(f, S.margin)
        idx = top_k(s, id_candidates(f, candidates, k, self.id_threshold), k, seed)
        return Selection(idx, s, s[idx])


@register_strategy
class LDMSeeding(Strategy):
    """LDM-S (Cho et al., ICLR 2024): small least-disagree-metric items, spread by weighted k-means++
    seeding on cosine distances of penultimate features (see :mod:`jacal.acquisition.ldm`).
    Per-item score: −LDM (higher = closer to the boundary)."""

    name = "ldm-s"
    needs = frozenset({Need.LDM, Need.EMBEDDINGS})

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        from jacal.acquisition.ldm import ldm_seeding

        picks, w = ldm_seeding(f.ldm, f.embeddings, k, candidates, seed=seed)
        return Selection(picks, -f.ldm, w)


@register_strategy
class Coreset(Strategy):
    """k-center greedy on penultimate-layer embeddings, starting from the labeled set (Sener & Savarese 2018).

    Per-item score: distance to the nearest labeled embedding (or to the pool mean without labels).
    """

    name = "coreset"
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
    needs = frozenset({Need.EMBEDDINGS})

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        a = np.nan_to_num(f.probs, nan=0.0)  # (N, K): a few numbers per item, the one copy made
        a[np.arange(len(a)), a.argmax(1)] -= 1.0
        h = torch.from_numpy(f.embeddings)
        picks, d2 = kmeans_pp_outer(torch.from_numpy(a), h, k, allowed=_allowed(len(a), candidates), seed=seed)
        s = np.full(len(f.finite), np.nan)
        s[candidates] = (np.linalg.norm(a, axis=1) * row_norms(h).numpy())[candidates]
        return Selection(picks, s, np.sqrt(d2))
