"""``curves.png``: the learning curves, and each strategy's accuracy minus random's at the same seed."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from jacal._internal.plotting import pyplot, save_png
from jacal._internal.stats import mean_ci
from jacal.loop.config import LoopConfig
from jacal.loop.summary import PANEL_METRICS, metric_value

__all__ = ["plot_curves", "curve_bands", "metric_bands", "panel_metric"]

Band = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # labeled examples, mean, low, high: (R,) each


def curve_bands(rows: Sequence[tuple]) -> Dict[str, Dict[str, Band]]:
    """What ``curves.png`` draws, per panel and strategy: ``(n_labeled, mean, low, high)`` over seeds.

    ``"accuracy"``: test accuracy, mean and 95% t interval clipped to [0, 1]. ``"vs_random"``: the
    strategy's accuracy minus random's at the same seed and round (paired), mean and 95% t interval
    clipped to [-1, 1]; random itself is left out. With one seed the band is the mean.
    """
    acc = {(r[0], r[1], r[3]): r[4] for r in rows}
    panels: Dict[str, Dict[str, Band]] = {"accuracy": {}, "vs_random": {}}
    for strategy in sorted({r[0] for r in rows}):
        rs = [r for r in rows if r[0] == strategy]
        ns = sorted({r[3] for r in rs})
        for panel, value, bound in (("accuracy", lambda r: r[4], (0, 1)),
                                    ("vs_random", lambda r: r[4] - acc.get(("random", r[1], r[3]), math.nan), (-1, 1))):
            if panel == "vs_random" and strategy == "random":
                continue
            cis = [mean_ci([value(r) for r in rs if r[3] == n]) for n in ns]
            mean = np.array([c["mean"] for c in cis])
            lo = np.array([c["ci_low"] if math.isfinite(c["ci_low"]) else c["mean"] for c in cis])
            hi = np.array([c["ci_high"] if math.isfinite(c["ci_high"]) else c["mean"] for c in cis])
            panels[panel][strategy] = (np.array(ns), mean, np.clip(lo, *bound), np.clip(hi, *bound))
    return panels


def panel_metric(cfg: LoopConfig, metrics: Optional[Dict[tuple, dict]]) -> Optional[str]:
    """Which scenario number goes in the panel under the curves (:data:`PANEL_METRICS`), if any: the
    wasted share on a pool with out-of-set items, the duplicate share on repeated items, the rarest
    class's labels on a long tail."""
    if not metrics:
        return None
    ms = list(metrics.values())
    if any(m.get("wasted_total", 0) for m in ms):
        return "wasted_cumulative"
    if cfg.scenario == "repeated":
        return "duplicate_share"
    if cfg.scenario == "long-tail":
        return "rarest_class_labels"
    return None


def metric_bands(rows: Sequence[tuple], metrics: Dict[tuple, dict], key: str) -> Dict[str, Band]:
    """Per strategy ``(n_labeled, mean, low, high)`` over seeds of the per-round number ``key``, the
    band clipped to what the number can be (shares to [0, 1], counts to >= 0); rounds without the
    number (the last round has no next batch) are left out."""
    out: Dict[str, Band] = {}
    bound = (0.0, np.inf) if key == "rarest_class_labels" else (0.0, 1.0)
    for strategy in sorted({r[0] for r in rows}):
        rs = [r for r in rows if r[0] == strategy and (r[0], r[1], r[2]) in metrics]
        ns = sorted({r[3] for r in rs})
        cis = [mean_ci([metric_value(metrics[(r[0], r[1], r[2])], key, r[3]) for r in rs if r[3] == n]) for n in ns]
        keep = np.array([math.isfinite(c["mean"]) for c in cis], dtype=bool)
        mean = np.array([c["mean"] for c in cis])
        lo = np.array([c["ci_low"] if math.isfinite(c["ci_low"]) else c["mean"] for c in cis])
        hi = np.array([c["ci_high"] if math.isfinite(c["ci_high"]) else c["mean"] for c in cis])
        out[strategy] = (np.array(ns)[keep], mean[keep], np.clip(lo[keep], *bound), np.clip(hi[keep], *bound))
    return out


def plot_curves(out: Path, rows: Sequence[tuple], cfg: LoopConfig, metrics: Optional[Dict[tuple, dict]] = None) -> str:
    """Two panels (:func:`curve_bands`): mean test accuracy per strategy with its band, and each
    strategy's paired difference from random; the Jacobian strategies (names starting with
    ``jacobian``) drawn solid and thick, the baselines dashed. On a scenario with something to show
    (:func:`panel_metric`), a panel under each on the same x axis: that number per round.
    Returns the file name."""
    plt = pyplot()
    bands = curve_bands(rows)
    key = panel_metric(cfg, metrics)
    names = sorted(bands["accuracy"], key=lambda s: (not s.startswith("jacobian"), s))
    if key is None:
        fig, (ax, dx) = plt.subplots(1, 2, figsize=(13, 5))
        under, extra, extra_right = None, None, None
    else:
        fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharex="col", gridspec_kw={"height_ratios": [3, 1.4]})
        (ax, dx), under = axes[0], axes[1]
        extra = metric_bands(rows, metrics, key)
        # beside the running share, each batch's own (open sets); nothing else has a per-batch twin
        right = "wasted_share" if key == "wasted_cumulative" else None
        extra_right = metric_bands(rows, metrics, right) if right else None
    for i, strategy in enumerate(names):
        jac = strategy.startswith("jacobian")
        style = dict(ls="-" if jac else "--", color=f"C{i % 10}", lw=2.2 if jac else 1.2, label=strategy)
        for panel, axis in (("accuracy", ax), ("vs_random", dx)):
            if strategy in bands[panel]:
                ns, mean, lo, hi = bands[panel][strategy]
                axis.plot(ns, mean, **style)
                axis.fill_between(ns, lo, hi, color=style["color"], alpha=0.10 if jac else 0.05)
        for axis, band in zip(under if under is not None else (), (extra, extra_right)):
            if band is not None and strategy in band:
                ns, mean, lo, hi = band[strategy]
                axis.plot(ns, mean, **style)
                axis.fill_between(ns, lo, hi, color=style["color"], alpha=0.10 if jac else 0.05)
    if under is not None:
        for axis, name in zip(under, (key, right)):
            if name is None:
                axis.axis("off")
                dx.tick_params(labelbottom=True)  # the panel above keeps its x axis
                dx.set_xlabel("labeled examples")
                continue
            axis.set(xlabel="labeled examples", ylabel=PANEL_METRICS[name])
            axis.yaxis.label.set_size(8)
    ax.set(xlabel="labeled examples", ylabel="test accuracy")
    ax.set_title(f"{cfg.data_name}, {cfg.model}, {cfg.initial} labels +{cfg.k} per round: mean over {cfg.seeds} seed(s), "
                 "95% CI", fontsize=10)
    dx.axhline(0, color="0.3", lw=0.8)
    dx.set(xlabel="labeled examples", ylabel="accuracy − random's (same seed)",
           title="paired difference from random, mean ± 95% CI")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_png(fig, Path(out) / "curves.png")
