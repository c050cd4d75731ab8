"""C2a-C2d from the C2 experiment's trajectories (rules declared before the run).

The unit of every C2 test is the *ellipse* [ours]: each is a fresh, independent draw, and its value
is the mean over the kept C2 models (all measured on the same ellipses). Kinds are compared with a
one-sided Mann–Whitney U test across ellipses; a claim is replicated when that test gives
p < ALPHA in the predicted direction *and* more than half of the models agree (each model's mean
over the ellipses on the predicted side). C2d is a one-sample Wilcoxon test across ellipses of the
per-ellipse mean Spearman ρ(transitions per step, angular distance to the nearest anchor).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from scipy import stats

from jacal._internal.stats import finite
from jacal.replication.c2 import DATA_KINDS, angular_distance_to_anchors
from jacal.replication.stats import ALPHA, MIN_N, one_sample_greater, verdict

__all__ = ["c2_claims", "C2_RULES"]

C2_RULES = {
    "C2a": f"[paper] ‖J‖ along a random ellipse is orders of magnitude above its value at the anchors of data ellipses. "
           f"[ours] Per ellipse (mean over the C2 models): log10 median ‖J‖ along each random ellipse vs log10 median "
           f"‖J‖ at the three anchors of each data ellipse; random − 1 > anchors (a 10× margin), one-sided "
           f"Mann–Whitney across ellipses p < {ALPHA}, and most models agree. Judged under each random-ellipse "
           f"construction; the first is the primary.",
    "C2b": f"[paper] Between anchors the same-class ellipse stays less sensitive than the different-class one. "
           f"[ours] Per ellipse: mean log10 ‖J‖ over the samples farther than k/24 from an anchor; different-class > "
           f"same-class, one-sided Mann–Whitney across ellipses p < {ALPHA}, and most models agree.",
    "C2c": f"[paper] Transition density: random ellipse high, same-class low. [ours] Exact transitions of ReLU "
           f"models; density per step (transitions / k) decides, per unit length (transitions / ellipse length in "
           f"input units) is reported beside it; random > same-class and different-class > same-class, one-sided "
           f"Mann–Whitney across ellipses, both p < {ALPHA}, and most models agree on both. Judged under each "
           f"random-ellipse construction; the first is the primary.",
    "C2d": f"[paper] Different-class transitions dip at the anchors and peak between them (Fig. 3's V, about ±60° "
           f"around each anchor). [ours] Per (model, different-class ellipse): Spearman ρ(exact transitions per step, "
           f"angular distance of the step to the nearest anchor); per ellipse the mean over models; median > 0, "
           f"one-sided Wilcoxon across ellipses p < {ALPHA}, and most models' median ρ > 0.",
}


def _mean(a) -> float:
    """Mean of the finite values; NaN (silently) when there are none."""
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else math.nan


def _verdict(n: int, p: float, direction_ok, agree: float, n_models: int, min_n: int = MIN_N) -> Dict[str, str]:
    """The ellipse-level rule plus the models' agreement (see the module docstring)."""
    if n_models == 0:
        return {"verdict": "inconclusive", "reason": "no C2 model reached near-zero training loss"}
    v = verdict(n=n, p=p, direction_ok=direction_ok, min_n=min_n)
    v = {**v, "reason": v["reason"].replace("few models", "few ellipses")}  # the unit here is the ellipse
    if v["verdict"] == "replicated" and not (finite(agree) and agree > 0.5):
        return {"verdict": "inconclusive", "reason": f"ellipses agree (p={p:.2g}) but only {agree:.2f} of "
                                                     f"{n_models} models do"}
    return v


def _compare(hi_e, lo_e, hi_m, lo_m, *, shift: float = 0.0) -> Dict[str, Any]:
    """hi > lo + shift? Mann–Whitney across ellipses (p for the observed side), models' agreement."""
    hi_e, lo_e = np.asarray(hi_e, float), np.asarray(lo_e, float)
    hi_e, lo_e = hi_e[np.isfinite(hi_e)], lo_e[np.isfinite(lo_e)]
    n = int(min(len(hi_e), len(lo_e)))
    out = {"n": n, "n_ellipses_hi": int(len(hi_e)), "n_ellipses_lo": int(len(lo_e)), "p": math.nan,
           "median_hi": math.nan, "median_lo": math.nan, "direction_ok": None, "fraction_models_predicted": math.nan}
    if n == 0:
        return out
    ok = bool(np.median(hi_e) - shift > np.median(lo_e))
    side = "greater" if ok else "less"
    p = float(stats.mannwhitneyu(hi_e - shift, lo_e, alternative=side).pvalue)
    d = np.asarray(hi_m, float) - shift - np.asarray(lo_m, float)
    d = d[np.isfinite(d)]
    out.update(p=p, median_hi=float(np.median(hi_e)), median_lo=float(np.median(lo_e)), direction_ok=ok,
               fraction_models_predicted=float(np.mean(d > 0)) if len(d) else math.nan, n_models=int(len(d)))
    return out


def _both(a: Dict[str, str], b: Dict[str, str]) -> Dict[str, str]:
    vs = (a["verdict"], b["verdict"])
    if vs == ("replicated", "replicated"):
        return {"verdict": "replicated", "reason": f"random > same: {a['reason']}; different > same: {b['reason']}"}
    worst = "not replicated" if "not replicated" in vs else "inconclusive"
    return {"verdict": worst, "reason": f"random > same-class: {a['verdict']} ({a['reason']}); different > same-class: "
                                        f"{b['verdict']} ({b['reason']})"}


def c2_claims(trajectories: Sequence[Dict[str, Any]], c2_models: Sequence[Dict[str, Any]], *, max_train_loss: float,
              constructions: Sequence[str]) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """``([C2a, C2b, C2c, C2d] as (id, statistic, verdict dict) entries, exclusions)``."""
    kept = sorted(m["model_id"] for m in c2_models
                  if finite(m["train_loss"]) and m["train_loss"] <= max_train_loss)
    excluded = {m["model_id"]: m["train_loss"] for m in c2_models if m["model_id"] not in kept}
    activations = sorted({m["activation"] for m in c2_models if m["model_id"] in kept})
    m_index = {mid: i for i, mid in enumerate(kept)}
    # per (kind, construction): metric → (models × ellipses) array
    all_ids = {m["model_id"] for m in c2_models}
    rows = [t for t in trajectories if t["model_id"] in m_index]
    n_ell = defaultdict(int)  # ellipses of each kind in the experiment (whether or not a model was kept)
    for t in trajectories:
        if t["model_id"] not in all_ids:
            continue
        key = (t["kind"], t["construction"])
        n_ell[key] = max(n_ell[key], t["traj_index"] + 1)
    metrics = ("log_median_j", "log_anchor_j", "log_between_j", "per_step", "per_length", "sampled_per_step", "rho_angle",
               "length")
    table = {key: {m: np.full((len(kept), n), np.nan) for m in metrics} for key, n in n_ell.items()}
    ang = None
    for t in rows:
        j = np.maximum(np.asarray(t["jacobian"], float), 1e-300)
        tr = np.asarray(t["transitions"], float)
        k = len(tr)
        if ang is None or len(ang) != k:
            ang = angular_distance_to_anchors(k)
        k = len(tr)
        stride = max(1, k // len(j))  # ‖J‖ is stored at every stride-th sample
        anchors = [a // stride for a in t["anchors"]]
        pos = np.arange(len(j)) * stride
        w = max(1, k // 24)
        mask = np.all(np.abs(pos[:, None] - np.asarray(t["anchors"])[None, :]) > w, axis=1)
        rho = math.nan
        if np.ptp(tr) > 0:
            rho = float(stats.spearmanr(tr, ang).statistic)
        vals = {"log_median_j": math.log10(np.median(j)), "log_anchor_j": math.log10(np.median(j[anchors])),
                "log_between_j": float(np.log10(j[mask]).mean()), "per_step": tr.sum() / k,
                "per_length": tr.sum() / t["length"] if t["length"] > 0 else math.nan,
                "sampled_per_step": float(np.sum(t["sampled"])) / k, "rho_angle": rho, "length": t["length"]}
        arr = table[(t["kind"], t["construction"])]
        for m, v in vals.items():
            arr[m][m_index[t["model_id"]], t["traj_index"]] = v

    def ell(kind, cons, metric):  # per ellipse: mean over models
        a = table.get((kind, cons), {}).get(metric)
        if a is None or not a.size:
            return np.array([])
        with np.errstate(all="ignore"), _quiet():
            return np.nanmean(a, axis=0)

    def mod(kind, cons, metric):  # per model: mean over ellipses
        a = table.get((kind, cons), {}).get(metric)
        if a is None or not a.size:
            return np.full(len(kept), np.nan)
        with np.errstate(all="ignore"), _quiet():
            return np.nanmean(a, axis=1)

    n_models = len(kept)
    kinds = [("random", c) for c in constructions] + [(k, "") for k in DATA_KINDS]
    label = {("random", c): f"random ({c})" for c in constructions}
    label.update({(k, ""): k for k in DATA_KINDS})
    base = {"n_models": n_models, "activations": activations,
            "n_ellipses": {label[key]: int(n_ell.get(key, 0)) for key in kinds}}
    primary = constructions[0] if constructions else ""
    claims = []

    def by_construction(make) -> Tuple[Dict[str, str], Dict[str, Dict[str, Any]], bool]:
        per = {c: make(c) for c in constructions}
        first = per[primary]
        verdicts = {c: r["verdict"]["verdict"] for c, r in per.items()}
        v = dict(first["verdict"])
        depends = len(set(verdicts.values())) > 1
        if depends:
            v["reason"] += ("; depends on the random ellipse's construction ("
                            + ", ".join(f"{c}: {x}" for c, x in verdicts.items()) + ")")
        return v, {c: {**{k: r[k] for k in r if k != "verdict"}, "verdict": r["verdict"]["verdict"],
                       "reason": r["verdict"]["reason"], "mean_length": _mean((ell("random", c, "length")))
                       if n_ell.get(("random", c)) else math.nan} for c, r in per.items()}, depends

    # C2a ------------------------------------------------------------------------------------
    anchors_e = np.concatenate([ell(k, "", "log_anchor_j") for k in DATA_KINDS])
    with np.errstate(all="ignore"), _quiet():
        anchors_m = np.nanmean(np.stack([mod(k, "", "log_anchor_j") for k in DATA_KINDS]), axis=0)

    def c2a(c):
        r = _compare(ell("random", c, "log_median_j"), anchors_e, mod("random", c, "log_median_j"), anchors_m, shift=1.0)
        r["median_log10_ratio"] = r["median_hi"] - r["median_lo"] if r["n"] else math.nan
        r["verdict"] = _verdict(r["n"], r["p"], r["direction_ok"], r["fraction_models_predicted"], n_models)
        return r

    v, per, depends = by_construction(c2a)
    s = per[primary]
    claims.append(("C2a", {**base, "n": s["n"], "p": s["p"], "median_log10_ratio": s["median_log10_ratio"],
                           "fraction_models_predicted": s["fraction_models_predicted"], "primary_construction": primary,
                           "constructions": per, "depends_on_construction": depends,
                           "summary": f"median log10(random ‖J‖ / at anchors) = {s['median_log10_ratio']:.3g} "
                                      f"({primary}); " + ", ".join(f"{c} {per[c]['median_log10_ratio']:.3g}"
                                                                   for c in constructions[1:])}, v))

    # C2b ------------------------------------------------------------------------------------
    r = _compare(ell("different-class", "", "log_between_j"), ell("same-class", "", "log_between_j"),
                 mod("different-class", "", "log_between_j"), mod("same-class", "", "log_between_j"))
    claims.append(("C2b", {**base, **r, "summary": f"mean log10 ‖J‖ between anchors: different-class {r['median_hi']:.3g}, "
                                                   f"same-class {r['median_lo']:.3g}"},
                   _verdict(r["n"], r["p"], r["direction_ok"], r["fraction_models_predicted"], n_models)))

    # C2c ------------------------------------------------------------------------------------
    def densities(metric):
        return {label[key]: _mean((ell(*key, metric))) if n_ell.get(key) else math.nan for key in kinds}

    def c2c_on(metric):
        ds = _compare(ell("different-class", "", metric), ell("same-class", "", metric),
                      mod("different-class", "", metric), mod("same-class", "", metric))
        vd = _verdict(ds["n"], ds["p"], ds["direction_ok"], ds["fraction_models_predicted"], n_models)

        def make(c):
            rs = _compare(ell("random", c, metric), ell("same-class", "", metric), mod("random", c, metric),
                          mod("same-class", "", metric))
            vr = _verdict(rs["n"], rs["p"], rs["direction_ok"], rs["fraction_models_predicted"], n_models)
            p = max(rs["p"], ds["p"]) if finite(rs["p"]) and finite(ds["p"]) else math.nan
            return {"random_vs_same": rs, "p": p, "verdict": _both(vr, vd)}
        return ds, make

    ds, make = c2c_on("per_step")
    v, per, depends = by_construction(make)
    _, make_len = c2c_on("per_length")
    v_len, per_len, _ = by_construction(make_len)
    for c in constructions:
        per[c]["per_length_verdict"] = per_len[c]["verdict"]
        per[c]["mean_density"] = _mean((ell("random", c, "per_step"))) if n_ell.get(("random", c)) else math.nan
        per[c]["mean_density_per_length"] = (_mean((ell("random", c, "per_length")))
                                             if n_ell.get(("random", c)) else math.nan)
    dens, dens_len, sampled = densities("per_step"), densities("per_length"), densities("sampled_per_step")
    claims.append(("C2c", {**base, "n": min(ds["n"], per[primary]["random_vs_same"]["n"]), "p": per[primary]["p"],
                           "mean_density": dens, "mean_density_per_length": dens_len,
                           "mean_sampled_density": sampled, "different_vs_same": ds,
                           "random_vs_same": per[primary]["random_vs_same"], "primary_construction": primary,
                           "constructions": per, "depends_on_construction": depends,
                           "per_length": {"verdict": v_len["verdict"], "reason": v_len["reason"]},
                           "summary": "exact transitions/step: " + ", ".join(f"{k} {x:.3g}" for k, x in dens.items())
                                      + "; per unit length: " + ", ".join(f"{k} {x:.3g}" for k, x in dens_len.items())},
                   v))

    # C2d ------------------------------------------------------------------------------------
    rho_e = ell("different-class", "", "rho_angle")
    a = table.get(("different-class", ""), {}).get("rho_angle", np.empty((0, 0)))
    with np.errstate(all="ignore"), _quiet():
        rho_m = np.nanmedian(a, axis=1) if a.size else np.array([])
    pooled = a[np.isfinite(a)] if a.size else np.array([])
    r = one_sample_greater(rho_e, 0.0)
    if finite(r["median"]) and r["median"] < 0:  # the p of the observed side, so a reversed V reads as such
        finite_rho = np.asarray(rho_e, float)[np.isfinite(rho_e)]
        r["p"] = float(stats.wilcoxon(finite_rho, alternative="less").pvalue) if np.any(finite_rho != 0) else math.nan
    agree = float(np.mean(rho_m[np.isfinite(rho_m)] > 0)) if np.isfinite(rho_m).any() else math.nan
    claims.append(("C2d", {**base, **r, "median_rho": r["median"], "fraction_models_predicted": agree,
                           "pooled_median_rho": float(np.median(pooled)) if len(pooled) else math.nan,
                           "pooled_fraction_positive": float(np.mean(pooled > 0)) if len(pooled) else math.nan,
                           "n_rho": int(len(pooled)),
                           "summary": f"median ρ(transitions/step, angle to nearest anchor) over ellipses = "
                                      f"{r['median']:.3g}; {agree:.2f} of models > 0"},
                   _verdict(r["n"], r["p"], (r["median"] > 0) if finite(r["median"]) else None, agree, n_models)))
    exclusions = {"c2_models": len(c2_models), "c2_models_kept": n_models, "c2_max_train_loss": max_train_loss,
                  "c2_models_not_near_zero_loss": excluded}
    return claims, exclusions


class _quiet:
    """Silence numpy's 'mean of empty slice' warnings (all-NaN columns give NaN, as intended)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
