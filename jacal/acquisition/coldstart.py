"""Cold start: the first batch to label when nothing is labeled yet and no model is trained.

A model trained on nothing has no uncertainty worth reading, so the first batch is chosen from the
items' features alone (raw inputs, or any embedding the user has):

* ``typiclust`` (Hacohen et al., ICML 2022): k-means into ``k`` clusters (scikit-learn's
  ``KMeans``, ``MiniBatchKMeans`` above 50,000 items) and from each cluster its most typical item,
  the one with the highest typicality ``1 / mean distance to its 20 nearest neighbours`` in the
  cluster (scikit-learn's ``NearestNeighbors``): dense, representative items, one per region;
* ``kmeans++``: k-means++ seeding (scikit-learn's ``kmeans_plusplus``): spread-out items;
* ``random``: a seeded uniform draw (the usual baseline).

    >>> import numpy as np
    >>> from jacal.acquisition.coldstart import cold_start
    >>> x = np.concatenate([np.zeros((50, 2)), np.ones((50, 2)) * 10]) + np.random.default_rng(0).normal(size=(100, 2))
    >>> sorted(int(i) // 50 for i in cold_start(x, 2, method="typiclust"))
    [0, 1]
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jacal._internal.validation import check_choice, check_positive_int

__all__ = ["cold_start", "COLD_START_METHODS"]

COLD_START_METHODS = ("typiclust", "kmeans++", "random")


def _features(pool: Any) -> np.ndarray:
    import torch

    x = pool.detach().cpu().numpy() if isinstance(pool, torch.Tensor) else np.asarray(pool)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"Expected `pool` of shape (N, ...) with N >= 1, got {x.shape}.")
    x = x.reshape(len(x), -1).astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("`pool` has NaN/Inf values: drop those items before a cold start.")
    return x


def cold_start(pool: Any, k: int, *, method: str = "typiclust", seed: int = 0, neighbours: int = 20) -> np.ndarray:
    """``(k,)`` indices into ``pool (N, ...)`` (features, flattened) to label first."""
    check_choice("method", method, COLD_START_METHODS)
    x = _features(pool)
    check_positive_int("k", k, upper=len(x), upper_name="the pool")
    rng = np.random.default_rng(seed)
    if method == "random":
        return np.sort(rng.choice(len(x), size=k, replace=False))
    if method == "kmeans++":
        from sklearn.cluster import kmeans_plusplus

        _, idx = kmeans_plusplus(x, n_clusters=k, random_state=seed)
        return np.asarray(idx, dtype=np.int64)
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.neighbors import NearestNeighbors

    km = (KMeans(n_clusters=k, n_init=1, random_state=seed) if len(x) <= 50_000 else
          MiniBatchKMeans(n_clusters=k, n_init=3, random_state=seed, batch_size=4096)).fit(x)
    picks = []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        if len(members) == 0:
            continue
        m = min(neighbours, len(members) - 1)
        if m == 0:
            picks.append(int(members[0]))
            continue
        dist, _ = NearestNeighbors(n_neighbors=m + 1).fit(x[members]).kneighbors(x[members])
        typicality = 1.0 / (dist[:, 1:].mean(axis=1) + 1e-12)
        picks.append(int(members[np.argmax(typicality)]))
    if len(picks) < k:  # empty clusters (duplicates): fill with seeded random items
        rest = np.setdiff1d(np.arange(len(x)), picks)
        picks += rng.choice(rest, size=k - len(picks), replace=False).tolist()
    return np.asarray(picks, dtype=np.int64)
