"""The outputs of ``confidence_shift.py``: the JSON made strict, ``table.md`` and the two figures."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from jacal._internal.io import atomic_open
from jacal.confidence import JACOBIAN_METHODS

BASELINE = "max-softmax"  # the estimator every other is drawn against

__all__ = ["finite_or_none", "write_table", "plot"]


def finite_or_none(obj: Any) -> Any:
    """The same structure with NaN/Inf as None, so that the printed JSON is strict JSON."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _fmt(c: Optional[Dict[str, float]], digits: int = 3) -> str:
    if not c or not math.isfinite(c.get("mean", math.nan)):
        return "–"
    ci = f" ±{(c['ci_high'] - c['ci_low']) / 2:.{digits}f}" if math.isfinite(c.get("ci_low", math.nan)) else ""
    return f"{c['mean']:.{digits}f}{ci}"


def _p(p: float) -> str:
    return "–" if not math.isfinite(p) else f"{p:.2g}"


def write_table(summary: Dict[str, Any], out: Path) -> str:
    lines = ["# Confidence under shift", "",
             "Mean ± 95% CI half-width over seeds. AURC and E-AURC: lower is better; AUROC: higher is better. "
             "`corr.` = averaged over every corruption × severity; `near` = scikit-learn digits in MNIST's layout; "
             "OOD = clean test vs far-OOD set; `time` = seconds on the timed images / `jacobian_norm`'s (median over rounds).", ""]
    for arch, t in summary["table"].items():
        est = t["estimators"]
        far = sorted({k[len("ood_auroc_"):] for v in est.values() for k in v if k.startswith("ood_auroc_")})
        lines += [f"## {arch} (test accuracy {_fmt(t['train'])}, clean; seeds {t['seeds']})", ""]
        head = ["estimator", "clean AURC", "clean ECE", "corr. AURC", "corr. E-AURC", "corr. fail. AUROC", "near AURC",
                *[f"OOD AUROC {k}" for k in far], *[f"FPR@95 {k}" for k in far], "time"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m, v in est.items():
            cells = [f"`{m}`", _fmt(v.get("clean_aurc"), 4), _fmt(v.get("clean_ece")), _fmt(v.get("corruption_aurc"), 4),
                     _fmt(v.get("corruption_e_aurc"), 4), _fmt(v.get("corruption_failure_auroc")),
                     _fmt(v.get("near_aurc"), 4), *[_fmt(v.get(f"ood_auroc_{k}")) for k in far],
                     *[_fmt(v.get(f"ood_fpr95_{k}")) for k in far],
                     "–" if v.get("time_ratio") is None else f"{v['time_ratio']:.2f}×"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    tg = summary["targets"]
    lines += ["## Targets", ""]
    for name in [k for k in tg if k != "cost"]:
        c, o = tg[name].get("corruption_aurc"), tg[name].get("far_ood_auroc")
        if c:
            b = c["vs_baseline"][c["best_jacobian"]]
            lines.append(f"- **{name}**, corruption-averaged AURC, best Jacobian estimator `{c['best_jacobian']}` vs "
                         f"`{c['baseline']}`: {b['mean_difference']:+.4f} over {b['n_pairs']} (architecture, seed) pairs, "
                         f"one-sided paired t-test p = {_p(b['p'])} (Holm-adjusted over the "
                         f"{len(c['vs_baseline'])} Jacobian estimators: p = {_p(b['p_holm'])}): "
                         f"**{'met' if c['met'] else 'missed'}**. Others: " + "; ".join(
                             f"`{m}` {t['mean_difference']:+.4f} (p {_p(t['p'])})" for m, t in c["vs_baseline"].items()
                             if m != c["best_jacobian"]) + ".")
        if o:
            b = o["vs_baseline"][o["best_jacobian"]]
            lines.append(f"- **{name}**, far-OOD AUROC (mean of the far sets), best Jacobian `{o['best_jacobian']}` vs "
                         f"`{o['baseline']}`: {b['mean_difference']:+.3f} (two-sided p = {_p(b['p'])}): "
                         f"**{'met' if o['met'] else 'missed'}**.")
    if "cost" in tg:
        w = ", ".join(f"{a}: `{v['method']}` {v['ratio']:.2f}×" for a, v in tg["cost"]["worst"].items())
        lines.append(f"- Cost, slowest estimator relative to `jacobian_norm` (limit 2×): {w}: "
                     f"**{'met' if tg['cost']['met'] else 'missed'}**.")
    text = "\n".join(lines) + "\n"
    with atomic_open(out / "table.md", "w") as f:
        f.write(text)
    return text


LINES = ("max-softmax", "energy", "knn", "jacobian", "jacobian-noise", "combined")


def plot(summary: Dict[str, Any], out: Path, methods: Sequence[str]) -> List[Path]:
    """``aurc_by_corruption.png``: AURC against severity per corruption for a few estimators (Jacobian ones
    solid, baselines dashed); ``aurc_delta.png``: every estimator's AURC minus max-softmax's, per corruption
    and severity (blue: lower risk than max-softmax, red: higher)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(summary["table"])
    corrs = list(next(iter(summary["table"].values()))["aurc_by_corruption"])
    show = [m for m in LINES if m in methods]
    ncol = 4
    nrow = math.ceil(len(corrs) / ncol)
    fig, axes = plt.subplots(nrow * len(archs), ncol, figsize=(2.6 * ncol, 1.9 * nrow * len(archs) + 0.7),
                             squeeze=False)
    for i, arch in enumerate(archs):
        by = summary["table"][arch]["aurc_by_corruption"]
        for j, c in enumerate(corrs):
            ax = axes[i * nrow + j // ncol, j % ncol]
            sev = sorted(by[c], key=int)
            for m in show:
                base = m == BASELINE
                ax.plot([int(s) for s in sev], [by[c][s][m] for s in sev], marker="o", ms=2.5,
                        lw=1.4 if base else 1.2, color="black" if base else None, zorder=5 if base else 2,
                        ls="-" if (m in JACOBIAN_METHODS or base) else "--", label=m)
            ax.set_xticks([int(s) for s in sev])
            ax.set_title(f"{arch} · {c.replace('_', ' ')}", fontsize=8)
            ax.tick_params(labelsize=7)
            if j % ncol == 0:
                ax.set_ylabel("AURC", fontsize=7)
        for j in range(len(corrs), nrow * ncol):
            axes[i * nrow + j // ncol, j % ncol].axis("off")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(show), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    lines_png = out / "aurc_by_corruption.png"
    fig.savefig(lines_png, dpi=110)
    plt.close(fig)

    cols = [(c, s) for c in corrs for s in sorted(summary["table"][archs[0]]["aurc_by_corruption"][c], key=int)]
    fig, axes = plt.subplots(len(archs), 1, figsize=(0.28 * len(cols) + 2.4, 0.32 * len(methods) * len(archs) + 1.2),
                             squeeze=False)
    for i, arch in enumerate(archs):
        by = summary["table"][arch]["aurc_by_corruption"]
        delta = np.array([[by[c][s][m] - by[c][s][BASELINE] for c, s in cols] for m in methods])
        lim = max(float(np.nanpercentile(np.abs(delta), 95)), 1e-6)  # robust: one outlier does not wash out the rest
        ax = axes[i, 0]
        im = ax.imshow(delta, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_yticks(range(len(methods)), methods, fontsize=7)
        ax.set_xticks(range(len(cols)), [f"{c.replace('_', ' ')} {s}" for c, s in cols], fontsize=6, rotation=90)
        ax.set_title(f"{arch}: AURC − max-softmax's AURC (blue = fewer errors accepted)", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01).ax.tick_params(labelsize=6)
    fig.tight_layout()
    delta_png = out / "aurc_delta.png"
    fig.savefig(delta_png, dpi=110)
    plt.close(fig)
    return [lines_png, delta_png]
