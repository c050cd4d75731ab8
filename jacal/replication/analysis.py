"""Turn the result store into claim-by-claim statistics and verdicts (pre-declared rules)."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, List, Sequence

import numpy as np

from jacal._internal.stats import finite
from jacal.replication.c2 import is_c2_model
from jacal.replication.c2_claims import C2_RULES, c2_claims
from jacal.replication.config import PIECEWISE_LINEAR
from jacal.replication.stats import (ALPHA, MIN_N, MIN_PAIRS, correlation, one_sample_greater, paired_comparison,
                                     pointwise_sensitivity, verdict)
from jacal.sensitivity.trajectories import RANDOM_CONSTRUCTIONS

__all__ = ["analyse", "RULES", "PAPER", "C6_MIN_DECADES", "C6_MAX_LOSS_RHO"]

C6_MIN_DECADES = 3.0   # [paper] Fig. 1 spans about four decades of parameter count
C6_MAX_LOSS_RHO = 0.3  # [ours] "training loss does not predict the gap": |ρ| below this, or p ≥ ALPHA

PAPER = {
    "C1": "Mean test Jacobian norm correlates with the generalization gap across trained models.",
    "C2a": "Jacobian norm along a random ellipse (off the data) is orders of magnitude above its value at data points.",
    "C2b": "Between anchors, the same-class ellipse stays less sensitive than the different-class one.",
    "C2c": "Transition density: random ellipse high, same-class uniformly low (below random and different-class).",
    "C2d": "Different-class ellipses have fewer transitions at the anchors than between them.",
    "C3-random_labels": "Random labels: larger gap and higher Jacobian norm.",
    "C3-augmentation": "Data augmentation: smaller gap and lower Jacobian norm.",
    "C3-full_batch": "Full batch: generalizes worse and is more sensitive than mini-batch.",
    "C3-saturating": "ReLU is more robust than saturating activations (hard sigmoid / hard tanh / tanh).",
    "C4": "Per test point, the Jacobian norm predicts the loss; high-norm points are more often misclassified.",
    "C5": "Transition counts grow with the number of neurons (so raw transitions cannot rank networks of different sizes).",
    "C6": "The best-generalizing models are among the largest; training loss does not predict the gap.",
}

SHORT = {
    "C1": "‖J‖ tracks the generalization gap",
    "C2a": "off-data ‖J‖ ≫ at data",
    "C2b": "same-class ellipse < different-class",
    "C2c": "transitions: random, diff-class > same",
    "C2d": "diff-class transitions dip at anchors",
    "C3-random_labels": "random labels raise ‖J‖",
    "C3-augmentation": "augmentation lowers ‖J‖",
    "C3-full_batch": "full batch raises ‖J‖",
    "C3-saturating": "saturating activations raise ‖J‖",
    "C4": "per point, ‖J‖ predicts loss",
    "C5": "transitions grow with neurons",
    "C6": "best gap at the largest sizes",
}

RULES = {
    "C1": f"[paper] Mean test ‖J‖ correlates with the gap. [ours] Per dataset, among models that fit the training set "
          f"(train accuracy ≥ fit threshold, true labels): Spearman ρ(mean test ‖J‖_F, gap) > 0 with p < {ALPHA}. "
          f"Replicated when replicated on every dataset.",
    **C2_RULES,
    "C3": f"[paper] Paired models differing in one factor sit on the predicted side of the diagonal. [ours] Per factor, "
          f"over pairs whose two models both fit their training set: the Jacobian norm moves in the predicted direction, "
          f"one-sided sign test p < {ALPHA} (≥ {MIN_PAIRS} pairs). Gap and transitions reported alongside; the "
          f"transition side uses pairs of piecewise-linear models only.",
    "C4": f"[paper] Per test point, ‖J(x)‖ predicts the loss and misclassification. [ours] Per model (true labels): "
          f"Spearman ρ(‖J(x)‖, loss(x)) over the stored test points; median ρ > 0 with one-sided Wilcoxon p < {ALPHA}. "
          f"Misclassification AUROC of ‖J‖ reported.",
    "C5": f"[paper] Transitions grow with the number of neurons. [ours] Per dataset, true-label piecewise-linear models "
          f"(relu, relu6, hard-tanh, hard-sigmoid): Spearman ρ(transitions, hidden units) > 0 with p < {ALPHA}.",
    "C6": f"[paper] Over ≥ {C6_MIN_DECADES:g} decades of parameter count, fitted models: the best-generalizing models are "
          f"among the largest and training loss does not predict the gap. [ours] Per dataset, fitted true-label "
          f"sweep models (no C3 pair members, no C2 models); `not tested` when they span < {C6_MIN_DECADES:g} decades. "
          f"Replicated when (i) the best (lowest) gap per size decade falls with size (Spearman ρ(decade, best gap) "
          f"≤ −0.5), (ii) the lowest-gap model is in the top decade, and (iii) not both |ρ(gap, log train loss)| ≥ "
          f"{C6_MAX_LOSS_RHO} and p < {ALPHA}; fewer than {MIN_N} models: inconclusive; else not replicated.",
}


def _combine(verdicts: Sequence[str]) -> str:
    if verdicts and all(v == "not tested" for v in verdicts):
        return "not tested"
    verdicts = [v for v in verdicts if v != "not tested"]
    if not verdicts:
        return "inconclusive"
    if all(v == "replicated" for v in verdicts):
        return "replicated"
    if any(v == "not replicated" for v in verdicts):
        return "not replicated"
    return "inconclusive"


def _claim(cid: str, statistic: Dict[str, Any], v: Dict[str, str], **extra) -> Dict[str, Any]:
    rule = RULES.get(cid.split("-")[0] if cid.startswith("C3") else cid, "")
    return {"id": cid, "paper": PAPER[cid], "short": SHORT[cid], "rule": rule,
            "rule_sources": [tag for tag in ("[paper]", "[ours]") if tag in rule],
            "statistic": statistic, "verdict": v["verdict"], "reason": v["reason"], **extra}


def analyse(models: List[Dict[str, Any]], pairs: List[Dict[str, Any]], points: List[tuple],
            trajectories: List[Dict[str, Any]], *, fit_threshold: float, seed: int = 0, c2_max_train_loss: float = 0.01,
            constructions: Sequence[str] = RANDOM_CONSTRUCTIONS) -> Dict[str, Any]:
    """All claims. ``models`` rows as stored; returns ``{"claims": [...], "exclusions": {...}}``.

    The C2 experiment's models (:func:`jacal.replication.c2.is_c2_model`) feed C2 only; every other
    claim uses the sweep's models."""
    c2_models = [m for m in models if is_c2_model(m["model_id"])]
    models = [m for m in models if not is_c2_model(m["model_id"])]
    by_id = {m["model_id"]: m for m in models}
    # a C3 pair's own copy of a base model repeats a config of the sweep (same seed and init): it is
    # not a new sample of the population, so population-level claims leave it out (C3 uses it)
    partners = {p["base_id"] for p in pairs if p["base_id"].endswith("-base")}
    models = [m for m in models if m["model_id"] not in partners]
    datasets = sorted({m["dataset"] for m in models})
    true_label = [m for m in models if not m["random_labels"] and finite(m["train_accuracy"])]
    diverged = [m["model_id"] for m in models if not finite(m["train_accuracy"])]
    fitted = [m for m in true_label if m["train_accuracy"] >= fit_threshold]
    exclusions = {
        "fit_threshold": fit_threshold,
        "diverged": len(diverged),
        "pair_copies_of_base_models_kept_out_of_population_claims": len(partners),
        "random_label_models_excluded_from_gap_analyses": sum(bool(m["random_labels"]) for m in models),
        "true_label_models": len(true_label),
        "not_fitting_training_set": len(true_label) - len(fitted),
        "fitted_models_used_for_gap_analyses": len(fitted),
        "per_dataset": {d: {"true_label": sum(m["dataset"] == d for m in true_label),
                            "fitted": sum(m["dataset"] == d for m in fitted)} for d in datasets},
    }
    claims: List[Dict[str, Any]] = []

    # C1 ---------------------------------------------------------------------------------
    per = {}
    for d in datasets:
        ms = [m for m in fitted if m["dataset"] == d]
        c = correlation([m["mean_jacobian"] for m in ms], [m["gap"] for m in ms], seed=seed)
        per[d] = {**c, **verdict(n=c["n"], p=c["p"], direction_ok=(c["rho"] > 0) if finite(c["rho"]) else None)}
    main = per[datasets[0]] if datasets else {}
    claims.append({**_claim("C1", main, {"verdict": _combine([p["verdict"] for p in per.values()]),
                                          "reason": "; ".join(f"{d}: {p['reason']}" for d, p in per.items())}),
                   "per_dataset": per})

    # C2 ---------------------------------------------------------------------------------
    true_ids = {m["model_id"] for m in true_label}
    c2, c2_ex = c2_claims(trajectories, c2_models, max_train_loss=c2_max_train_loss, constructions=constructions)
    for cid, stat, v in c2:
        claims.append(_claim(cid, stat, v))
    exclusions.update(c2_ex)

    # C3 ---------------------------------------------------------------------------------
    predicted = {"random_labels": "greater", "augmentation": "less", "full_batch": "greater", "saturating": "greater"}
    for factor, direction in predicted.items():
        ps = [(by_id.get(p["base_id"]), by_id.get(p["variant_id"])) for p in pairs if p["factor"] == factor]
        n_planned = len(ps)
        ps = [(b, v) for b, v in ps if b is not None and v is not None and finite(b["mean_jacobian"])
              and finite(v["mean_jacobian"]) and b["train_accuracy"] >= fit_threshold and v["train_accuracy"] >= fit_threshold]
        jac = paired_comparison([b["mean_jacobian"] for b, _ in ps], [v["mean_jacobian"] for _, v in ps], predicted=direction)
        gap = paired_comparison([b["gap"] for b, _ in ps], [v["gap"] for _, v in ps], predicted=direction, log=False)
        pl = [(b, v) for b, v in ps if b["activation"] in PIECEWISE_LINEAR and v["activation"] in PIECEWISE_LINEAR]
        trans = paired_comparison([b["transitions"] for b, _ in pl], [v["transitions"] for _, v in pl], predicted=direction)
        trans["pairs_excluded_smooth_activation"] = len(ps) - len(pl)
        v = verdict(n=jac["n"], p=jac["sign_p"], min_n=MIN_PAIRS,
                    direction_ok=(jac["fraction_predicted"] > 0.5) if finite(jac["fraction_predicted"]) else None)
        claims.append(_claim(f"C3-{factor}", {**jac, "predicted": f"variant {direction} than base"}, v,
                             gap=gap, transitions=trans, pairs_planned=n_planned,
                             pairs_dropped_not_fitting=n_planned - len(ps),
                             pairs=[{"base": b["model_id"], "variant": v_["model_id"]} for b, v_ in ps]))

    # C4 ---------------------------------------------------------------------------------
    per_model: Dict[str, List[tuple]] = defaultdict(list)
    for mid, _i, jn, loss, correct in points:
        if mid in true_ids:
            per_model[mid].append((jn, loss, correct))
    per = [pointwise_sensitivity(a[:, 0], a[:, 1], a[:, 2] == 0)
           for a in (np.asarray(rows, dtype=float) for _, rows in sorted(per_model.items()))]
    rhos = [q["rho"] for q in per if math.isfinite(q["rho"])]
    aucs = [q["auroc"] for q in per if math.isfinite(q["auroc"])]
    r = one_sample_greater(rhos, 0.0)
    claims.append(_claim("C4", {**r, "median_rho": r["median"], "median_auroc": float(np.median(aucs)) if aucs else math.nan,
                                "n_models_auroc": len(aucs)},
                         verdict(n=r["n"], p=r["p"], direction_ok=(r["median"] > 0) if finite(r["median"]) else None)))

    # C5 ---------------------------------------------------------------------------------
    per = {}
    for d in datasets:
        ms = [m for m in true_label if m["dataset"] == d and m["activation"] in PIECEWISE_LINEAR]
        c = correlation([m["transitions"] for m in ms], [m["n_neurons"] for m in ms], seed=seed)
        fm = [m for m in fitted if m["dataset"] == d and m["activation"] in PIECEWISE_LINEAR]
        across_t = correlation([m["transitions"] for m in fm], [m["gap"] for m in fm], seed=seed, n_boot=200)
        across_j = correlation([m["mean_jacobian"] for m in fm], [m["gap"] for m in fm], seed=seed, n_boot=200)
        within = defaultdict(list)
        for m in fm:
            within[(m["width"], m["depth"], m["activation"])].append(m)
        within_t = [correlation([m["transitions"] for m in g], [m["gap"] for m in g], n_boot=10)["rho"]
                    for g in within.values() if len(g) >= 5]
        within_t = [x for x in within_t if finite(x)]
        per[d] = {**c, **verdict(n=c["n"], p=c["p"], direction_ok=(c["rho"] > 0) if finite(c["rho"]) else None),
                  "rho_transitions_gap_across_architectures": across_t["rho"],
                  "rho_jacobian_gap_across_architectures": across_j["rho"],
                  "median_rho_transitions_gap_within_architectures": float(np.median(within_t)) if within_t else math.nan,
                  "n_architectures_within": len(within_t)}
    main = per[datasets[0]] if datasets else {}
    claims.append({**_claim("C5", main, {"verdict": _combine([p["verdict"] for p in per.values()]),
                                          "reason": "; ".join(f"{d}: {p['reason']}" for d, p in per.items())}),
                   "per_dataset": per})

    # C6 ---------------------------------------------------------------------------------
    in_pairs = {p["base_id"] for p in pairs} | {p["variant_id"] for p in pairs}
    per = {d: c6_statistic([m for m in fitted if m["dataset"] == d and m["model_id"] not in in_pairs], seed=seed)
           for d in datasets}
    main = per[datasets[0]] if datasets else {"param_decades": math.nan}
    claims.append({**_claim("C6", main, {"verdict": _combine([p["verdict"] for p in per.values()]),
                                          "reason": "; ".join(f"{d}: {p['reason']}" for d, p in per.items())}),
                   "per_dataset": per})
    exclusions["c6_models_in_c3_pairs_excluded"] = sum(m["model_id"] in in_pairs for m in fitted)
    exclusions["smooth_activation_models_excluded_from_transition_claims"] = sum(
        m["activation"] not in PIECEWISE_LINEAR for m in true_label)
    return {"claims": claims, "exclusions": exclusions, "c2_models": c2_ex["c2_models_kept"], "c4_models": len(per_model)}


def c6_statistic(ms: Sequence[Dict[str, Any]], *, seed: int = 0) -> Dict[str, Any]:
    """C6 on one dataset's fitted sweep models (see ``RULES["C6"]``): statistic and verdict."""
    ms = [m for m in ms if finite(m["gap"]) and m["n_params"]]
    out: Dict[str, Any] = {"n": len(ms), "param_decades": math.nan}
    if not ms:
        return {**out, "verdict": "not tested", "reason": "no fitted sweep model", "summary": "no fitted models"}
    sizes = np.array([m["n_params"] for m in ms], float)
    gaps = np.array([m["gap"] for m in ms], float)
    span = float(np.log10(sizes.max() / sizes.min()))
    loss = correlation(gaps, np.log10(np.maximum([m["train_loss"] for m in ms], 1e-12)), seed=seed, n_boot=200)
    decade = np.floor(np.log10(sizes)).astype(int)
    best = {int(d): float(gaps[decade == d].min()) for d in np.unique(decade)}
    lowest = int(np.argmin(gaps))
    out.update(param_decades=span, min_params=int(sizes.min()), max_params=int(sizes.max()),
               best_gap_per_decade={f"1e{d}": g for d, g in best.items()},
               models_per_decade={f"1e{d}": int(np.sum(decade == d)) for d in best},
               lowest_gap=float(gaps[lowest]), lowest_gap_params=int(sizes[lowest]),
               lowest_gap_in_top_decade=bool(decade[lowest] == decade.max()),
               rho_gap_log_train_loss=loss["rho"], p_gap_log_train_loss=loss["p"],
               rho_gap_params=correlation(gaps, sizes, seed=seed, n_boot=200)["rho"])
    rho_best = math.nan
    if len(best) >= 3:
        rho_best = float(_spearman(list(best), list(best.values())))
    out["rho_decade_best_gap"] = rho_best
    out["summary"] = (f"{span:.2f} decades of parameters; best gap per decade "
                      + ", ".join(f"{k} {g:.3g}" for k, g in out["best_gap_per_decade"].items())
                      + f"; ρ(gap, log train loss) = {loss['rho']:.2f}" if finite(loss["rho"]) else
                      f"{span:.2f} decades of parameters")
    if span < C6_MIN_DECADES:
        return {**out, "verdict": "not tested",
                "reason": f"the fitted population spans {span:.2f} decades of parameter count ({int(sizes.min()):,}–"
                          f"{int(sizes.max()):,}) < {C6_MIN_DECADES:g}"}
    if len(ms) < MIN_N:
        return {**out, "verdict": "inconclusive", "reason": f"too few fitted models (n={len(ms)} < {MIN_N})"}
    falls = finite(rho_best) and rho_best <= -0.5
    top = out["lowest_gap_in_top_decade"]
    loss_predicts = finite(loss["p"]) and loss["p"] < ALPHA and abs(loss["rho"]) >= C6_MAX_LOSS_RHO
    parts = [f"best gap per decade {'falls' if falls else 'does not fall'} with size (ρ={rho_best:.2f})",
             f"lowest-gap model ({int(sizes[lowest]):,} params) {'in' if top else 'not in'} the top decade",
             f"training loss {'predicts' if loss_predicts else 'does not predict'} the gap (ρ={loss['rho']:.2f}, "
             f"p={loss['p']:.2g})"]
    ok = falls and top and not loss_predicts
    return {**out, "verdict": "replicated" if ok else "not replicated", "reason": "; ".join(parts)}


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy import stats

    return stats.spearmanr(x, y).statistic
