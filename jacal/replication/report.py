"""``report.json`` and ``report.md`` (claims table first, then figures and the protocol)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict

from jacal._stats import fmt as _fmt
from jacal._io import atomic_open
from jacal.replication import config as cfg
from jacal.replication.analysis import RULES, analyse
from jacal.replication.figures import make_figures
from jacal.replication.store import ResultStore

__all__ = ["write_report", "build_report", "statistic_text"]


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def build_report(out: Path, preset: cfg.Preset, seed: int) -> Dict[str, Any]:
    with ResultStore(Path(out) / "results.sqlite") as store:
        models, pairs, points, trajs = store.models(), store.pairs(), store.points(), store.trajectories()
        device = store.get_meta("device")
    result = analyse(models, pairs, points, trajs, fit_threshold=preset.fit_threshold, seed=seed)
    figures = make_figures(Path(out), models, pairs, points, trajs, preset.fit_threshold)
    return {
        "paper": "Novak et al. 2018, Sensitivity and Generalization in Neural Networks: an Empirical Study (ICLR)",
        "preset": preset.to_dict(), "seed": seed, "device": device, "n_models": len(models), "n_pairs": len(pairs),
        "claims": result["claims"], "exclusions": result["exclusions"], "figures": figures,
        "protocol": {
            "sampling": cfg.__doc__.strip(), "lr_ranges": cfg.LR_RANGES, "weight_variance_range": cfg.WEIGHT_VARIANCE_RANGE,
            "activations": list(preset.activations), "rules": RULES,
            "jacobian_metric": f"mean of ‖∂softmax/∂x‖_F over a fixed seeded subset of {preset.jacobian_points} test points",
            "per_point_scores": f"the first {preset.stored_points} points of that subset (C4)",
            "transitions_metric": f"sampled count (paper) around {preset.n_ellipses} ellipses through test-point triples, "
                                  f"{preset.ellipse_points} points each; mean per ellipse",
            "c2_trajectories": f"{preset.c2_ellipses} each of random / different-class / same-class ellipses through training "
                               f"points, {preset.ellipse_points} points, anchors at positions k/6, k/2, 5k/6",
            "fit_threshold": preset.fit_threshold,
        },
    }


def statistic_text(s: Dict[str, Any], *, detailed: bool = False) -> tuple:
    """``(statistic, 95% CI, p)`` as text for one claim's statistic dict (the report and the CLI table)."""
    if "rho" in s:
        stat = f"Spearman ρ = {_fmt(s.get('rho'))}" + (f" (Kendall τ = {_fmt(s.get('tau'))})" if detailed else "")
        return stat, f"[{_fmt(s.get('ci_low'))}, {_fmt(s.get('ci_high'))}]", _fmt(s.get("p"), 2)
    if "fraction_predicted" in s:
        key = "median_log10_ratio" if "median_log10_ratio" in s else "median_difference"
        stat = f"{_fmt(s.get('fraction_predicted'))} of pairs on the predicted side"
        if detailed:
            stat += f"; median log10 ratio {_fmt(s.get(key))}"
        return stat, "–", _fmt(s.get("sign_p"), 2)
    if "median_rho" in s:
        stat = f"median ρ(‖J‖, loss) = {_fmt(s.get('median_rho'))}; median AUROC {_fmt(s.get('median_auroc'))}"
        if detailed:
            stat += f"; {_fmt(s.get('fraction_above'))} of models > 0"
        return stat, "–", _fmt(s.get("p"), 2)
    if "median_log10_ratio" in s:
        return f"median log10(random / at anchors) = {_fmt(s.get('median_log10_ratio'))}", "–", _fmt(s.get("p"), 2)
    dens = s.get("mean_density", {})
    return "mean transitions/step: " + ", ".join(f"{k} {_fmt(v)}" for k, v in dens.items()), "–", _fmt(s.get("p"), 2)


def _claims_table(report: Dict[str, Any]) -> str:
    lines = ["| claim | the paper | our statistic | 95% CI | p | n | verdict |", "|---|---|---|---|---|---|---|"]
    for c in report["claims"]:
        s = c["statistic"]
        stat, ci, p = statistic_text(s, detailed=True)
        lines.append(f"| {c['id']} | {c['paper']} | {stat} | {ci} | {p} | {s.get('n', '–')} | "
                     f"**{c['verdict']}**: {c['reason']} |")
    return "\n".join(lines)


def write_report(out: Path, preset: cfg.Preset, seed: int) -> Dict[str, Any]:
    """Analyse ``out/results.sqlite`` and write ``report.json``, ``report.md`` and the figures."""
    out = Path(out)
    report = _json_safe(build_report(out, preset, seed))
    with atomic_open(out / "report.json", "w") as f:
        json.dump(report, f, indent=2)
    ex = report["exclusions"]
    md = [f"# Replication of Novak et al. 2018 — preset `{preset.name}`, seed {seed}", "",
          f"{report['n_models']} models on {', '.join(preset.datasets)} (device: {report['device']}); "
          f"{report['n_pairs']} factor pairs.", "", "## Claims", "", _claims_table(report), "",
          "Verdict rules (declared before the run):", ""]
    md += [f"- **{k}**: {v}" for k, v in RULES.items()]
    md += ["", f"Exclusions: {ex['diverged']} diverged; {ex['random_label_models_excluded_from_gap_analyses']} random-label "
               f"models kept out of gap analyses; {ex['not_fitting_training_set']} of {ex['true_label_models']} true-label "
               f"models did not reach train accuracy ≥ {ex['fit_threshold']} and are excluded from C1, C5's gap "
               f"correlations and C6 ({ex['fitted_models_used_for_gap_analyses']} used); "
               f"{ex.get('pair_copies_of_base_models_kept_out_of_population_claims', 0)} C3 pair copies of base models "
               f"are used by C3 only.", "", "## Figures", ""]
    md += [f"![{n}]({n})" for n in report["figures"]]
    md += ["", "## Protocol", "", "```", report["protocol"]["sampling"], "```", "",
           f"- learning-rate ranges (log-uniform): {report['protocol']['lr_ranges']}",
           f"- weight-init variance σ_w² (log-uniform): {report['protocol']['weight_variance_range']}",
           f"- Jacobian metric: {report['protocol']['jacobian_metric']}",
           f"- per-point scores: {report['protocol']['per_point_scores']}",
           f"- transitions: {report['protocol']['transitions_metric']}",
           f"- C2 trajectories: {report['protocol']['c2_trajectories']}",
           f"- preset: `{json.dumps(report['preset'])}`"]
    with atomic_open(out / "report.md", "w") as f:
        f.write("\n".join(md) + "\n")
    return report
