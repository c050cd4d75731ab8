"""Figures of the replication report (PNG, matplotlib, in the spirit of the paper's)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from jacal._internal.plotting import save_png  # noqa: E402
from jacal._internal.stats import finite  # noqa: E402
from jacal.replication.c2 import angular_distance_to_anchors, is_c2_model  # noqa: E402
from jacal.sensitivity.trajectories import RANDOM_CONSTRUCTIONS  # noqa: E402

__all__ = ["make_figures"]


def make_figures(out: Path, models: List[Dict[str, Any]], pairs: List[Dict[str, Any]], points: List[tuple],
                 trajectories: List[Dict[str, Any]], fit_threshold: float, *,
                 constructions: Sequence[str] = RANDOM_CONSTRUCTIONS) -> List[str]:
    """Write every figure into ``out``; returns their file names."""
    out = Path(out)
    names = []
    c2_models = [m for m in models if is_c2_model(m["model_id"])]
    models = [m for m in models if not is_c2_model(m["model_id"])]
    datasets = sorted({m["dataset"] for m in models})
    by_id = {m["model_id"]: m for m in models}
    good = [m for m in models if finite(m["train_accuracy"]) and finite(m["mean_jacobian"])]

    # C1 ---------------------------------------------------------------------------------
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        ms = [m for m in good if m["dataset"] == d]
        groups = {"fits training set": [m for m in ms if not m["random_labels"] and m["train_accuracy"] >= fit_threshold],
                  "excluded: does not fit": [m for m in ms if not m["random_labels"] and m["train_accuracy"] < fit_threshold],
                  "random labels": [m for m in ms if m["random_labels"]]}
        for (label, g), style in zip(groups.items(), [dict(c="C0", marker="o"), dict(c="0.7", marker="."), dict(c="C3", marker="x")]):
            if g:
                ax.scatter([m["mean_jacobian"] for m in g], [m["gap"] for m in g], s=18, label=f"{label} ({len(g)})", **style)
        ax.set_xscale("log")
        ax.set(xlabel="mean test Jacobian norm ‖J‖_F", ylabel="generalization gap (train − test acc.)", title=f"C1 · {d}")
        ax.legend(fontsize=8)
    names.append(save_png(fig, out / "c1_gap_vs_jacobian.png"))

    # C2 ---------------------------------------------------------------------------------
    names.append(_c2_figure(out, c2_models, trajectories, constructions))

    # C3 ---------------------------------------------------------------------------------
    factors = ["random_labels", "augmentation", "full_batch", "saturating"]
    metrics = [("mean_jacobian", "‖J‖_F", True), ("gap", "gap", False), ("transitions", "transitions", True)]
    fig, axes = plt.subplots(3, 4, figsize=(16, 11))
    for j, f in enumerate(factors):
        ps = [(by_id.get(p["base_id"]), by_id.get(p["variant_id"])) for p in pairs if p["factor"] == f]
        ps = [(b, v) for b, v in ps if b and v and finite(b["mean_jacobian"]) and finite(v["mean_jacobian"])]
        fits = [b["train_accuracy"] >= fit_threshold and v["train_accuracy"] >= fit_threshold for b, v in ps]
        for i, (key, label, log) in enumerate(metrics):
            ax = axes[i, j]
            xs = np.array([b[key] for b, _ in ps], float)
            ys = np.array([v[key] for _, v in ps], float)
            if len(xs):
                sel = np.array(fits, bool)
                ax.scatter(xs[sel], ys[sel], s=20, c="C0", label="both fit (tested)")
                ax.scatter(xs[~sel], ys[~sel], s=20, facecolors="none", edgecolors="0.6", label="a model does not fit")
                lo, hi = np.nanmin(np.r_[xs, ys]), np.nanmax(np.r_[xs, ys])
                ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
                if log and lo > 0:
                    ax.set_xscale("log")
                    ax.set_yscale("log")
                    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set(xlabel=f"{label}: base", ylabel=f"{label}: {f.replace('_', ' ')}")
            if i == 0:
                ax.set_title(f"C3 · {f.replace('_', ' ')} ({sum(fits)} of {len(ps)} pairs fit)")
                if len(xs):
                    ax.legend(fontsize=7)
    fig.tight_layout()
    names.append(save_png(fig, out / "c3_pairs.png"))

    # C4 ---------------------------------------------------------------------------------
    per_model = defaultdict(list)
    for mid, _i, jn, loss, correct in points:
        if mid in by_id and not by_id[mid]["random_labels"]:
            per_model[mid].append((jn, loss, correct))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    rhos = {}
    from scipy.stats import spearmanr

    for mid, rows in per_model.items():
        a = np.asarray(rows, float)
        if len(a) > 2 and np.ptp(a[:, 0]) > 0 and np.ptp(a[:, 1]) > 0:
            rhos[mid] = spearmanr(a[:, 0], a[:, 1]).statistic
    if rhos:
        med = sorted(rhos, key=rhos.get)[len(rhos) // 2]
        a = np.asarray(per_model[med], float)
        for correct, c, lab in ((1, "C0", "correct"), (0, "C3", "misclassified")):
            sel = a[:, 2] == correct
            a1.scatter(np.maximum(a[sel, 0], 1e-12), np.maximum(a[sel, 1], 1e-12), s=8, c=c, label=lab)
        a1.set(xscale="log", yscale="log", xlabel="‖J(x)‖_F", ylabel="cross-entropy loss at x",
               title=f"C4 · per point, median model (ρ={rhos[med]:.2f})")
        a1.legend(fontsize=8)
        a2.hist(list(rhos.values()), bins=20, color="C0")
        a2.axvline(0, c="k", lw=0.8)
    a2.set(xlabel="Spearman ρ(‖J‖, loss) per model", ylabel="models", title="C4 · across models")
    names.append(save_png(fig, out / "c4_pointwise.png"))

    # C5 ---------------------------------------------------------------------------------
    fig, ax = plt.subplots(figsize=(6, 4))
    tl = [m for m in good if not m["random_labels"] and finite(m["transitions"])]
    for depth in sorted({m["depth"] for m in tl}):
        g = [m for m in tl if m["depth"] == depth]
        ax.scatter([m["n_neurons"] for m in g], [m["transitions"] for m in g], s=16, label=f"depth {depth}")
    ax.set(xscale="log", xlabel="hidden units", ylabel="transitions per ellipse", title="C5 · transitions vs neurons")
    ax.legend(fontsize=8)
    names.append(save_png(fig, out / "c5_transitions_vs_neurons.png"))

    # C6 ---------------------------------------------------------------------------------
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    in_pairs = {p["base_id"] for p in pairs} | {p["variant_id"] for p in pairs}
    fm = [m for m in good if not m["random_labels"] and m["train_accuracy"] >= fit_threshold and m["model_id"] not in in_pairs]
    a1.scatter([m["n_params"] for m in fm], [m["gap"] for m in fm], s=16, label="fitted sweep models")
    if fm:
        dec = np.floor(np.log10([m["n_params"] for m in fm])).astype(int)
        gaps = np.array([m["gap"] for m in fm])
        ds = sorted(set(dec.tolist()))
        a1.plot([10.0 ** (d + 0.5) for d in ds], [gaps[dec == d].min() for d in ds], "k-o", ms=4, lw=1,
                label="best gap per size decade")
        a1.legend(fontsize=8)
    a1.set(xscale="log", xlabel="parameters", ylabel="generalization gap", title="C6 · gap vs size (fitted, no C3 pairs)")
    a2.scatter([max(m["train_loss"], 1e-12) for m in fm], [m["gap"] for m in fm], s=16, c="C1")
    a2.set(xscale="log", xlabel="training loss", ylabel="generalization gap", title="C6 · gap vs training loss")
    names.append(save_png(fig, out / "c6_gap_vs_size_and_loss.png"))
    return names


def _c2_figure(out: Path, c2_models: List[Dict[str, Any]], trajectories: List[Dict[str, Any]],
               constructions: Sequence[str]) -> str:
    """C2: ‖J‖ and exact transitions along the ellipses, by kind; transitions vs angle to the anchors."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (a1, a2), (a3, a4) = axes
    ids = {m["model_id"] for m in c2_models}
    ts = [t for t in trajectories if t["model_id"] in ids]
    styles = [(("random", c), f"random ({c})", "C3", "-" if i == 0 else "--") for i, c in enumerate(constructions)]
    styles += [(("different-class", ""), "different-class", "C1", "-"), (("same-class", ""), "same-class", "C2", "-")]
    anchors = ts[0]["anchors"] if ts else []
    box, box_labels = [], []
    for (kind, cons), label, c, ls in styles:
        sel = [t for t in ts if t["kind"] == kind and t["construction"] == cons]
        if not sel:
            continue
        js = np.array([np.log10(np.maximum(np.asarray(t["jacobian"], float), 1e-30)) for t in sel])
        tr = np.array([np.asarray(t["transitions"], float) for t in sel])
        x = np.arange(js.shape[1]) * (tr.shape[1] // js.shape[1])
        a1.plot(x, np.median(js, 0), c=c, ls=ls, label=f"{label} ({len(sel)} model×ellipse)")
        a1.fill_between(x, np.percentile(js, 25, 0), np.percentile(js, 75, 0), color=c, alpha=0.12)
        a2.plot(np.arange(tr.shape[1]), tr.mean(0), c=c, ls=ls, label=label)
        ang = np.degrees(angular_distance_to_anchors(tr.shape[1]))
        bins = np.linspace(0, 60, 13)
        idx = np.clip(np.digitize(ang, bins) - 1, 0, len(bins) - 2)
        prof = [tr[:, idx == b].mean() if np.any(idx == b) else np.nan for b in range(len(bins) - 1)]
        a3.plot((bins[:-1] + bins[1:]) / 2, prof, c=c, ls=ls, marker="o", ms=3, label=label)
        box.append(tr.sum(1) / tr.shape[1])
        box_labels.append(label.replace(" (", "\n("))
    for ax in (a1, a2):
        for a in anchors:
            ax.axvline(a, c="k", lw=0.8, ls=":")
        ax.set_xlabel("position along the ellipse (anchors dotted)")
    a1.set(ylabel="log10 ‖J‖_F", title=f"C2 · Jacobian norm along ellipses ({len(ids)} ReLU models)")
    a2.set(ylabel="exact transitions per step", title="C2 · transition density")
    a3.set(xlabel="angular distance of the step to the nearest anchor (degrees)", ylabel="exact transitions per step",
           title="C2d · transitions vs distance to the anchors")
    if box:
        a4.boxplot(box, showfliers=False)
        a4.set_xticks(range(1, len(box) + 1), box_labels, fontsize=7)
    a4.set(yscale="log", ylabel="transitions per step (per model × ellipse)", title="C2c · density by kind")
    a1.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, out / "c2_trajectories.png")
