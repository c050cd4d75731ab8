"""Batch-diversity selection: k-center greedy and factorized k-means++ seeding, in bounded memory.

k-center greedy (Sener & Savarese 2018) and k-means++ seeding (Arthur & Vassilvitskii 2007) are
written here rather than taken from scikit-learn or faiss because

1. scikit-learn has no k-center greedy, and ``sklearn.cluster.kmeans_plusplus`` cannot start from
   given centers (the origin or a labeled set, see :func:`kmeans_pp`), replaces plain D² sampling
   by a greedy variant with local trials (BADGE uses plain D² sampling), and needs the embedding
   matrix itself, which for BADGE is N × (K·d);
2. both algorithms are sequential: each pick depends on the distances updated by the previous one,
   so the work is one matrix-vector product over the pool per pick, bound by memory bandwidth.
   faiss's batched nearest-neighbour search has nothing to batch here, and its k-means is Lloyd's
   iteration, not seeding.

Memory: the functions take the whole ``(N, d)`` embedding matrix as it is (a view, never a copy;
float32 is fine) plus an ``allowed`` mask of the rows that may be picked, and keep only a few
numbers per row besides (squared norms, current distances). Distances are formed as
``‖x − μ‖² − 2 (x − μ)·(c − μ) + ‖c − μ‖²`` with μ the mean of the allowed rows, where the centred
squared norms are computed once, chunk by chunk, and ``(x − μ)·w = x·w − μ·w``: no N × d temporary.
BADGE's gradient embeddings ``g_i = a_i ⊗ h_i`` are never formed either: their inner products factor
as ``⟨g_i, g_j⟩ = ⟨a_i, a_j⟩⟨h_i, h_j⟩``, so N × (K + d) numbers suffice (a million-item pool with
K = 10 and a 512-wide penultimate layer: 2 GB instead of 20 GB).

Below the memory wall. Read literally, both algorithms pass over the whole embedding once per
pick: at a million items and 512 numbers each, k = 1,000 picks stream 2 TB, so their speed is the
machine's memory bandwidth (``benchmarks/bench_acquire.py`` measures both). The exact k-means++
seedings avoid that pass without changing their law (:class:`_Rejection`): D² only falls as centers
are added, so each row's D² to the starting centers bounds it for the whole seeding; a pick draws
rows ∝ that bound from one running sum and accepts a row with probability D²/bound, its D² computed
for that row alone against the centers so far. Rejection sampling makes the accepted row exactly
D²-distributed. A pick costs ΣD²₀/ΣD² proposals on average, the factor by which the seeding has
lowered the k-means cost; on 512-wide embeddings that factor stays small (``bench_acquire.py
--compare-passes`` reports it), and when proposals keep failing one pass lowers the bound to the
current D². A triangle-inequality bound that skips rows a new center cannot reach (Elkan 2003, Raff
2021) does not help here: in 512 dimensions nearly every row stays within reach of a new center.
k-center greedy has no such trick (its argmax needs every row's
current distance), and each function also has an approximate path, chosen by ``method`` (keyword,
default ``None``: the :func:`selection` context's, itself ``"auto"`` unless set):

* ``"exact"``: the algorithm as stated above (k-means++ by rejection, k-center by a pass per pick;
  :data:`REJECTION` ``= False`` gives the pass-per-pick k-means++, the reference in tests).
* ``"mcmc"`` (:func:`kmeans_pp`, :func:`kmeans_pp_outer`): AFK-MC² seeding (Bachem, Lucic, Hassani
  & Krause 2016, "Fast and provably good seedings for k-means"). One pass over the pool builds the
  proposal ``q(x) = ½·D²(x, C₀)/ΣD² + ½/n`` (``C₀``: the starting centers or the first pick); each
  pick is then the end of a Metropolis–Hastings chain of ``chain_length`` proposals drawn from ``q``
  whose stationary law is D² sampling, and it only computes those proposals' distances to the
  centers chosen so far. Per pick it reads ``chain_length`` rows plus the centers instead of all
  ``N`` rows. Trades: the picks follow D² sampling up to the chain's mixing error, not exactly (the
  paper bounds the expected k-means cost by k-means++'s guarantee plus ``ε·Var(X)`` for chains of
  length ``O(log(k/ε)/ε)``; 200, its experiments' setting, is the default here), and the cost of a
  pick grows with the number of centers (``chain_length × centers`` distances).
* ``"sketch"`` (:func:`k_center_greedy`): the greedy runs exactly, but on a seeded Gaussian
  Johnson–Lindenstrauss sketch ``(x − μ) S`` (``S (d, sketch_dim)``, entries N(0, 1/sketch_dim))
  of the allowed rows, built in one pass. Per pick it reads ``sketch_dim`` numbers per row instead of
  ``d``; the extra memory is one float32 ``(n_allowed, sketch_dim)`` matrix. Trades: squared
  distances are those of the sketch (relative error of about ``√(2/sketch_dim)``, 18% at 64), so
  the farthest-point order can differ from the exact one; the reported distance of each pick is
  still its exact distance to the centers before it.
* ``"approximate"``: each function's approximate path (``"mcmc"`` or ``"sketch"``).
* ``"auto"`` (the default): k-center greedy runs ``"exact"`` while the exact path's traffic
  (embedding bytes × k) stays below :data:`AUTO_EXACT_MAX_BYTES` and ``"sketch"`` above; the
  k-means++ seedings stay ``"exact"`` (:data:`AUTO_MCMC`): the rejection path reads few rows per
  pick and keeps D² sampling's law exactly, while AFK-MC²'s ``chain_length × centers`` distances per
  pick cost more at a thousand centers and its picks follow D² sampling only up to the chain's
  mixing error. ``benchmarks/bench_acquire.py --compare-exact`` measures both trades.

:func:`trace` records what each call ran (method, bytes read per pick, seconds), for the benchmark.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Iterator, List, Optional

import numpy as np
import torch

__all__ = ["k_center_greedy", "kmeans_pp", "kmeans_pp_outer", "selection", "trace", "SELECTION_METHODS"]

_CHUNK_ELEMENTS = 1 << 22  # temporaries of at most 4M numbers (32 MB in float64)

#: The values ``method`` (and :func:`selection`) accept; ``"mcmc"`` applies to the k-means++
#: seedings, ``"sketch"`` to k-center greedy.
SELECTION_METHODS = ("auto", "exact", "approximate", "mcmc", "sketch")
#: ``"auto"`` keeps k-center exact while the embedding's bytes × k are at most this (16 GB: a few
#: seconds of memory traffic on a laptop; the digits and 20,000-item MNIST loops stay exact, a
#: 60,000-item pool of 512-wide embeddings with k = 1,000 does not).
AUTO_EXACT_MAX_BYTES = 16 * 10 ** 9
#: Whether ``"auto"`` lets the k-means++ seedings use ``"mcmc"`` above :data:`AUTO_EXACT_MAX_BYTES`
#: (off: the exact rejection path is faster and keeps D² sampling's law, see the module docstring).
AUTO_MCMC = False
#: Metropolis–Hastings proposals per pick of the ``"mcmc"`` seeding (Bachem et al. 2016 use 200).
CHAIN_LENGTH = 200
#: Columns of the ``"sketch"`` path's Gaussian sketch.
SKETCH_DIM = 64
#: Whether the exact k-means++ seedings draw by rejection from the starting D² (:class:`_Rejection`:
#: the same law, no pass over the pool per pick). ``False``: one pass per pick, as before (the
#: benchmark's baseline, ``bench_acquire.py --compare-passes``).
REJECTION = True

_METHOD: contextvars.ContextVar = contextvars.ContextVar("jacal_selection_method", default="auto")
_TRACE: contextvars.ContextVar = contextvars.ContextVar("jacal_selection_trace", default=None)


@contextlib.contextmanager
def selection(method: str) -> Iterator[None]:
    """Within the block, diversity functions called without ``method`` use this one (as
    ``sklearn.config_context`` does for its settings): e.g. ``with selection("exact"):`` makes every
    strategy select exactly, without strategies passing anything through.

    >>> import torch
    >>> x = torch.randn(50, 4)
    >>> with selection("exact"):
    ...     picks, _ = kmeans_pp(x, 3, seed=0)
    >>> picks.shape
    (3,)
    """
    _check_method(method)
    token = _METHOD.set(method)
    try:
        yield
    finally:
        _METHOD.reset(token)


@contextlib.contextmanager
def trace() -> Iterator[List[dict]]:
    """Collect one record per diversity call made inside the block: ``{"function", "method", "n",
    "k", "bytes_per_pick", "setup_bytes", "seconds"}``; ``bytes_per_pick`` counts the arrays each pick
    reads (the embedding or its sketch or the chain's rows and the centers, plus the per-row
    vectors), ``setup_bytes`` the passes made once (norms, mean, sketch, proposal)."""
    calls: List[dict] = []
    token = _TRACE.set(calls)
    try:
        yield calls
    finally:
        _TRACE.reset(token)


def _check_method(method: str) -> str:
    if method not in SELECTION_METHODS:
        raise ValueError(f"Expected `method` to be one of {list(SELECTION_METHODS)}, got {method!r}.")
    return method


def _resolve(method: Optional[str], approximate: str, exact_bytes: int, k: int) -> str:
    """The path to run: ``method`` or the context's, with ``"auto"``/``"approximate"`` resolved."""
    m = _check_method(method if method is not None else _METHOD.get())
    if m == "auto":
        big = exact_bytes * max(int(k), 1) > AUTO_EXACT_MAX_BYTES
        m = approximate if big and (approximate != "mcmc" or AUTO_MCMC) else "exact"
    if m == "approximate":
        m = approximate
    if m not in ("exact", approximate):
        raise ValueError(f"method {m!r} does not apply here: use 'exact' or {approximate!r}.")
    return m


def _record(function: str, method: str, n: int, k: int, bytes_per_pick: float, setup_bytes: float, t0: float,
            **extra: float) -> None:
    calls = _TRACE.get()
    if calls is not None:
        calls.append({"function": function, "method": method, "n": int(n), "k": int(k),
                      "bytes_per_pick": float(bytes_per_pick), "setup_bytes": float(setup_bytes),
                      "seconds": time.perf_counter() - t0, **extra})


def _row_chunk(x: torch.Tensor) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, x[0].numel() if len(x) else 1))


def _allowed(allowed: Optional[torch.Tensor], n: int) -> torch.Tensor:
    if allowed is None:
        return torch.ones(n, dtype=torch.bool)
    allowed = torch.as_tensor(allowed, dtype=torch.bool)
    if allowed.shape != (n,):
        raise ValueError(f"Expected `allowed` to be a boolean mask of shape ({n},), got {tuple(allowed.shape)}.")
    return allowed


def _weights(weights: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
    """Row weights for a weighted D² draw as float64 ``(n,)`` (NaN → 0), or ``None``."""
    if weights is None:
        return None
    w = torch.as_tensor(weights).double()
    if w.shape != (n,) or bool((w < 0).any()):
        raise ValueError(f"Expected `weights` to be ({n},) non-negative numbers, got shape {tuple(w.shape)}.")
    return torch.nan_to_num(w, nan=0.0)


def row_norms(x: torch.Tensor, *, squared: bool = False, shift: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``‖x_i − shift‖`` (or its square) for every row of ``x (N, d)``, returned in float64, a chunk of
    rows at a time (no N × d temporary). Each row's sum runs in ``x``'s dtype (float32: relative error
    about 1e-6, the precision of the float32 distances built on it; casting every chunk to float64
    first cost ten times the pass)."""
    out = torch.empty(len(x), dtype=torch.float64)
    step = _row_chunk(x)
    for s in range(0, len(x), step):
        xc = x[s:s + step]
        if shift is not None:
            xc = xc - shift.to(x.dtype)
        out[s:s + step] = xc.square().sum(dim=1)
    return out if squared else out.sqrt()


def row_mean(x: torch.Tensor, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The mean ``(d,)`` of the ``allowed`` rows of ``x (N, d)`` (others may hold NaN), in ``x``'s dtype,
    accumulated in float64 a chunk of rows at a time."""
    ok = _allowed(allowed, len(x))
    total = torch.zeros(x.shape[1:], dtype=torch.float64)
    step = _row_chunk(x)
    for s in range(0, len(x), step):
        xc, okc = x[s:s + step], ok[s:s + step]
        total += (xc if bool(okc.all()) else xc[okc]).double().sum(dim=0)
    return (total / max(1, int(ok.sum()))).to(x.dtype)


class _Distances:
    """Squared distances from every row of ``x`` to one vector at a time, around the allowed rows' mean."""

    def __init__(self, x: torch.Tensor, allowed: torch.Tensor):
        self.x = x
        self.allowed = allowed
        self.mu = row_mean(x, allowed)
        self.sq = row_norms(x, squared=True, shift=self.mu).to(x.dtype)

    def to_vector(self, c: torch.Tensor) -> torch.Tensor:
        """``‖x_i − c‖²`` for every row, in ``x``'s dtype (anything, NaN included, for rows that are not
        allowed: callers mask them)."""
        w = c.to(self.x.dtype) - self.mu
        return (self.sq - 2 * (self.x @ w - self.mu @ w) + w @ w).clamp_min_(0)

    def to_row(self, j: int) -> torch.Tensor:
        return self.to_vector(self.x[j])

    def to_row64(self, j: int) -> torch.Tensor:
        return self.to_vector(self.x[j]).double()

    def to_nearest(self, centers: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
        """Squared distance to the nearest row of ``centers (M, d)``, a chunk of centers at a time."""
        c = centers.to(self.x.dtype) - self.mu
        chunk = chunk or max(1, _CHUNK_ELEMENTS // max(1, len(self.x)))
        d2 = torch.full((len(self.x),), float("inf"), dtype=self.x.dtype)
        for s in range(0, len(c), chunk):
            cc = c[s:s + chunk]
            prod = self.x @ cc.T - (self.mu @ cc.T)[None, :]
            part = (self.sq[:, None] - 2 * prod + cc.pow(2).sum(dim=1)[None, :]).clamp_min_(0).min(dim=1).values
            d2 = torch.minimum(d2, part)
        return torch.where(self.allowed, d2.double(), torch.zeros((), dtype=torch.float64))


def min_distances(x: torch.Tensor, centers: torch.Tensor, *, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Distance ``(N,)`` from each row of ``x (N, d)`` to its nearest row of ``centers (M, d)`` (float64;
    0 for rows outside ``allowed``). Both sides are shifted by the mean of the allowed rows of ``x``,
    which shrinks the norms and so the cancellation of the expansion (in float32, distances are
    accurate to ~1e-3·spread)."""
    return _Distances(x, _allowed(allowed, len(x))).to_nearest(centers).sqrt()


def k_center_greedy(x: torch.Tensor, k: int, *, centers: Optional[torch.Tensor] = None,
                    allowed: Optional[torch.Tensor] = None, seed: int = 0, method: Optional[str] = None,
                    sketch_dim: int = SKETCH_DIM) -> tuple:
    """Pick ``k`` rows of ``x (N, d)``, each the farthest from everything chosen so far.

    One matrix-vector product over ``x`` per pick, in ``x``'s dtype, clamped at 0; memory beyond
    ``x``: a few numbers per row.

    Args:
        x: embeddings (rows outside ``allowed`` may hold anything, NaN included).
        k: how many to pick (≤ allowed rows).
        centers: embeddings ``(M, d)`` already covered (the labeled set); when absent the first
            pick is the point farthest from the mean.
        allowed: ``(N,)`` bool, the rows that may be picked (default: all).
        seed: breaks exact ties (and seeds the sketch).
        method: ``"exact"``, ``"sketch"`` (the greedy on a seeded Gaussian sketch of ``sketch_dim``
            columns: see the module docstring for what it trades), ``"approximate"`` (= ``"sketch"``)
            or ``"auto"``; default: the :func:`selection` context's (``"auto"``).
        sketch_dim: the sketch's columns (``"sketch"`` only; at least ``d``: exact instead).

    Returns:
        ``(indices (k,), distances (k,))``: picks (rows of ``x``) in order and each one's distance
        to the nearest earlier center at the time it was picked (exact on both paths).
    """
    ok = _allowed(allowed, len(x))
    t0 = time.perf_counter()
    m = _resolve(method, "sketch", x.element_size() * x[0].numel() * len(x), k)
    d = x[0].numel() if len(x) else 0
    if m == "sketch" and sketch_dim < d:
        picks, dists, n_ok = _k_center_sketch(x, k, centers, ok, seed, sketch_dim)
        _record("k_center_greedy", "sketch", len(x), k, n_ok * (4 * sketch_dim + 3 * 4),
                2 * x.element_size() * d * len(x) + n_ok * x.element_size() * d, t0)
        return picks, dists
    picks, dists = _k_center_exact(x, k, centers, ok, seed)
    _record("k_center_greedy", "exact", len(x), k, len(x) * (x.element_size() * (d + 3)),
            2 * x.element_size() * d * len(x), t0)
    return picks, dists


def _k_center_exact(x: torch.Tensor, k: int, centers: Optional[torch.Tensor], ok: torch.Tensor, seed: int) -> tuple:
    dist = _Distances(x, ok)
    if centers is not None and len(centers):
        d2 = dist.to_nearest(centers).to(x.dtype)
    else:
        d2 = dist.to_vector(dist.mu)
    d2[~ok] = -1.0
    jitter = torch.from_numpy(np.random.default_rng(seed).random(len(x)) * 1e-9).to(x.dtype)
    picks, dists = [], []
    for _ in range(k):
        i = int(torch.argmax(d2 + jitter * d2.max().clamp_min(1e-30)))
        picks.append(i)
        dists.append(float(d2[i].clamp_min(0).sqrt()))
        d2 = torch.fmin(d2, dist.to_row(i))  # rows not allowed stay at −1 (fmin skips their NaN)
        d2[i] = -1.0
    return np.asarray(picks, dtype=np.int64), np.asarray(dists)


def _sketch_matrix(d: int, dim: int, seed: int) -> torch.Tensor:
    """The seeded Gaussian sketch ``(d, dim)``, entries N(0, 1/dim), so ``E‖v S‖² = ‖v‖²``."""
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    return torch.randn(d, dim, generator=g, dtype=torch.float64) / np.sqrt(dim)


def _k_center_sketch(x: torch.Tensor, k: int, centers: Optional[torch.Tensor], ok: torch.Tensor, seed: int,
                     dim: int) -> tuple:
    """k-center greedy on ``(x[ok] − μ) S``; returns picks as rows of ``x``, their exact distances and
    the number of allowed rows."""
    rows = torch.nonzero(ok).squeeze(1)
    flat = x.reshape(len(x), -1)
    mu = row_mean(flat, ok).double()
    s = _sketch_matrix(flat.shape[1], dim, seed).to(flat.dtype)
    mu_s = (mu.to(flat.dtype) @ s)
    y = torch.empty(len(rows), dim, dtype=torch.float32)
    step = max(1, _CHUNK_ELEMENTS // max(1, flat.shape[1]))
    for a in range(0, len(rows), step):
        y[a:a + step] = (flat[rows[a:a + step]] @ s - mu_s).float()
    cy = None
    if centers is not None and len(centers):
        cy = (centers.reshape(len(centers), -1).to(flat.dtype) @ s - mu_s).float()
    sub, _ = _k_center_exact(y, k, cy, torch.ones(len(rows), dtype=torch.bool), seed)
    picks = rows[torch.from_numpy(sub)]
    ref = centers.reshape(len(centers), -1) if centers is not None and len(centers) else mu[None, :]
    return picks.numpy().astype(np.int64), _distances_at_pick(flat, picks, ref), len(rows)


def _distances_at_pick(x: torch.Tensor, picks: torch.Tensor, centers: torch.Tensor) -> np.ndarray:
    """Exact distance ``(k,)`` of each pick (rows of ``x``) to the nearest of ``centers (M, d)`` and of
    the picks before it, in float64 (k-center greedy's convention: without centers, the mean is one)."""
    p = x[picks].double()
    d2 = torch.cdist(p, p).pow(2)
    d2 = torch.where(torch.tril(torch.ones(len(p), len(p), dtype=torch.bool), diagonal=-1), d2,
                     torch.tensor(float("inf"), dtype=torch.float64)).min(dim=1).values
    c = centers.double()
    for a in range(0, len(c), 4096):
        d2 = torch.minimum(d2, torch.cdist(p, c[a:a + 4096]).pow(2).min(dim=1).values)
    return d2.clamp_min(0).sqrt().numpy()


def kmeans_pp_outer(a: torch.Tensor, h: torch.Tensor, k: int, *, allowed: Optional[torch.Tensor] = None,
                    seed: int = 0, method: Optional[str] = None, chain_length: int = CHAIN_LENGTH,
                    rejection: Optional[bool] = None, weights: Optional[torch.Tensor] = None) -> tuple:
    """k-means++ seeding on implicit embeddings ``g_i = a_i ⊗ h_i`` (BADGE).

    ``‖g_i − g_j‖² = ‖a_i‖²‖h_i‖² + ‖a_j‖²‖h_j‖² − 2⟨a_i, a_j⟩⟨h_i, h_j⟩`` — exact, never forming g.

    Args:
        a: ``(N, K)`` (softmax minus one-hot of the predicted class).
        h: ``(N, d)`` penultimate-layer embeddings (used as they are: no copy when float32).
        k: picks.
        allowed: ``(N,)`` bool, the rows that may be picked (default: all).
        seed: sampling seed.
        method: ``"exact"`` (D² sampling, one pass over ``a`` and ``h`` per pick), ``"mcmc"``
            (AFK-MC², ``chain_length`` proposals per pick: see the module docstring for what it
            trades), ``"approximate"`` (= ``"mcmc"``) or ``"auto"``; default: the :func:`selection`
            context's (``"auto"``).
        chain_length: proposals per pick (``"mcmc"`` only).
        rejection: ``"exact"`` draws each pick by rejection from the D² to the first pick
            (:class:`_Rejection`: the same law, no pass per pick) or, ``False``, by a pass per pick;
            default :data:`REJECTION`.
        weights: ``(N,)`` non-negative row weights ``w``: draws ∝ ``w·D²`` and the first pick the
            largest ``w·‖g‖²`` (e.g. the probability that an item can be labeled); ``None``: all 1.

    Returns:
        ``(indices (k,), d2_at_pick (k,))``. The first pick is the largest-norm embedding (as in
        BADGE's reference code), each later one is sampled with probability ∝ D² (``"mcmc"``: by
        a chain whose stationary law that is); ``d2_at_pick`` is exact on both paths (unweighted).
    """
    ok = _allowed(allowed, len(a))
    w = _weights(weights, len(a))
    t0 = time.perf_counter()
    row_bytes = a[0].numel() * 8 + h[0].numel() * 4 if len(a) else 0
    m = _resolve(method, "mcmc", len(a) * row_bytes, k)
    a = a.double()
    h = h if h.dtype == torch.float32 else h.float()
    norms2 = torch.where(ok, a.pow(2).sum(1) * row_norms(h, squared=True), torch.zeros((), dtype=torch.float64))
    rng = np.random.default_rng(seed)
    first = int(torch.argmax(torch.where(ok, norms2 if w is None else w * norms2,
                                         torch.tensor(-1.0, dtype=torch.float64))))
    picks, d2_at = [first], [float(norms2[first])]

    def d2_to(j: int) -> torch.Tensor:
        d2 = (norms2 + norms2[j] - 2 * (a @ a[j]) * (h @ h[j]).double()).clamp_min(0)
        return torch.where(ok, d2, torch.zeros((), dtype=torch.float64))

    if m == "exact" and not (REJECTION if rejection is None else rejection):
        out = _d2_sampling(d2_to(first), d2_to, k, picks, d2_at, rng, ok, w)
        _record("kmeans_pp_outer", "exact", len(a), k, len(a) * (row_bytes + 3 * 8), 2 * len(a) * row_bytes, t0)
        return out
    centers = [first]
    if m == "exact":
        held = {"c": torch.empty(k, dtype=torch.int64), "n": 1, "ref": 1}
        held["c"][0] = first
        ref = {"d2": d2_to(first)}

        def row_d2(rows: torch.Tensor) -> torch.Tensor:
            c = held["c"][:held["n"]]
            d = (norms2[rows][:, None] + norms2[c][None, :]
                 - 2 * (a[rows] @ a[c].T) * (h[rows] @ h[c].T).double())
            return d.clamp_min(0).min(dim=1).values

        def add_center(j: int) -> None:
            held["c"][held["n"]] = j
            held["n"] += 1

        def refresh() -> torch.Tensor:
            for j in held["c"][held["ref"]:held["n"]].tolist():
                ref["d2"] = torch.minimum(ref["d2"], d2_to(j))
            held["ref"] = held["n"]
            return ref["d2"].clone()

        sampler = _Rejection(ref["d2"].clone(), row_d2, add_center, refresh, ok, weights=w)
        out = sampler.sample(k, picks, d2_at, rng)
        per_pick = sampler.proposals / max(1, k - 1)
        _record("kmeans_pp_outer", "exact", len(a), k, per_pick * row_bytes * (1 + held["n"] / 2),
                2 * len(a) * row_bytes + sampler.refreshes * len(a) * row_bytes * (k / 2), t0,
                proposals_per_pick=per_pick, refreshes=sampler.refreshes)
        return out

    def to_centers(rows: np.ndarray) -> np.ndarray:
        c = torch.as_tensor(centers)
        r = torch.from_numpy(rows)
        d2 = norms2[r][:, None] + norms2[c][None, :] - 2 * (a[r] @ a[c].T) * (h[r] @ h[c].T).double()
        return d2.clamp_min(0).min(dim=1).values.numpy()

    def to_all() -> torch.Tensor:
        d2 = d2_to(centers[0])
        for j in centers[1:]:
            d2 = torch.minimum(d2, d2_to(j))
        return d2

    out = _mcmc_sampling(d2_to(first), to_centers, centers.append, to_all, k, picks, d2_at, rng, ok, chain_length, w)
    _record("kmeans_pp_outer", "mcmc", len(a), k, chain_length * row_bytes + (1 + k / 2) * (row_bytes + 8),
            3 * len(a) * row_bytes, t0)
    return out


def _mcmc_sampling(d2: torch.Tensor, to_centers, add_center, to_all, k: int, picks: list, d2_at: list,
                   rng: np.random.Generator, allowed: torch.Tensor, chain_length: int,
                   weights: Optional[torch.Tensor] = None) -> tuple:
    """AFK-MC² (Bachem et al. 2016): the k-means++ loop with each D² draw replaced by an independent
    Metropolis–Hastings chain. ``d2 (N,)`` float64: squared distance to the starting centers (any
    value outside ``allowed``); ``to_centers(rows (m,)) -> (m,)`` the squared distances of those rows
    to every center so far, ``add_center(j)`` makes row ``j`` one, ``to_all() -> (N,)`` the exact D²
    of every row (a full pass: only when a chain ends on a row with D² = 0, e.g. every proposal
    already chosen). ``weights (N,)``: the chains' target is ``w·D²`` instead of ``D²``."""
    chain_length = max(1, int(chain_length))
    ok = allowed.numpy()
    w = None if weights is None else weights.numpy()
    base = np.where(ok, np.nan_to_num(d2.numpy(), nan=0.0), 0.0)
    if w is not None:
        base = base * w
    chosen = ~ok.copy()
    chosen[picks] = True
    base[chosen] = 0.0
    free = ok & ~chosen
    q = np.where(free, 1.0, 0.0) / max(1, int(free.sum()))
    if base.sum() > 0:
        q = 0.5 * base / base.sum() + 0.5 * q
    q = q / q.sum()
    todo = k - len(picks)
    if todo <= 0:
        return np.asarray(picks[:k], dtype=np.int64), np.asarray(d2_at[:k])
    draws = rng.choice(len(q), size=(todo, chain_length), p=q)
    uniform = rng.random((todo, chain_length))
    for t in range(todo):
        props = draws[t]
        dy = to_centers(props)
        dy[chosen[props]] = 0.0
        if w is not None:
            dy = dy * w[props]
        qy = q[props]
        u = uniform[t]
        cur = 0
        for j in range(1, chain_length):  # independent proposals: accept y with prob min(1, π(y)q(x) / (π(x)q(y)))
            if dy[j] * qy[cur] > u[j] * dy[cur] * qy[j]:
                cur = j
        if dy[cur] > 0:
            j = int(props[cur])
            dj = float(dy[cur]) if w is None else float(to_centers(props[cur:cur + 1])[0])
        else:  # the chain found no row off the centers: one exact draw
            full = to_all().numpy().copy()
            full[chosen] = 0.0
            target = full if w is None else full * w
            total = target.sum()
            j = int(np.flatnonzero(~chosen)[0]) if total <= 0 else int(rng.choice(len(full), p=target / total))
            dj = float(full[j])
        picks.append(j)
        d2_at.append(dj)
        chosen[j] = True
        add_center(j)
    return np.asarray(picks, dtype=np.int64), np.asarray(d2_at)


def _draw(cum: torch.Tensor, total: float, rng: np.random.Generator, size: int) -> torch.Tensor:
    """``size`` rows drawn ∝ the weights whose running sum is ``cum``: uniforms against the running sum
    (the inverse-CDF draw), never a row of zero weight. numpy's ``choice(p=...)`` would validate and
    renormalise ``p`` in several more passes over the pool per draw."""
    u = torch.from_numpy(rng.random(size) * total).to(cum.dtype)
    return torch.searchsorted(cum, u, right=True).clamp_(max=len(cum) - 1)


def _d2_sampling(d2: torch.Tensor, d2_to, k: int, picks: list, d2_at: list, rng: np.random.Generator,
                 allowed: torch.Tensor, weights: Optional[torch.Tensor] = None) -> tuple:
    """The k-means++ loop with one pass over the pool per pick: draw rows ∝ ``d2`` (float64, squared
    distance to the nearest center so far, 0 at ``picks`` and outside ``allowed``; ∝ ``weights·d2``
    when given) until there are ``k`` picks; ``d2_to(j)`` gives every row's squared distance to row ``j``."""
    chosen = ~allowed.clone()
    chosen[picks] = True
    d2[chosen] = 0.0
    while len(picks) < k:
        cum = torch.cumsum(d2 if weights is None else torch.nan_to_num(d2, nan=0.0) * weights, 0)
        total = float(cum[-1]) if len(cum) else 0.0
        if total <= 0:  # every remaining row coincides with a center: take the next unpicked in order
            j = int(torch.nonzero(~chosen)[0])
        else:
            j = int(_draw(cum, total, rng, 1)[0])
        picks.append(j)
        d2_at.append(float(d2[j]))
        chosen[j] = True
        d2 = torch.fmin(d2, d2_to(j))  # never raises a value: picked rows stay at 0, NaN rows (not allowed) too
    return np.asarray(picks, dtype=np.int64), np.asarray(d2_at)


class _Rejection:
    """Exact D² sampling without a pass over the pool per pick.

    D² only falls as centers are added, so every row's D² to the starting centers bounds its D² for
    the rest of the seeding. A pick draws rows ∝ that bound ``b`` (one running sum, built once) and
    accepts row ``i`` with probability ``D²(i) / b(i)``, ``D²(i)`` computed for that row alone
    against every center so far: the accepted row is distributed ∝ ``D²`` exactly (rejection
    sampling), whatever the bound's slack. Picked rows have ``D² = 0`` and are never accepted again.
    A pick costs ``ΣD²₀ / ΣD²`` proposals on average (the fall of the k-means cost so far), each
    ``centers × d`` numbers, instead of a pass over ``N × d``. After ``max_rejections`` proposals in a
    row fail (the cost fell far), one pass brings the bound down to the current ``D²``
    (``refresh``) and the running sum is rebuilt. The bound carries an absolute rounding margin of
    ``1e-7 ×`` its largest value, so every row's proposal weight moves with that one value: last-bit
    differences of the embedding (e.g. from 1 vs 2 threads) change the draws more often than on the
    pass-per-pick path (seen in a digits loop; the law is unaffected).

    Args:
        bound: ``(N,)`` float64, each row's D² to the starting centers (any value outside ``allowed``).
        row_d2: ``fn(rows) -> (len(rows),)`` float64 exact D² of those rows to every center so far.
        add_center: ``fn(j)``: row ``j`` is a center from now on.
        refresh: ``fn() -> (N,)`` float64 exact D² of every row to every center so far (a pass).
        allowed: ``(N,)`` bool.
        weights: ``(N,)`` non-negative: rows are drawn ∝ ``weights·D²`` (the proposal ∝ ``weights·b``,
            the same acceptance ``D²/b``).
    """

    def __init__(self, bound: torch.Tensor, row_d2, add_center, refresh, allowed: torch.Tensor,
                 batch: int = 16, max_rejections: int = 256, weights: Optional[torch.Tensor] = None):
        self.row_d2, self.add_center, self.refresh = row_d2, add_center, refresh
        self.weights = weights
        self.allowed, self.batch, self.max_rejections = allowed, batch, max_rejections
        self.proposals = self.refreshes = 0
        self._set_bound(bound)

    def _set_bound(self, d2: torch.Tensor) -> None:
        b = torch.where(self.allowed, torch.nan_to_num(d2, nan=0.0), torch.zeros((), dtype=torch.float64))
        # rounding margin: the bound comes from float32 expansions, the accepted D² from float64 rows
        top = float(b.max()) if len(b) else 0.0
        b = torch.where(b > 0, b * (1 + 1e-5) + 1e-7 * top, b)
        self.bound = b
        self.cum = torch.cumsum(self._proposal(), 0)
        self.total = float(self.cum[-1]) if len(b) else 0.0

    def _proposal(self) -> torch.Tensor:
        return self.bound if self.weights is None else self.bound * self.weights

    def sample(self, k: int, picks: list, d2_at: list, rng: np.random.Generator) -> tuple:
        chosen = ~self.allowed.clone()
        chosen[picks] = True
        self.bound[chosen] = 0.0  # rows already picked: zero weight from the start
        self.cum = torch.cumsum(self._proposal(), 0)
        self.total = float(self.cum[-1]) if len(self.bound) else 0.0
        failed = 0
        while len(picks) < k:
            if self.total <= 0:  # every remaining row coincides with a center: take the next unpicked in order
                j = int(torch.nonzero(~chosen)[0])
                dj = 0.0
            else:
                rows = _draw(self.cum, self.total, rng, self.batch)
                d2 = self.row_d2(rows)
                accept = torch.from_numpy(rng.random(self.batch)) * self.bound[rows] < d2
                hit = torch.nonzero(accept)
                if len(hit) == 0:
                    self.proposals += self.batch
                    failed += self.batch
                    if failed >= self.max_rejections:  # the bound is far above D²: bring it down
                        d2_all = self.refresh()
                        d2_all[chosen] = 0.0
                        self._set_bound(d2_all)
                        self.refreshes += 1
                        failed = 0
                    continue
                first = int(hit[0])  # the first accepted of i.i.d. proposals; the rest are discarded
                self.proposals += first + 1
                j, dj = int(rows[first]), float(d2[first])
            failed = 0
            picks.append(j)
            d2_at.append(dj)
            chosen[j] = True
            self.add_center(j)
        return np.asarray(picks, dtype=np.int64), np.asarray(d2_at)


def kmeans_pp(x: torch.Tensor, k: int, *, centers: Optional[torch.Tensor] = None,
              allowed: Optional[torch.Tensor] = None, seed: int = 0, method: Optional[str] = None,
              chain_length: int = CHAIN_LENGTH, rejection: Optional[bool] = None,
              weights: Optional[torch.Tensor] = None) -> tuple:
    """k-means++ seeding (D² sampling) of ``k`` rows of ``x (N, d)``, starting from ``centers``.

    Each pick is drawn with probability ∝ its squared distance to the nearest center so far. With
    ``centers`` = the origin (as :class:`~jacal.acquisition.strategies.JacobianKMeans` passes for
    Jacobian embeddings) the first pick is drawn ∝ ‖x‖² and an item's chance never exceeds its own
    squared norm: magnitude decides how likely a pick is, direction keeps the batch diverse.

    Args:
        x: ``(N, d)`` embeddings (float32 is fine: distances are formed around the mean).
        k: picks (≤ allowed rows).
        centers: ``(M, d)`` centers that already exist; ``None``: the first pick is the
            largest-norm row (as BADGE's reference code does).
        allowed: ``(N,)`` bool, the rows that may be picked (default: all).
        seed: sampling seed.
        method: ``"exact"`` (D² sampling, one pass over ``x`` per pick), ``"mcmc"`` (AFK-MC²,
            ``chain_length`` proposals per pick: see the module docstring for what it trades),
            ``"approximate"`` (= ``"mcmc"``) or ``"auto"``; default: the :func:`selection` context's
            (``"auto"``).
        chain_length: proposals per pick (``"mcmc"`` only).
        rejection: ``"exact"`` draws each pick by rejection from the starting D² (:class:`_Rejection`:
            the same law, no pass over the pool per pick) or, ``False``, by a pass per pick; default
            :data:`REJECTION`.
        weights: ``(N,)`` non-negative row weights ``w``: each pick drawn ∝ ``w·D²`` (and, without
            ``centers``, the first pick the largest ``w·‖x‖²``); ``None``: all 1.

    Returns:
        ``(indices (k,), d2_at_pick (k,))`` (``d2_at_pick`` exact on both paths, unweighted).
    """
    ok = _allowed(allowed, len(x))
    w = _weights(weights, len(x))
    t0 = time.perf_counter()
    row_bytes = x[0].numel() * x.element_size() if len(x) else 0
    m = _resolve(method, "mcmc", len(x) * row_bytes, k)
    dist = _Distances(x, ok)
    picks, d2_at = [], []
    rng = np.random.default_rng(seed)
    if centers is not None and len(centers):
        d2 = dist.to_nearest(centers)
        start = centers.reshape(len(centers), -1).double()
    else:
        norms2 = torch.where(ok, row_norms(x, squared=True), torch.tensor(-1.0, dtype=torch.float64))
        first = int(torch.argmax(norms2 if w is None else torch.where(ok, w * norms2, norms2)))
        picks.append(first)
        d2_at.append(float(norms2[first]))
        d2 = dist.to_row64(first)
        start = x[first].reshape(1, -1).double()
    if m == "exact" and not (REJECTION if rejection is None else rejection):
        out = _d2_sampling(d2, dist.to_row64, k, picks, d2_at, rng, ok, w)
        _record("kmeans_pp", "exact", len(x), k, len(x) * (row_bytes + x.element_size() + 3 * 8),
                3 * len(x) * row_bytes, t0)
        return out
    flat = x.reshape(len(x), -1)
    if m == "exact":
        mu = dist.mu.reshape(-1).double()
        held = {"c": torch.empty(len(start) + k, flat.shape[1], dtype=torch.float64), "n": len(start)}
        held["c"][:len(start)] = start - mu  # centers around the mean, in float64
        held["sq"] = torch.zeros(len(start) + k, dtype=torch.float64)
        held["sq"][:len(start)] = held["c"][:len(start)].pow(2).sum(1)
        ref = {"d2": d2.clone(), "n": held["n"]}  # D² exact against the first ref["n"] centers

        def row_d2(rows: torch.Tensor) -> torch.Tensor:
            y = flat[rows].double() - mu
            n = held["n"]
            d = y.pow(2).sum(1)[:, None] + held["sq"][None, :n] - 2 * (y @ held["c"][:n].T)
            return d.clamp_min(0).min(dim=1).values

        def add_center(j: int) -> None:
            n = held["n"]
            held["c"][n] = flat[j].double() - mu
            held["sq"][n] = held["c"][n].pow(2).sum()
            held["n"] = n + 1

        def refresh() -> torch.Tensor:
            new = held["c"][ref["n"]:held["n"]] + mu
            if len(new):
                ref["d2"] = torch.minimum(ref["d2"], dist.to_nearest(new.to(x.dtype)))
                ref["n"] = held["n"]
            return ref["d2"].clone()

        sampler = _Rejection(d2, row_d2, add_center, refresh, ok, weights=w)
        out = sampler.sample(k, picks, d2_at, rng)
        per_pick = sampler.proposals / max(1, k - (0 if centers is not None and len(centers) else 1))
        _record("kmeans_pp", "exact", len(x), k, per_pick * (row_bytes + 8 * held["n"] / 2),
                3 * len(x) * row_bytes + sampler.refreshes * len(x) * row_bytes, t0,
                proposals_per_pick=per_pick, refreshes=sampler.refreshes)
        return out
    held = {"c": torch.empty(len(start) + k, flat.shape[1], dtype=torch.float64), "n": len(start)}
    held["c"][:len(start)] = start
    held["sq"] = held["c"].pow(2).sum(1)

    def to_centers(rows: np.ndarray) -> np.ndarray:
        n = held["n"]
        y = flat[torch.from_numpy(rows)].double()
        d2 = y.pow(2).sum(1)[:, None] + held["sq"][None, :n] - 2 * (y @ held["c"][:n].T)
        return d2.clamp_min(0).min(dim=1).values.numpy()

    def add_center(j: int) -> None:
        n = held["n"]
        held["c"][n] = flat[j].double()
        held["sq"][n] = held["c"][n].pow(2).sum()
        held["n"] = n + 1

    def to_all() -> torch.Tensor:
        return dist.to_nearest(held["c"][:held["n"]].to(x.dtype))

    out = _mcmc_sampling(d2, to_centers, add_center, to_all, k, picks, d2_at, rng, ok, chain_length, w)
    _record("kmeans_pp", "mcmc", len(x), k, chain_length * row_bytes + (len(start) + k / 2) * flat.shape[1] * 8,
            4 * len(x) * row_bytes, t0)
    return out
