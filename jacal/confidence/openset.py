"""In-distribution scores for open-set acquisition: is a pool item one the annotators can label?

An open pool holds items nobody can label (unseen classes, blank or corrupted scans, other domains).
Each round of labeling tells which of the items sent came back as a class and which came back as
"none of these"; :func:`in_distribution` turns those two sets into a per-item score.

Maths [jacal's choice]: on unit-normalised penultimate features ``ĥ`` (cosine geometry, as the
``knn`` confidence), let ``d_in(x)`` be the mean distance from ``ĥ(x)`` to its ``m`` nearest
labeled in-set items and ``d_out(x)`` the same to the known out-of-set items. The score is

    s(x) = d_out(x) / (d_in(x) + d_out(x))   ∈ [0, 1],

a soft nearest-neighbour vote: 1 on top of a labeled in-set item, 0 on top of a known out-of-set
one, ½ halfway. With no out-of-set answer yet there is nothing to contrast, and every item scores 1
(acquisition is then exactly what it is on a closed pool).

Where to cut (:func:`in_distribution_floor`): the same score for each labeled in-set item, left
out of its own bank (leave-one-out), tells how low a score real in-set items get; the floor is its
``1 − coverage`` quantile (coverage 0.95: 95% of labeled in-set items score at or above it), a
split-conformal threshold. Early on, with a few labels, in-set items of classes nobody has labeled
yet sit far from every bank and score about ½, as do the labeled ones that are alone in their
class, so the floor drops and they stay candidates; a fixed cut at ½ would drop half of them.

    >>> import numpy as np
    >>> from jacal.confidence.openset import in_distribution
    >>> pool = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    >>> in_distribution(pool, np.array([[1.0, 0.1]]), np.array([[0.1, 1.0]]), m=1).round(2)
    array([0.93, 0.07, 0.5 ])

From score to probability (:func:`in_set_probability`): the score ranks items but is no probability
(½ means "as near the one bank as the other", whatever the share of items annotators can label).
Every answer so far is a labeled example of the question "can this item be labeled?": each labeled
in-set item and each item answered "none of these" gets its score left out of its own bank
(leave-one-out, as for the floor), and a logistic regression on ``logit(s)`` (scikit-learn,
L2 penalty ``C = 1`` on the slope) maps the score to ``P(in | x)``. The regression's intercept carries
the share of labelable items among those sent, so the probability is calibrated to the items the
acquisition actually sends; a slope that comes out ≤ 0 (answers the score cannot separate) gives every
item that share. The acquisition layer weighs what each item teaches by this probability (see
:func:`jacal.acquire`, ``open_set``): no hard cut.

Spreading the answers over the pool (:func:`spread_in_set`, on by default in
:func:`in_set_probability`): the score above reads only the answered items, so an item of a kind
nobody has sent yet (a cluster of blank scans, an unknown digit's variants) scores only by how far it
is from the few answers. Label spreading (Zhou et al. 2004, scikit-learn's ``LabelSpreading`` with a
``n_neighbors``-nearest-neighbour graph) carries each answer to the pool items it connects to, item to
item, so a cluster inherits its answered members' verdict. The probability is then
``σ(logit P_knn(x) + logit ls(x) + b)`` with ``b`` set so that the pool's expected number of labelable
items stays the calibration's (``Σ P`` unchanged): the spread changes which items look unlabelable,
not how many, so a cut that follows the contamination (the ``"share-floor"`` layer) keeps its depth.
On MNIST open pools it cut the labels wasted under margin, BADGE, LDM-S and `jacobian` on 31 of 32
pool and strategy cells and raised the area under the learning curve by up to 0.07
(docs/benchmarks/open-pools.md).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["in_distribution", "in_distribution_floor", "mean_nearest_distance", "leave_one_out_scores",
           "InSetCalibration", "calibrate_in_set", "spread_in_set", "in_set_probability"]

#: Up to this many finite pool rows, label spreading (:func:`spread_in_set`) runs on all of them.
SPREAD_MAX_EXACT = 20000
#: Above it, the spreading runs on this many rows drawn at random, in features projected to
#: :data:`SPREAD_DIM` dimensions, and the other rows take the mean of their nearest ones' result:
#: the nearest-neighbour graph grows with the square of the rows, and at a million rows of 512
#: features even the mean over anchors would cost a pass of minutes in full dimension.
SPREAD_ANCHORS = 1024
#: The dimension of the random projection above :data:`SPREAD_MAX_EXACT` rows (a Gaussian
#: projection keeps cosine neighbourhoods approximately; Johnson–Lindenstrauss).
SPREAD_DIM = 32


def _unit(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, dtype=np.float32)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def _answer_banks(in_embeddings: np.ndarray, out_embeddings: np.ndarray, d: int) -> "list[np.ndarray]":
    """The finite rows of ``in_embeddings`` and ``out_embeddings``, each checked to be ``(M, d)``."""
    banks = []
    for name, e in (("in_embeddings", in_embeddings), ("out_embeddings", out_embeddings)):
        e = np.asarray(e)
        if e.ndim != 2 or e.shape[1] != d:
            raise ValueError(f"Expected `{name}` of shape (M, {d}), got {e.shape}.")
        banks.append(e[np.isfinite(e).all(axis=1)])
    return banks


def _rows(a: np.ndarray) -> torch.Tensor:
    """``a`` as a float32 tensor, without a copy where it can (one chunk's copy of read-only memory,
    e.g. a memory-mapped array: torch wants writable memory, as :func:`jacal.features.iter_pool` does)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def mean_nearest_distance(q: np.ndarray, bank: np.ndarray, m: int, *, chunk: int = 4096) -> np.ndarray:
    """``(N,)`` mean Euclidean distance from each unit row of ``q (N, d)`` to its ``m`` nearest unit
    rows of ``bank (M, d)`` (brute force, one matrix product and top-m per chunk of ``q``)."""
    m = max(1, min(int(m), len(bank)))
    b = _rows(bank)
    out = np.empty(len(q))
    for s in range(0, len(q), chunk):
        sim = _rows(q[s:s + chunk]) @ b.T
        top = sim.topk(m, dim=1).values.double()
        out[s:s + chunk] = torch.sqrt(torch.clamp(2.0 - 2.0 * top, min=0.0)).mean(dim=1).numpy()
    return out


def in_distribution(pool_embeddings: np.ndarray, in_embeddings: np.ndarray,
                    out_embeddings: Optional[np.ndarray] = None, *, m: int = 3) -> np.ndarray:
    """Per-item in-distribution score ``(N,)`` in ``[0, 1]`` (module docstring).

    Args:
        pool_embeddings: ``(N, d)`` features of the pool items (rows with NaN score NaN).
        in_embeddings: ``(M_in, d)`` features of labeled in-set items.
        out_embeddings: ``(M_out, d)`` features of items answered "none of these" (``None`` or
            empty: every item scores 1).
        m: neighbours averaged on each side.
    """
    pool = np.asarray(pool_embeddings)
    if pool.ndim != 2:
        raise ValueError(f"Expected `pool_embeddings` of shape (N, d), got {pool.shape}.")
    if out_embeddings is None or len(out_embeddings) == 0:
        return np.where(_finite_rows(pool), 1.0, np.nan)
    banks = [_unit(b) for b in _answer_banks(in_embeddings, out_embeddings, pool.shape[1])]
    if len(banks[1]) == 0:  # no finite "none of these" row: nothing to contrast
        return np.where(_finite_rows(pool), 1.0, np.nan)
    if len(banks[0]) == 0:  # nothing labeled in the set yet: every item is as likely as the next
        return np.where(_finite_rows(pool), 0.5, np.nan)
    return _scores(pool, banks[0], banks[1], m)


def _finite_rows(pool: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``(N,)`` whether each row of ``pool`` is finite, a chunk of rows at a time (no ``(N, d)`` mask)."""
    return np.concatenate([np.isfinite(pool[s:s + chunk]).all(axis=1) for s in range(0, len(pool), chunk)]) \
        if len(pool) else np.zeros(0, dtype=bool)


def _scores(pool: np.ndarray, bank_in: np.ndarray, bank_out: np.ndarray, m: int, chunk: int = 4096) -> np.ndarray:
    """:func:`in_distribution`'s score for every row of ``pool`` against unit banks, in one pass over
    the pool a chunk of rows at a time (NaN for non-finite rows): at a million rows of 512 features a
    whole-pool normalised copy would be 2 GB written and read again."""
    out = np.empty(len(pool))
    for s in range(0, len(pool), chunk):
        x = _rows(pool[s:s + chunk])
        ok = torch.isfinite(x).all(dim=1)
        x = torch.where(ok[:, None], x, torch.zeros((), dtype=x.dtype))
        q = (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()
        d_in, d_out = mean_nearest_distance(q, bank_in, m, chunk=chunk), mean_nearest_distance(q, bank_out, m, chunk=chunk)
        score = d_out / np.maximum(d_in + d_out, 1e-12)
        score[(d_in + d_out) <= 1e-12] = 0.5
        out[s:s + chunk] = np.where(ok.numpy(), score, np.nan)
    return out


def in_distribution_floor(in_embeddings: np.ndarray, out_embeddings: Optional[np.ndarray] = None, *, m: int = 3,
                          coverage: float = 0.95) -> float:
    """The score below which an item is more out-of-set-like than ``coverage`` of the labeled in-set
    items (leave-one-out scores, module docstring); ``0.0`` when there is nothing to contrast."""
    if not 0 < coverage < 1:
        raise ValueError(f"Expected `coverage` in (0, 1), got {coverage!r}.")
    if out_embeddings is None or len(out_embeddings) == 0:
        return 0.0
    ins = np.asarray(in_embeddings)
    ins = ins[np.isfinite(ins).all(axis=1)] if ins.ndim == 2 else ins
    outs = np.asarray(out_embeddings)
    outs = outs[np.isfinite(outs).all(axis=1)]
    if len(ins) < 2 or len(outs) == 0:
        return 0.0
    q = _unit(ins)
    d_in, d_out = _loo_distance(q, m), mean_nearest_distance(q, _unit(outs), m)
    loo = d_out / np.maximum(d_in + d_out, 1e-12)
    return float(np.quantile(loo, 1 - coverage, method="lower"))


def _loo_distance(bank: np.ndarray, m: int) -> np.ndarray:
    """Mean distance of each unit row of ``bank`` to its ``m`` nearest other rows (itself left out)."""
    m = max(1, min(int(m), len(bank) - 1))
    sim = torch.from_numpy(bank) @ torch.from_numpy(bank).T
    sim.fill_diagonal_(-np.inf)
    top = sim.topk(m, dim=1).values.double()
    return torch.sqrt(torch.clamp(2.0 - 2.0 * top, min=0.0)).mean(dim=1).numpy()


def leave_one_out_scores(in_embeddings: np.ndarray, out_embeddings: np.ndarray, *, m: int = 3
                         ) -> "tuple[np.ndarray, np.ndarray]":
    """The score :func:`in_distribution` gives each answered item with itself left out of its own bank:
    ``(in_scores (M_in,), out_scores (M_out,))`` (non-finite rows dropped). An item alone in its bank
    scores ½ (nothing to contrast it with)."""
    ins, outs = (_unit(e[np.isfinite(e).all(axis=1)]) for e in (np.asarray(in_embeddings), np.asarray(out_embeddings)))
    s_in, s_out = np.full(len(ins), 0.5), np.full(len(outs), 0.5)
    if len(ins) >= 2 and len(outs):
        d_in, d_out = _loo_distance(ins, m), mean_nearest_distance(ins, outs, m)
        s_in = d_out / np.maximum(d_in + d_out, 1e-12)
    if len(outs) >= 2 and len(ins):
        d_in, d_out = mean_nearest_distance(outs, ins, m), _loo_distance(outs, m)
        s_out = d_out / np.maximum(d_in + d_out, 1e-12)
    return s_in, s_out


def _logit(s: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(s, dtype=np.float64), 1e-3, 1 - 1e-3)
    return np.log(s) - np.log1p(-s)


class InSetCalibration:
    """``P(in | s) = σ(intercept + slope·logit(s))`` for an in-distribution score ``s``
    (:func:`calibrate_in_set` fits it)."""

    def __init__(self, intercept: float, slope: float):
        self.intercept, self.slope = float(intercept), float(slope)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        z = self.intercept + self.slope * _logit(scores)
        out = 1.0 / (1.0 + np.exp(-z))
        return np.where(np.isfinite(np.asarray(scores, dtype=np.float64)), out, np.nan)

    def __repr__(self) -> str:
        return f"InSetCalibration(intercept={self.intercept:.4g}, slope={self.slope:.4g})"


def calibrate_in_set(in_scores: np.ndarray, out_scores: np.ndarray, *, C: float = 1.0) -> InSetCalibration:
    """Fit ``P(in | s)`` by logistic regression on ``logit(s)``: label 1 for ``in_scores`` (labeled in-set
    items), 0 for ``out_scores`` (items answered "none of these"); ``C`` the inverse L2 penalty on the
    slope (scikit-learn's). Without both kinds of answer, or with a slope ≤ 0, the probability is the
    share of in-set answers, whatever the score."""
    from sklearn.linear_model import LogisticRegression

    if not (isinstance(C, (int, float)) and C > 0):
        raise ValueError(f"Expected `C` to be a positive number, got {C!r}.")
    a, b = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (in_scores, out_scores))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    share = (len(a) + 0.5) / (len(a) + len(b) + 1.0)  # never exactly 0 or 1
    prior = InSetCalibration(np.log(share) - np.log1p(-share), 0.0)
    if len(a) == 0 or len(b) == 0:
        return prior
    x = _logit(np.concatenate([a, b]))[:, None]
    y = np.r_[np.ones(len(a)), np.zeros(len(b))]
    fit = LogisticRegression(C=float(C)).fit(x, y)
    slope = float(fit.coef_[0, 0])
    return prior if slope <= 0 else InSetCalibration(float(fit.intercept_[0]), slope)


def spread_in_set(pool_embeddings: np.ndarray, in_embeddings: np.ndarray, out_embeddings: np.ndarray, *,
                  n_neighbors: int = 10, alpha: float = 0.8, max_exact: int = SPREAD_MAX_EXACT,
                  anchors: int = SPREAD_ANCHORS, dim: int = SPREAD_DIM, seed: int = 0) -> np.ndarray:
    """``(N,)`` in ``[0, 1]``: the share of the "labelable" label that label spreading carries from the
    answers (``in_embeddings`` labelable, ``out_embeddings`` "none of these") to each pool item over
    the ``n_neighbors``-nearest-neighbour graph of unit-normalised features (module docstring); NaN
    for non-finite rows.

    ``alpha``: the share of its neighbours' labels each item takes per iteration (scikit-learn's
    ``LabelSpreading``). Beyond ``max_exact`` finite pool rows, the features are projected to ``dim``
    dimensions (a Gaussian matrix drawn with ``seed``, when they have more), the spreading runs on
    ``anchors`` rows drawn at random (``seed``) and every other row takes the mean result of its
    ``n_neighbors`` nearest anchors or answered items, as scikit-learn's ``predict_proba`` would,
    computed a chunk at a time in one matrix product (its per-row loop takes minutes at a million rows).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.semi_supervised import LabelSpreading

    pool = np.asarray(pool_embeddings)
    if pool.ndim != 2:
        raise ValueError(f"Expected `pool_embeddings` of shape (N, d), got {pool.shape}.")
    raw = _answer_banks(in_embeddings, out_embeddings, pool.shape[1])
    if not (isinstance(n_neighbors, (int, np.integer)) and n_neighbors >= 1):
        raise ValueError(f"Expected `n_neighbors` to be a positive integer, got {n_neighbors!r}.")
    if not 0 < alpha < 1:
        raise ValueError(f"Expected `alpha` in (0, 1), got {alpha!r}.")
    finite = _finite_rows(pool)
    ok = np.flatnonzero(finite)
    out = np.full(len(pool), np.nan)
    if len(raw[0]) == 0 or len(raw[1]) == 0:  # one kind of answer: nothing to spread against
        out[ok] = 0.5 if len(raw[0]) == len(raw[1]) else float(len(raw[0]) > 0)
        return out
    rng = np.random.default_rng(seed)
    g = None
    if len(ok) <= max_exact:
        anchors = ok
    else:
        anchors = np.sort(rng.choice(ok, min(int(anchors), len(ok)), replace=False))
        if pool.shape[1] > dim:  # unit(unit(x) @ g) = unit(x @ g): the rows need no normalising first
            g = torch.from_numpy(rng.standard_normal((pool.shape[1], int(dim))).astype(np.float32))

    def embed(e: np.ndarray) -> torch.Tensor:
        t = _rows(e)
        t = t @ g if g is not None else t
        return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)

    bank = torch.cat([embed(pool[anchors]), embed(raw[0]), embed(raw[1])])
    y = np.r_[np.full(len(anchors), -1), np.ones(len(raw[0])), np.zeros(len(raw[1]))].astype(np.int64)
    ls = LabelSpreading(kernel="knn", n_neighbors=min(int(n_neighbors), len(bank) - 1), alpha=float(alpha), max_iter=100)
    with warnings.catch_warnings():  # a graph that has not settled in 100 steps still ranks items
        warnings.simplefilter("ignore", ConvergenceWarning)
        dist = ls.fit(bank.numpy(), y).label_distributions_
    share = dist[:, 1] / np.maximum(dist.sum(axis=1), 1e-12)
    out[anchors] = share[:len(anchors)]
    rest = finite.copy()
    rest[anchors] = False
    val, kk = torch.from_numpy(share), min(int(n_neighbors), len(bank))
    block = 1024  # a block's similarities (1,024 × the bank) stay in cache for the top-k that reads them
    for s in np.unique(np.flatnonzero(rest) // block) * block:  # the blocks holding rows to extend to
        m = rest[s:s + block]
        q = embed(np.asarray(pool[s:s + block]))[torch.from_numpy(m)]  # embedded first: a view, not a gathered copy
        top = (q @ bank.T).topk(kk, dim=1, sorted=False).indices
        out[s + np.flatnonzero(m)] = val[top].mean(dim=1).numpy()
    return out


def _anchored(p: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """``σ(logit p + logit spread + b)`` with ``b`` such that the result sums to ``Σ p`` (module docstring)."""
    from scipy.optimize import brentq
    from scipy.special import expit

    z = _logit(p) + _logit(spread)
    target = float(p.sum())
    if len(p) == 0 or not 0 < target < len(p):
        return p
    b = brentq(lambda b: float(expit(z + b).sum()) - target, -60.0, 60.0)
    return expit(z + b)


def in_set_probability(pool_embeddings: np.ndarray, in_embeddings: np.ndarray,
                       out_embeddings: Optional[np.ndarray] = None, *, m: int = 3, C: float = 1.0,
                       spread: bool = True) -> dict:
    """``P(in | x)`` for every pool item, calibrated on the answers so far (module docstring).

    ``spread``: re-rank the calibrated probability by label spreading over the pool
    (:func:`spread_in_set`), its pool total kept; ``False``: the calibrated nearest-neighbour score alone.

    Returns a dict: ``probability (N,)`` (1 everywhere, NaN for non-finite rows, when nothing came
    back "none of these"), ``score (N,)`` (:func:`in_distribution`), ``floor`` (the conformal floor
    of the score, :func:`in_distribution_floor`), ``calibration`` (the fitted
    :class:`InSetCalibration`, ``None`` without out-of-set answers) and ``spread`` (``(N,)``
    :func:`spread_in_set`'s result, ``None`` when it did not run).
    """
    score = in_distribution(pool_embeddings, in_embeddings, out_embeddings, m=m)
    if out_embeddings is None or len(out_embeddings) == 0:
        return {"probability": score, "score": score, "floor": 0.0, "calibration": None, "spread": None}
    s_in, s_out = leave_one_out_scores(in_embeddings, out_embeddings, m=m)
    cal = calibrate_in_set(s_in, s_out, C=C)
    # in_distribution_floor from the same leave-one-out scores: 0.0 with nothing to contrast
    floor = float(np.quantile(s_in, 0.05, method="lower")) if len(s_in) >= 2 and len(s_out) else 0.0
    prob, ls = cal(score), None
    if spread and len(s_in) and len(s_out):
        ls = spread_in_set(pool_embeddings, in_embeddings, out_embeddings)
        ok = np.isfinite(prob)
        prob = prob.copy()
        prob[ok] = _anchored(prob[ok], ls[ok])
    return {"probability": prob, "score": score, "floor": floor, "calibration": cal, "spread": ls}
