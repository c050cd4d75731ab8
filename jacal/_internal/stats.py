"""Small statistics shared by the replication suite and the active-learning loop.

Plain floats and dicts out, NaN where a statistic is undefined; scipy.stats does the work.
:mod:`jacal.replication.stats` (claims, verdicts) and :mod:`jacal.loop.summary` (learning curves,
paired comparisons over seeds) build on these; both the replication and the loop's per-model check
read :func:`pointwise_sensitivity`.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Sequence

import numpy as np
from scipy import stats

__all__ = ["finite", "finite_rows", "t_half_width", "mean_ci", "wilcoxon_p", "pointwise_sensitivity", "fmt"]


def finite(v: Any) -> bool:
    """True for a real number that is neither NaN nor ±inf (``None``, strings and others: False).

    >>> finite(0.5), finite(float("nan")), finite(None), finite(np.float64(2.0))
    (True, False, False, True)
    """
    return isinstance(v, numbers.Real) and math.isfinite(v)


def finite_rows(*arrays: Sequence[float]) -> List[np.ndarray]:
    """The arrays as float arrays, keeping only the positions where every one of them is finite.

    >>> [a.tolist() for a in finite_rows([1, 2, float("nan")], [4, float("inf"), 6])]
    [[1.0], [4.0]]
    """
    arrs = [np.asarray(a, dtype=float) for a in arrays]
    ok = np.ones(len(arrs[0]), dtype=bool)
    for a in arrs:
        ok &= np.isfinite(a)
    return [a[ok] for a in arrs]


def t_half_width(values: np.ndarray) -> float:
    """Half width of the two-sided 95% Student-t interval of the mean of ``values (n,)``, n ≥ 2:
    ``t_{0.975, n-1} · s / √n`` with ``s`` the sample standard deviation."""
    v = np.asarray(values, dtype=float)
    return float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def mean_ci(values: Sequence[float]) -> Dict[str, float]:
    """Mean of the finite ``values`` with its 95% t interval: ``{"mean", "ci_low", "ci_high", "n"}``
    (the interval is NaN with fewer than two values, everything NaN with none).

    >>> mean_ci([1.0, 2.0, 3.0, None])["mean"], mean_ci([4.0])["ci_low"]
    (2.0, nan)
    """
    v = np.asarray([x for x in values if finite(x)], dtype=float)
    if len(v) == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    if len(v) == 1:
        return {"mean": float(v[0]), "ci_low": math.nan, "ci_high": math.nan, "n": 1}
    half = t_half_width(v)
    return {"mean": float(v.mean()), "ci_low": float(v.mean() - half), "ci_high": float(v.mean() + half), "n": len(v)}


def wilcoxon_p(d: np.ndarray, alternative: str = "two-sided") -> float:
    """Wilcoxon signed-rank p of the differences ``d (n,)`` over their non-zero entries; NaN when
    fewer than two are non-zero."""
    d = np.asarray(d, dtype=float)
    if np.count_nonzero(d) < 2:
        return math.nan
    return float(stats.wilcoxon(d[d != 0], alternative=alternative).pvalue)


def pointwise_sensitivity(norms: Sequence[float], loss: Sequence[float], wrong: Sequence[bool]) -> Dict[str, float]:
    """Sensitivity against loss within one model (the replication's claim C4, the loop's check):
    Spearman ρ(‖J(x)‖, loss(x)) (with its p) and the AUROC of ‖J‖ for detecting misclassified points.
    Non-finite points are dropped; undefined statistics are NaN."""
    j, lo = np.asarray(norms, dtype=float), np.asarray(loss, dtype=float)
    w = np.asarray(wrong, dtype=bool)
    ok = np.isfinite(j) & np.isfinite(lo)
    j, lo, w = j[ok], lo[ok], w[ok]
    out = {"n": int(len(j)), "rho": math.nan, "p": math.nan, "auroc": math.nan}
    if len(j) >= 3 and np.ptp(j) > 0 and np.ptp(lo) > 0:
        r = stats.spearmanr(j, lo)
        out.update(rho=float(r.statistic), p=float(r.pvalue))
    if 0 < w.sum() < len(w):
        from sklearn.metrics import roc_auc_score

        out["auroc"] = float(roc_auc_score(w, j))
    return out


def fmt(v: Any, digits: int = 3) -> str:
    """A statistic as reports print it: floats to ``digits`` significant digits, "–" when undefined.

    >>> fmt(0.05253678691660495), fmt(0.7680738461538462, 2), fmt(float("nan")), fmt(None), fmt(12)
    ('0.0525', '0.77', '–', '–', '12')
    """
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)
