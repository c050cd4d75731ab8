"""``report.json`` and ``report.md`` (claims table first, then figures and the protocol)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict

from jacal._internal.stats import fmt as _fmt
from jacal._internal.io import atomic_open
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
    result = analyse(models, pairs, points, trajs, fit_threshold=preset.fit_threshold, seed=seed,
                     c2_max_train_loss=preset.c2_max_train_loss, constructions=preset.random_constructions)
    figures = make_figures(Path(out), models, pairs, points, trajs, preset.fit_threshold,
                           constructions=preset.random_constructions)
    return {
        "paper": "Novak et al. 2018, Sensitivity and Generalization in Neural Networks: an Empirical Study (ICLR)",
        "preset": preset.to_dict(), "seed": seed, "device": device, "sweep_version": cfg.SWEEP_VERSION,
        "n_models": len(models), "n_pairs": len(pairs),
        "claims": result["claims"], "exclusions": result["exclusions"], "figures": figures,
        "protocol": {
            "sampling": cfg.__doc__.strip(), "lr_ranges": cfg.LR_RANGES, "weight_variance_range": cfg.WEIGHT_VARIANCE_RANGE,
            "activations": list(preset.activations), "rules": RULES,
            "jacobian_metric": f"mean of ‖∂softmax/∂x‖_F over a fixed seeded subset of {preset.jacobian_points} test points",
            "per_point_scores": f"the first {preset.stored_points} points of that subset (C4)",
            "transitions_metric": f"[paper] sampled count around {preset.n_ellipses} ellipses through test-point triples, "
                                  f"{preset.ellipse_points} points each; mean per ellipse (C3's transition side, C5)",
            "c2_experiment": f"[ours: sizes] {preset.c2_seeds} ReLU models of each (width, depth) in "
                             f"{list(map(list, preset.c2_architectures))}, Adam lr {preset.c2_lr:g}, batch {preset.c2_batch_size}, "
                             f"{preset.c2_steps} steps, kept when training loss ≤ {preset.c2_max_train_loss:g}; "
                             f"{preset.c2_ellipses} fresh ellipses of each kind (different-class and same-class through "
                             f"training points; random under each construction {list(preset.random_constructions)}, "
                             f"primary first), {preset.ellipse_points} points each, anchors at k/6, k/2, 5k/6; exact "
                             f"transitions per step (sampled count stored beside it); density per step and per unit length",
            "random_constructions": {"primary": preset.random_constructions[0],
                                     "all": list(preset.random_constructions),
                                     "data-matched": "[ours] each input feature from N(mean_d, std_d²) of the training data",
                                     "standard-normal": "[ours] each input feature i.i.d. N(0, 1) in the model's input units"},
            "fit_threshold": preset.fit_threshold,
        },
    }


def statistic_text(s: Dict[str, Any], *, detailed: bool = False) -> tuple:
    """``(statistic, 95% CI, p)`` as text for one claim's statistic dict (the report and the CLI table)."""
    if "summary" in s:
        return s["summary"], "–", _fmt(s.get("p"), 2)
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
    md += ["", "[paper]: what the paper states; [ours]: jacal's choice where the paper is silent (the test, thresholds, "
               "sizes). The random ellipse's construction is [ours]: the claims table uses the primary "
               f"(`{preset.random_constructions[0]}`); C2a's and C2c's verdicts under every construction:", ""]
    for c in report["claims"]:
        per = c["statistic"].get("constructions")
        if per:
            md.append(f"- **{c['id']}**: " + "; ".join(
                f"{name}: {v['verdict']} (mean ellipse length {_fmt(v.get('mean_length'))})" for name, v in per.items())
                + (" — depends on the random ellipse's construction" if c["statistic"].get("depends_on_construction") else ""))
    md += ["", f"Exclusions: {ex['diverged']} diverged; {ex['random_label_models_excluded_from_gap_analyses']} random-label "
               f"models kept out of gap analyses; {ex['not_fitting_training_set']} of {ex['true_label_models']} true-label "
               f"models did not reach train accuracy ≥ {ex['fit_threshold']} and are excluded from C1, C5's gap "
               f"correlations and C6 ({ex['fitted_models_used_for_gap_analyses']} used); "
               f"{ex.get('pair_copies_of_base_models_kept_out_of_population_claims', 0)} C3 pair copies of base models "
               f"are used by C3 only; {ex.get('smooth_activation_models_excluded_from_transition_claims', 0)} tanh / "
               f"sigmoid true-label models are left out of the transition claims (C3's transition side, C5); "
               f"{ex.get('c6_models_in_c3_pairs_excluded', 0)} fitted C3 pair members are left out of C6; C2 used "
               f"{ex.get('c2_models_kept', 0)} of {ex.get('c2_models', 0)} C2 models (training loss ≤ "
               f"{ex.get('c2_max_train_loss')}; not kept: {ex.get('c2_models_not_near_zero_loss') or 'none'}).",
           "", "## Figures", ""]
    md += [f"![{n}]({n})" for n in report["figures"]]
    md += ["", "## Protocol", "", "```", report["protocol"]["sampling"], "```", "",
           f"- learning-rate ranges (log-uniform): {report['protocol']['lr_ranges']}",
           f"- weight-init variance σ_w² (log-uniform): {report['protocol']['weight_variance_range']}",
           f"- Jacobian metric: {report['protocol']['jacobian_metric']}",
           f"- per-point scores: {report['protocol']['per_point_scores']}",
           f"- transitions: {report['protocol']['transitions_metric']}",
           f"- C2 experiment: {report['protocol']['c2_experiment']}",
           f"- preset: `{json.dumps(report['preset'])}`"]
    with atomic_open(out / "report.md", "w") as f:
        f.write("\n".join(md) + "\n")
    return report
