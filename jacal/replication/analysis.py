"""Turn the result store into claim-by-claim statistics and verdicts (pre-declared rules)."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, List, Sequence

import numpy as np

from jacal._stats import finite
from jacal.replication.stats import (ALPHA, MIN_PAIRS, correlation, one_sample_greater, paired_comparison,
                                     pointwise_sensitivity, verdict)

__all__ = ["analyse", "RULES", "PAPER"]

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
    "C6": "big models generalize best",
}

RULES = {
    "C1": f"Per dataset, among models that fit the training set (train accuracy ≥ fit threshold, true labels): "
          f"Spearman ρ(mean test ‖J‖_F, gap) > 0 with p < {ALPHA}. Replicated when replicated on every dataset.",
    "C2a": f"Per model (true labels, fitted when any fit): log10(median ‖J‖ on random ellipses / median ‖J‖ at the anchors "
           f"of data ellipses) > 1 (10×), one-sided Wilcoxon across models, p < {ALPHA}.",
    "C2b": f"Per model: mean log10 ‖J‖ between anchors, different-class > same-class; one-sided sign test, p < {ALPHA}.",
    "C2c": f"Per model: mean transitions per step, random > same-class and different-class > same-class; "
           f"sign tests, both p < {ALPHA}.",
    "C2d": f"Per model: different-class ellipses, mean transitions per step within ±k/24 of an anchor < elsewhere; "
           f"sign test, p < {ALPHA}.",
    "C3": f"Per factor, over pairs differing only in that factor whose two models both fit their training set: the "
          f"Jacobian norm moves in the predicted direction, one-sided sign test p < {ALPHA} (≥ {MIN_PAIRS} pairs). "
          f"Gap and transitions reported alongside.",
    "C4": f"Per model (true labels): Spearman ρ(‖J(x)‖, loss(x)) over the stored test points; median ρ > 0 with "
          f"one-sided Wilcoxon p < {ALPHA}. Misclassification AUROC of ‖J‖ reported.",
    "C5": f"Per dataset, true-label models: Spearman ρ(transitions, hidden units) > 0 with p < {ALPHA}.",
    "C6": f"Per dataset, fitted true-label models: ρ(gap, parameters) < 0 with p < {ALPHA}, and training loss does not "
          f"predict the gap (not both |ρ(gap, train loss)| ≥ 0.3 and p < {ALPHA}).",
}


def _combine(verdicts: Sequence[str]) -> str:
    if not verdicts:
        return "inconclusive"
    if all(v == "replicated" for v in verdicts):
        return "replicated"
    if any(v == "not replicated" for v in verdicts):
        return "not replicated"
    return "inconclusive"


def _claim(cid: str, statistic: Dict[str, Any], v: Dict[str, str], **extra) -> Dict[str, Any]:
    return {"id": cid, "paper": PAPER[cid], "short": SHORT[cid], "rule": RULES.get(cid.split("-")[0] if cid.startswith("C3") else cid, ""),
            "statistic": statistic, "verdict": v["verdict"], "reason": v["reason"], **extra}


def analyse(models: List[Dict[str, Any]], pairs: List[Dict[str, Any]], points: List[tuple],
            trajectories: List[Dict[str, Any]], *, fit_threshold: float, seed: int = 0) -> Dict[str, Any]:
    """All claims. ``models`` rows as stored; returns ``{"claims": [...], "exclusions": {...}}``."""
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
    fitted_ids = {m["model_id"] for m in fitted}
    true_ids = {m["model_id"] for m in true_label}
    use_ids = fitted_ids if any(t["model_id"] in fitted_ids for t in trajectories) else true_ids
    traj_by_model: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for t in trajectories:
        if t["model_id"] in use_ids:
            traj_by_model[t["model_id"]].append(t)
    ratio, same_between, diff_between, dens = [], [], [], defaultdict(list)
    near_anchor, away_anchor = [], []
    for mid, ts in sorted(traj_by_model.items()):
        def arr(kind, field):
            return [np.asarray(t[field], dtype=float) for t in ts if t["kind"] == kind]
        rnd, dif, sam = arr("random", "jacobian"), arr("different-class", "jacobian"), arr("same-class", "jacobian")
        if not (rnd and dif and sam):
            continue
        anchors = ts[0]["anchors"]
        k = len(rnd[0])
        at = np.concatenate([a[anchors] for a in dif + sam])
        ratio.append(math.log10(max(np.median(np.concatenate(rnd)), 1e-300) / max(np.median(at), 1e-300)))
        mask = np.ones(k, dtype=bool)
        w = max(1, k // 24)
        for a in anchors:
            mask[max(0, a - w):a + w + 1] = False
        same_between.append(np.mean([np.log10(np.maximum(a[mask], 1e-300)).mean() for a in sam]))
        diff_between.append(np.mean([np.log10(np.maximum(a[mask], 1e-300)).mean() for a in dif]))
        for kind in ("random", "different-class", "same-class"):
            dens[kind].append(np.mean([a.mean() for a in arr(kind, "transitions")]))
        dt = arr("different-class", "transitions")
        near_anchor.append(np.mean([a[~mask].mean() for a in dt]))
        away_anchor.append(np.mean([a[mask].mean() for a in dt]))
    r = one_sample_greater(ratio, 1.0)
    claims.append(_claim("C2a", {**r, "median_log10_ratio": r["median"]},
                         verdict(n=r["n"], p=r["p"], direction_ok=(r["median"] > 1) if finite(r["median"]) else None)))
    b = paired_comparison(np.power(10.0, same_between), np.power(10.0, diff_between), predicted="greater")
    claims.append(_claim("C2b", b, verdict(n=b["n"], p=b["sign_p"], min_n=MIN_PAIRS,
                                           direction_ok=(b["fraction_predicted"] > 0.5) if finite(b["fraction_predicted"]) else None)))
    rd = paired_comparison(dens["same-class"], dens["random"], predicted="greater")
    ds = paired_comparison(dens["same-class"], dens["different-class"], predicted="greater")
    p_c = max(rd["sign_p"], ds["sign_p"]) if finite(rd["sign_p"]) and finite(ds["sign_p"]) else math.nan
    ok_c = (rd["fraction_predicted"] > 0.5 and ds["fraction_predicted"] > 0.5) if finite(p_c) else None
    claims.append(_claim("C2c", {"n": rd["n"], "p": p_c, "random_vs_same": rd, "different_vs_same": ds,
                                 "mean_density": {k: float(np.mean(v)) for k, v in dens.items() if v}},
                         verdict(n=rd["n"], p=p_c, direction_ok=ok_c, min_n=MIN_PAIRS)))
    an = paired_comparison(np.asarray(near_anchor) + 1e-9, np.asarray(away_anchor) + 1e-9, predicted="greater")
    claims.append(_claim("C2d", an, verdict(n=an["n"], p=an["sign_p"], min_n=MIN_PAIRS,
                                            direction_ok=(an["fraction_predicted"] > 0.5) if finite(an["fraction_predicted"]) else None)))

    # C3 ---------------------------------------------------------------------------------
    predicted = {"random_labels": "greater", "augmentation": "less", "full_batch": "greater", "saturating": "greater"}
    for factor, direction in predicted.items():
        ps = [(by_id.get(p["base_id"]), by_id.get(p["variant_id"])) for p in pairs if p["factor"] == factor]
        n_planned = len(ps)
        ps = [(b, v) for b, v in ps if b is not None and v is not None and finite(b["mean_jacobian"])
              and finite(v["mean_jacobian"]) and b["train_accuracy"] >= fit_threshold and v["train_accuracy"] >= fit_threshold]
        jac = paired_comparison([b["mean_jacobian"] for b, _ in ps], [v["mean_jacobian"] for _, v in ps], predicted=direction)
        gap = paired_comparison([b["gap"] for b, _ in ps], [v["gap"] for _, v in ps], predicted=direction, log=False)
        trans = paired_comparison([b["transitions"] for b, _ in ps], [v["transitions"] for _, v in ps], predicted=direction)
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
        ms = [m for m in true_label if m["dataset"] == d]
        c = correlation([m["transitions"] for m in ms], [m["n_neurons"] for m in ms], seed=seed)
        fm = [m for m in fitted if m["dataset"] == d]
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
    per = {}
    for d in datasets:
        ms = [m for m in fitted if m["dataset"] == d]
        size = correlation([m["gap"] for m in ms], [m["n_params"] for m in ms], seed=seed)
        loss = correlation([m["gap"] for m in ms], [m["train_loss"] for m in ms], seed=seed)
        v = verdict(n=size["n"], p=size["p"], direction_ok=(size["rho"] < 0) if finite(size["rho"]) else None)
        loss_predicts = finite(loss["p"]) and loss["p"] < ALPHA and abs(loss["rho"]) >= 0.3
        if v["verdict"] == "replicated" and loss_predicts:
            v = {"verdict": "not replicated", "reason": f"training loss predicts the gap (ρ={loss['rho']:.2f}, p={loss['p']:.2g})"}
        elif v["verdict"] == "replicated":
            v = {"verdict": "replicated", "reason": v["reason"] + f"; training loss ρ={loss['rho']:.2f} (p={loss['p']:.2g})"}
        per[d] = {**size, "rho_gap_train_loss": loss["rho"], "p_gap_train_loss": loss["p"], **v}
    main = per[datasets[0]] if datasets else {}
    claims.append({**_claim("C6", main, {"verdict": _combine([p["verdict"] for p in per.values()]),
                                          "reason": "; ".join(f"{d}: {p['reason']}" for d, p in per.items())}),
                   "per_dataset": per})
    return {"claims": claims, "exclusions": exclusions, "c2_models": len(traj_by_model), "c4_models": len(per_model)}
