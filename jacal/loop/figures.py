"""``curves.png``: the learning curves, and each strategy's accuracy minus random's at the same seed."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from jacal._plotting import pyplot, save_png
from jacal._stats import mean_ci
from jacal.loop.config import LoopConfig

__all__ = ["plot_curves"]


def plot_curves(out: Path, rows: Sequence[tuple], cfg: LoopConfig) -> str:
    """Two panels: mean test accuracy per strategy (95% CI bands clipped to [0, 1]), and each
    strategy's accuracy minus random's at the same seed and round (paired, mean ± 95% CI), the
    Jacobian strategies drawn solid and thick, the baselines dashed. Returns the file name."""
    plt = pyplot()
    acc = {(r[0], r[1], r[3]): r[4] for r in rows}
    names = sorted({r[0] for r in rows}, key=lambda s: (not s.startswith("jacobian"), s))
    fig, (ax, dx) = plt.subplots(1, 2, figsize=(13, 5))
    for i, strategy in enumerate(names):
        rs = [r for r in rows if r[0] == strategy]
        ns = sorted({r[3] for r in rs})
        jac = strategy.startswith("jacobian")
        style = dict(ls="-" if jac else "--", color=f"C{i % 10}", lw=2.2 if jac else 1.2, label=strategy)
        for panel, value in ((ax, lambda r: r[4]), (dx, lambda r: r[4] - acc.get(("random", r[1], r[3]), math.nan))):
            if panel is dx and strategy == "random":
                continue
            cis = [mean_ci([value(r) for r in rs if r[3] == n]) for n in ns]
            mean = np.array([c["mean"] for c in cis])
            lo = np.array([c["ci_low"] if math.isfinite(c["ci_low"]) else c["mean"] for c in cis])
            hi = np.array([c["ci_high"] if math.isfinite(c["ci_high"]) else c["mean"] for c in cis])
            if panel is ax:
                lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
            panel.plot(ns, mean, **style)
            panel.fill_between(ns, lo, hi, color=style["color"], alpha=0.10 if jac else 0.05)
    ax.set(xlabel="labeled examples", ylabel="test accuracy")
    ax.set_title(f"{cfg.dataset}, {cfg.model}, {cfg.initial} labels +{cfg.k} per round: mean over {cfg.seeds} seed(s), "
                 "95% CI", fontsize=10)
    dx.axhline(0, color="0.3", lw=0.8)
    dx.set(xlabel="labeled examples", ylabel="accuracy − random's (same seed)",
           title="paired difference from random, mean ± 95% CI")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_png(fig, Path(out) / "curves.png")
