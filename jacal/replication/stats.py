"""Statistics for the claims: correlations with bootstrap CIs, paired tests, verdicts.

Everything is scipy.stats / scikit-learn; this module only packages results as plain dicts.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Optional, Sequence

import numpy as np
from scipy import stats

from jacal._internal.stats import finite_rows, pointwise_sensitivity, wilcoxon_p

__all__ = ["pointwise_sensitivity", "correlation", "paired_comparison", "one_sample_greater", "verdict", "ALPHA", "MIN_N", "MIN_PAIRS"]

ALPHA = 0.01      # significance level of every pre-declared rule
MIN_N = 10        # fewer models than this → inconclusive
MIN_PAIRS = 8     # a one-sided sign test cannot reach p < 0.01 with fewer than 7 pairs


def correlation(x: Sequence[float], y: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> Dict[str, float]:
    """Spearman ρ with a paired bootstrap 95% CI (percentile), its p-value, and Kendall τ.

    Non-finite pairs are dropped. Returns NaNs when fewer than 3 pairs remain or a side is constant.
    """
    x, y = finite_rows(x, y)
    n = len(x)
    out = {"n": n, "rho": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "tau": math.nan, "tau_p": math.nan}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    r = stats.spearmanr(x, y)
    t = stats.kendalltau(x, y)
    out.update(rho=float(r.statistic), p=float(r.pvalue), tau=float(t.statistic), tau_p=float(t.pvalue))
    if n >= 5:
        def rho(a, b):
            v = stats.spearmanr(a, b).statistic
            return 0.0 if not np.isfinite(v) else v
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            bs = stats.bootstrap((x, y), rho, paired=True, vectorized=False, n_resamples=n_boot,
                                 confidence_level=0.95, method="percentile", random_state=seed)
        out.update(ci_low=float(bs.confidence_interval.low), ci_high=float(bs.confidence_interval.high))
    return out


def paired_comparison(base: Sequence[float], variant: Sequence[float], *, predicted: str, log: bool = True) -> Dict[str, float]:
    """Does ``variant`` sit on the predicted side of the diagonal against ``base``?

    Args:
        predicted: ``"greater"`` (variant > base predicted) or ``"less"``.
        log: compare log-ratios (for positive quantities like Jacobian norms) rather than differences.

    Returns:
        n, fraction on the predicted side, one-sided sign-test p (binomial, ties dropped),
        one-sided Wilcoxon signed-rank p, and the median log10-ratio (or difference).
    """
    b, v = finite_rows(base, variant)
    if log:
        keep = (b > 0) & (v > 0)
        b, v = b[keep], v[keep]
        d = np.log10(v) - np.log10(b)
    else:
        d = v - b
    n = len(d)
    sign = 1.0 if predicted == "greater" else -1.0
    out = {"n": n, "fraction_predicted": math.nan, "sign_p": math.nan, "wilcoxon_p": math.nan,
           "median_log10_ratio" if log else "median_difference": math.nan}
    if n == 0:
        return out
    nz = d[d != 0]
    wins = int(np.sum(sign * nz > 0))
    out["fraction_predicted"] = float(np.mean(sign * d > 0))
    out["median_log10_ratio" if log else "median_difference"] = float(np.median(d))
    if len(nz):
        out["sign_p"] = float(stats.binomtest(wins, len(nz), 0.5, alternative="greater").pvalue)
        out["wilcoxon_p"] = wilcoxon_p(sign * d, alternative="greater")
    return out


def one_sample_greater(values: Sequence[float], threshold: float = 0.0) -> Dict[str, float]:
    """Median, fraction above ``threshold`` and one-sided Wilcoxon p that values exceed it."""
    (v,) = finite_rows(values)
    out = {"n": len(v), "median": math.nan, "fraction_above": math.nan, "p": math.nan}
    if len(v) == 0:
        return out
    out.update(median=float(np.median(v)), fraction_above=float(np.mean(v > threshold)))
    out["p"] = wilcoxon_p(v - threshold, alternative="greater")
    return out


def verdict(*, n: int, p: float, direction_ok: Optional[bool], min_n: int = MIN_N, alpha: float = ALPHA) -> Dict[str, str]:
    """The pre-declared rule: too few → inconclusive; predicted direction with p < α → replicated;
    opposite direction with p < α → not replicated; otherwise not replicated (no significant effect)
    when n ≥ 2·min_n, inconclusive below that."""
    if n < min_n:
        return {"verdict": "inconclusive", "reason": f"too few models (n={n} < {min_n})"}
    if p is None or not np.isfinite(p) or direction_ok is None:
        return {"verdict": "inconclusive", "reason": "statistic undefined (constant or missing values)"}
    if p < alpha and direction_ok:
        return {"verdict": "replicated", "reason": f"predicted direction, p={p:.2g} < {alpha}"}
    if p < alpha and not direction_ok:
        return {"verdict": "not replicated", "reason": f"opposite direction, p={p:.2g}"}
    if n >= 2 * min_n:
        return {"verdict": "not replicated", "reason": f"no significant effect (p={p:.2g}, n={n})"}
    return {"verdict": "inconclusive", "reason": f"no significant effect with few models (p={p:.2g}, n={n})"}
