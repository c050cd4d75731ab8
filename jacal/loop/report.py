"""The loop's outputs: ``curves.csv``, ``summary.json``, ``curves.png`` and ``report.md``."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from jacal._internal.io import atomic_open
from jacal.loop.config import BATCH_SIZE, LR, OPTIMIZER, LoopConfig
from jacal.loop.figures import plot_curves
from jacal.loop.store import ROUND_COLUMNS
from jacal.loop.source import data_text
from jacal.loop.summary import P_WIN, summarize
from jacal._internal.stats import fmt as _fmt  # the replication report's number format: 3 significant digits

__all__ = ["write_outputs", "write_report", "protocol"]


def write_outputs(out: Path, cfg: LoopConfig, rows: Sequence[tuple], check: Dict[str, Any],
                  metrics: Optional[Dict[tuple, dict]] = None, data: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write every output of a run from its rounds (:data:`ROUND_COLUMNS` tuples) and per-point check;
    returns the summary as written to ``summary.json`` (NaN as ``None``). ``data``: what became of a
    team's own exported labels (:func:`jacal.loop.source.load_source`), kept under ``"data"``."""
    out = Path(out)
    with atomic_open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ROUND_COLUMNS)
        w.writerows(rows)
    summary = summarize(rows, cfg, metrics)
    summary["pointwise_check_c4"] = check
    if data is not None:
        summary["data"] = data
    summary["config"] = cfg.to_dict()
    summary["protocol"] = protocol(cfg)
    plot_curves(out, rows, cfg, metrics)
    clean = json.loads(json.dumps(summary, default=float).replace("NaN", "null"))
    with atomic_open(out / "summary.json", "w") as f:
        json.dump(clean, f, indent=2)
    write_report(out, clean, cfg)
    return clean


def protocol(cfg: LoopConfig) -> str:
    """The protocol of a run in words, from its options and the recipe's constants (not from a docstring)."""
    model = (f"an MLP of depth {cfg.depth}, width {cfg.width}, dropout {cfg.dropout}" if cfg.model == "mlp"
             else "jacal's small CNN")
    start = ("one model per (strategy, seed), trained further each round (warm start)" if cfg.warm_start
             else "a freshly initialised model every round")
    pool = f"the next {cfg.pool_size} items" if cfg.pool_size is not None else "the rest"
    test = f"{cfg.n_test} test items" if cfg.n_test is not None else "the test split"
    own = []
    if cfg.source is not None:
        test = "the test split"
        own = ["- A team's own data: the items its export labels, and those it answers 'none of these' (in the pool "
               "only: they cost a label and are never trained on). A fixed test split (the same for every seed) is "
               "cut from the labeled items, stratified by class; the rest is the training set below."]
    return "\n".join(own + [
        f"- Splits, from a permutation of the training set seeded by the seed alone (the same for every strategy): "
        f"the first {cfg.val_size} items validate (never labeled, never in the pool), the pool is {pool}, and its "
        f"first {cfg.initial} items start labeled.",
        f"- Rounds: train, evaluate on {test}, acquire {cfg.k} pool items with the strategy and reveal their labels; "
        f"{cfg.rounds} acquisitions, {cfg.rounds + 1} evaluations per (strategy, seed).",
        f"- Training: {model}; {start}; optimizer '{OPTIMIZER}' (learning rate {LR:g}), mini-batches of {BATCH_SIZE}, at most "
        f"{cfg.max_epochs} epochs, stopping after {cfg.patience} epochs without a better validation accuracy; the "
        f"best weights are kept.",
        "- Per-point check (claim C4 of Novak et al. 2018) on the first model (first strategy, seed 0, round 0): "
        "Spearman ρ between ‖J(x)‖_F and the loss, and the AUROC of ‖J‖ for detecting errors, on the test split.",
        "- AULC: the area under test accuracy against labeled examples divided by the label range (a mean accuracy); "
        f"comparisons pair the seeds two strategies share (paired t-test, p < {P_WIN}).",
    ])


def _ci(c: Dict[str, Any]) -> str:
    if c.get("mean") is None:
        return "–"
    if c.get("ci_low") is None:
        return _fmt(c["mean"])
    return f"{_fmt(c['mean'])} [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]"


def _signed(v: Optional[float]) -> str:
    return ("+" if v is not None and v > 0 else "") + _fmt(v)


def write_report(out: Path, summary: Dict[str, Any], cfg: LoopConfig) -> None:
    """``report.md`` from a written summary (``summary.json``'s content): numbers to 3 significant
    digits, p-values to 2, as in the replication report."""
    per = summary["strategies"]
    lines = [f"# Active learning on {cfg.data_name}: {cfg.initial} initial labels, +{cfg.k} per round, {cfg.rounds} rounds, "
             f"{cfg.seeds} seed(s)", "", "## Ranking (area under the learning curve, normalized)", "",
             "| rank | strategy | AULC mean [95% CI] | final accuracy | labels to " + " / ".join(f"{t:.0%}" for t in cfg.thresholds)
             + " | acquisition s/round | vs random | vs best baseline |", "|---|---|---|---|---|---|---|---|"]
    for rank, s in enumerate(summary["ranking"], 1):
        d = per[s]
        reach = " / ".join("–" if v is None else f"{v:.0f}" for v in d["labels_to_reach"].values())
        vr = d.get("vs_random")
        vb = d.get("vs_best_baseline")
        vr_t = "–" if not vr else f"{vr['verdict']} ({_signed(vr['mean_difference'])}, p={_fmt(vr['p_ttest'], 2)})"
        vb_t = "–" if not vb else f"{vb['verdict']} vs {vb['baseline']} ({_signed(vb['mean_difference'])})"
        lines.append(f"| {rank} | {s} | {_ci(d['aulc'])} | {_ci(d['final_accuracy'])} | {reach} | "
                     f"{_fmt(d['acquisition_time_s']['mean'])} | {vr_t} | {vb_t} |")
    if summary.get("data"):
        lines += ["", "## The labels used", "", data_text(summary["data"])]
    sc = summary.get("scenario") or {}
    if sc:
        where = f"scenario `{cfg.scenario}`" if cfg.source is None else "the team's own pool"
        lines += ["", f"## What the labels bought ({where})", "",
                  "| strategy | labels spent on out-of-set items [95% CI] | vs random | duplicate share of batches | "
                  "balanced-accuracy AULC | labels per class at the end |", "|---|---|---|---|---|---|"]
        for s in summary["ranking"]:
            if s not in sc:
                continue
            d = sc[s]
            wr = d.get("wasted_vs_random")
            wr_t = "–" if not wr else f"{_signed(wr['mean_difference'])} (p={_fmt(wr['p_ttest'], 2)})"
            lines.append(f"| {s} | {_ci(d['wasted_share'])} | {wr_t} | {_fmt(d['duplicate_share']['mean'])} | "
                         f"{_ci(d['balanced_aulc'])} | {' '.join(f'{v:g}' for v in d['labels_per_class'])} |")
    stops = summary.get("stopping") or {}
    if stops:
        lines += ["", "## Where each stopping criterion would have stopped", "",
                  "Replayed on the stop set (the first test items, read without their labels); the oracle stop is the "
                  "first round after which test accuracy stays within 1 point of its plateau. A criterion that never "
                  "fired counts as stopping at the last round.", "",
                  "| strategy | criterion | stopped (runs) | labels at stop, mean | ÷ oracle's labels, mean (max) | "
                  "accuracy lost, mean (max) |", "|---|---|---|---|---|---|"]
        for s in summary["ranking"]:
            for name, d in (stops.get(s) or {}).get("over_seeds", {}).items():
                lines.append(f"| {s} | {name} | {d['stopped']} ({d['runs']}) | {_fmt(d['labels_mean'])} | "
                             f"{_fmt(d['labels_ratio_mean'])} ({_fmt(d['labels_ratio_max'])}) | "
                             f"{_signed(d['accuracy_lost_mean'])} ({_signed(d['accuracy_lost_max'])}) |")
    lines += ["", "## Where the Jacobian strategies stand", ""]
    for s in summary["ranking"]:
        if s.startswith("jacobian"):
            vr, vb = per[s].get("vs_random"), per[s].get("vs_best_baseline")
            parts = []
            if vr:
                parts.append(f"{vr['verdict']} against random (AULC {_signed(vr['mean_difference'])}, paired t-test "
                             f"p={_fmt(vr['p_ttest'], 2)}, {vr['n_seeds']} seeds)")
            if vb:
                parts.append(f"{vb['verdict']} against the best baseline, {vb['baseline']} (AULC "
                             f"{_signed(vb['mean_difference'])}, p={_fmt(vb['p_ttest'], 2)})")
            lines.append(f"- **{s}**: " + "; ".join(parts) + ".")
    c4 = summary.get("pointwise_check_c4") or {}
    if c4:
        lines += ["", "## Does the Jacobian norm carry signal on this data? (claim C4, first model)", "",
                  f"Spearman ρ(‖J(x)‖, loss) = {_fmt(c4.get('spearman_rho_jacobian_loss'))} (p={_fmt(c4.get('p'), 2)}) "
                  f"and error-detection AUROC of ‖J‖ = {_fmt(c4.get('error_auroc_jacobian'))} on {c4.get('n')} test "
                  f"points (model test accuracy {_fmt(c4.get('test_accuracy'))})."]
    lines += ["", f"Win/loss: paired t-test on per-seed AULC, p < {P_WIN}; otherwise tie. With few seeds, ties are "
              "the honest default.", "", "![curves](curves.png)", "", "## Protocol", "", summary["protocol"], "",
              f"Options: `{json.dumps(cfg.to_dict())}`"]
    with atomic_open(Path(out) / "report.md", "w") as f:
        f.write("\n".join(lines) + "\n")
