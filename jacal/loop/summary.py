"""Learning curves into numbers: area under the curve, labels to reach an accuracy, paired comparisons.

* **AULC**: the area under one (strategy, seed) curve of test accuracy against labeled examples
  (trapezoids), divided by the label range: a mean accuracy over the run, in [0, 1].
* Per strategy: mean and 95% t interval over seeds of the AULC, the final accuracy and the
  acquisition time; the median over seeds of the labels needed to reach each threshold (``None``
  when a seed never reaches it).
* **Paired comparisons** against random and against the best baseline (the non-Jacobian,
  non-random strategy with the highest mean AULC): per-seed AULC differences over the seeds both
  ran (the same split, pool and first labeled set at a seed), their mean with a 95% t interval, a
  paired t-test and a Wilcoxon signed-rank test. Verdict: ``win``/``loss`` when the t-test gives
  p < 0.05, else ``tie`` (``inconclusive (one seed)`` with a single seed).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from scipy import stats

from jacal._internal.stats import mean_ci, t_half_width, wilcoxon_p
from jacal.loop.config import LoopConfig

__all__ = ["summarize", "aulc", "paired_seeds", "scenario_numbers", "stop_numbers", "metric_value", "PANEL_METRICS", "P_WIN"]

P_WIN = 0.05  # a paired t-test below this is a win or a loss


def aulc(n: np.ndarray, acc: np.ndarray) -> float:
    """Area under the accuracy-vs-labels curve ``acc (R,)`` at ``n (R,)`` labels, divided by the label
    range (a mean accuracy); the single accuracy for one round, NaN for none."""
    if len(n) < 2:
        return float(acc[0]) if len(acc) else math.nan
    return float(np.trapezoid(acc, n) / (n[-1] - n[0])) if hasattr(np, "trapezoid") else float(np.trapz(acc, n) / (n[-1] - n[0]))


def paired_seeds(a: Dict[int, float], b: Dict[int, float]) -> Dict[str, Any]:
    """Paired comparison of per-seed values ``a`` and ``b`` (seed → value) over their common seeds."""
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds])
    out = {"n_seeds": len(seeds), "mean_difference": float(d.mean()) if len(d) else math.nan, "p_ttest": math.nan,
           "p_wilcoxon": math.nan, "ci95_half_width": math.nan}
    if len(d) >= 2:  # t interval of the mean paired difference
        out["ci95_half_width"] = t_half_width(d)
    if len(d) >= 2 and np.ptp(d) > 0:
        out["p_ttest"] = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    out["p_wilcoxon"] = wilcoxon_p(d)
    p = out["p_ttest"]
    if not math.isfinite(p) or p >= P_WIN:
        out["verdict"] = "tie" if len(d) >= 2 else "inconclusive (one seed)"
    else:
        out["verdict"] = "win" if out["mean_difference"] > 0 else "loss"
    return out


#: the per-round scenario numbers a panel under the learning curve can show (key: what it is)
PANEL_METRICS = {"wasted_cumulative": "share of labels spent on out-of-set items",
                 "wasted_share": "share of the next batch out of the set",
                 "duplicate_share": "share of the batch repeating an item already sent",
                 "rarest_class_labels": "labels of the rarest class"}


def runs_of(rows: Sequence[tuple]) -> Dict[str, Dict[int, List[tuple]]]:
    """Rounds grouped by strategy, then seed (each run's rounds in the order given)."""
    by: Dict[str, Dict[int, List[tuple]]] = {}
    for r in rows:
        by.setdefault(r[0], {}).setdefault(r[1], []).append(r)
    return by


def metric_value(m: Dict[str, Any], key: str, n_labeled: int) -> float:
    """One per-round number of :data:`PANEL_METRICS` from a round's stored metrics."""
    if key == "wasted_cumulative":
        return m.get("wasted_total", 0) / n_labeled if n_labeled else math.nan
    if key == "rarest_class_labels":
        return float(min(m["labels_per_class"])) if m.get("labels_per_class") else math.nan
    return float(m.get(key, math.nan))


def scenario_numbers(rows: Sequence[tuple], metrics: Dict[tuple, dict]) -> Dict[str, Any]:
    """Per strategy, over seeds: the share of all labels spent on out-of-set items at the end
    (``wasted_share``, paired against random), the mean duplicate share of the batches, the labels
    per class at the end, and the AULC of balanced accuracy."""
    by = runs_of(rows)
    out: Dict[str, Any] = {}
    wasted: Dict[str, Dict[int, float]] = {}
    for strategy, seeds in by.items():
        w, dup, per_class, bal = {}, [], [], []
        for seed, rs in seeds.items():
            rs = sorted(rs, key=lambda r: r[2])
            ms = [metrics.get((strategy, seed, r[2])) for r in rs]
            if any(m is None for m in ms):
                continue
            last, n_last = ms[-1], rs[-1][3]
            w[seed] = last.get("wasted_total", 0) / n_last if n_last else math.nan
            dup += [m["duplicate_share"] for m in ms if "duplicate_share" in m]
            per_class.append(last["labels_per_class"])
            bal.append(aulc(np.array([r[3] for r in rs], float), np.array([m["balanced_accuracy"] for m in ms])))
        if not w:
            continue
        wasted[strategy] = w
        out[strategy] = {"wasted_share": mean_ci(list(w.values())), "duplicate_share": mean_ci(dup),
                         "labels_per_class": np.mean(per_class, axis=0).round(1).tolist(),
                         "balanced_aulc": mean_ci(bal)}
    for strategy in out:
        if strategy != "random" and "random" in wasted:
            out[strategy]["wasted_vs_random"] = paired_seeds(wasted[strategy], wasted["random"])
    return out


def stop_numbers(rows: Sequence[tuple], metrics: Dict[tuple, dict]) -> Dict[str, Any]:
    """Per strategy, where each stopping criterion of :data:`jacal.stopping.measure.REPLAYED` would have
    stopped each seed's run, against the oracle stop (:func:`jacal.stopping.stop_table`), and over
    seeds (labels at stop ÷ the oracle's, accuracy lost: mean and max)."""
    from jacal.stopping.measure import replay_record, summarize as summarize_stops

    out: Dict[str, Any] = {}
    for strategy, seeds in runs_of(rows).items():
        tables = {}
        for seed, rs in seeds.items():
            rs = sorted(rs, key=lambda r: r[2])
            ms = [metrics.get((strategy, seed, r[2])) or {} for r in rs]
            if len(rs) < 3 or any("stop_set" not in m for m in ms):
                continue
            tables[seed] = replay_record([r[3] for r in rs], [r[4] for r in rs], [m["stop_set"] for m in ms])
        if tables:
            out[strategy] = {"over_seeds": summarize_stops(list(tables.values())),
                             "per_seed": {str(s): t for s, t in tables.items()}}
    return out


def summarize(rows: Sequence[tuple], cfg: LoopConfig, metrics: Optional[Dict[tuple, dict]] = None) -> Dict[str, Any]:
    """Per-strategy AULC, final accuracy, labels to thresholds, acquisition time, paired comparisons,
    and with ``metrics`` (the rounds' scenario metrics) :func:`scenario_numbers` under ``"scenario"``
    and, where the rounds recorded their stop set, :func:`stop_numbers` under ``"stopping"``.

    ``rows``: rounds as :data:`jacal.loop.store.ROUND_COLUMNS` tuples.
    """
    by = runs_of(rows)
    per: Dict[str, Any] = {}
    areas: Dict[str, Dict[int, float]] = {}
    for strategy, seeds in by.items():
        areas[strategy] = {}
        finals, times, reach = [], [], {t: [] for t in cfg.thresholds}
        for seed, rs in seeds.items():
            rs = sorted(rs, key=lambda r: r[2])
            n = np.array([r[3] for r in rs], float)
            acc = np.array([r[4] for r in rs], float)
            areas[strategy][seed] = aulc(n, acc)
            finals.append(acc[-1])
            times += [r[6] for r in rs if r[6] is not None and math.isfinite(r[6])]
            for t in cfg.thresholds:
                hit = np.flatnonzero(acc >= t)
                reach[t].append(float(n[hit[0]]) if len(hit) else math.nan)
        per[strategy] = {"aulc": mean_ci(list(areas[strategy].values())), "final_accuracy": mean_ci(finals),
                         "labels_to_reach": {str(t): (float(np.median(v)) if np.isfinite(v).all() else None)
                                             for t, v in reach.items()},
                         "acquisition_time_s": mean_ci(times), "rounds_per_seed": max(len(v) for v in seeds.values())}
    baselines = [s for s in per if not s.startswith("jacobian") and s != "random"]
    best = max(baselines, key=lambda s: per[s]["aulc"]["mean"]) if baselines else None
    for s in per:
        if s != "random" and "random" in areas:
            per[s]["vs_random"] = paired_seeds(areas[s], areas["random"])
        if best is not None and s != best:
            per[s]["vs_best_baseline"] = {"baseline": best, **paired_seeds(areas[s], areas[best])}
    ranking = sorted(per, key=lambda s: -per[s]["aulc"]["mean"])
    out = {"strategies": per, "ranking": ranking, "best_baseline": best}
    if metrics:
        out["scenario"] = scenario_numbers(rows, metrics)
        stops = stop_numbers(rows, metrics)
        if stops:
            out["stopping"] = stops
    return out
