"""Which confidence estimator flags failures under shift, and off-manifold inputs? The table of docs/benchmarks/confidence_shift.md.

Protocol (every choice here is jacal's; numbers in ``--help``):

* Data: MNIST (``--data-root`` with ``MNIST/raw`` or ``mnist.npz``; offline fallback: scikit-learn
  digits). Per training seed, a seeded subset of the training split: ``--n-train`` images to train
  on and ``--n-heldout`` disjoint ones to fit the held-out estimators (temperature,
  jacobian-residual, jacobian-noise, combined). Mahalanobis and kNN are fitted on the training images.
* Models: jacal's MLP 784-256-256-10 (ReLU) and small CNN, Adam (lr 1e-3, batch 128),
  ``--epochs-mlp`` / ``--epochs-cnn`` epochs; one model per (architecture, seed).
* Evaluation sets, the same for every seed: the first ``--n-test`` test images (clean); the first
  ``--n-shift`` test images under each corruption × severity of :mod:`jacal.shift` (corruption seed
  0); scikit-learn digits in MNIST's layout (near shift, labeled); far-OOD ``--n-ood`` uniform-noise
  images and sample-photo crops (unlabeled).
* Metrics per estimator: failure AUROC, AURC, E-AURC on the clean, corrupted and near-shift sets; ECE
  on clean for probabilistic estimators; OOD AUROC and FPR@95%TPR of clean test vs each far-OOD set.
* Summary: mean and 95% t-interval over seeds; the corruption-averaged AURC (mean over every
  corruption × severity) of each Jacobian estimator against max-softmax, paired over (architecture,
  seed), one-sided paired t-test, Holm-adjusted over the Jacobian estimators; far-OOD AUROC (mean of
  the two far sets) of each Jacobian estimator against energy, paired, two-sided; the time of each
  estimator on ``--timing-n`` clean images relative to ``jacobian_norm`` (seed 0; the median over
  ``--timing-repeats`` rounds of the ratio to that round's ``jacobian_norm`` time).

Sizes: 5,000 training images and a few epochs keep the default run near 15 minutes on 2 CPU cores
(measured with one thread: MLP about 45 s per seed, CNN about 3.3 min per seed of which 18 s training,
the estimator timings about 2.5 min); both models reach about 95-96% clean test accuracy, so there
are errors to detect on clean data too, and the issue's 1,000-image MLP is a flag away (``--n-train``).
Corrupted sets use 1,500 test images each (36 sets), clean test all 10,000.

Outputs in ``--out``: ``runs/ARCH-seedS.json`` (one per model, reused by a rerun with the same
settings: a killed run continues, and seeds can be added run by run), ``summary.json``, ``table.md``,
``aurc_by_corruption.png`` (AURC against severity, a few estimators) and ``aurc_delta.png`` (every
estimator's AURC minus max-softmax's); the summary is printed as one JSON object (NaN as null).

    python benchmarks/confidence_shift.py --data-root ../shared/data --out runs/confidence_shift
    python benchmarks/confidence_shift.py --tiny --out /tmp/cs   # digits, seconds
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_MNIST  # noqa: E402
from _confidence_report import BASELINE, finite_or_none, plot, write_table  # noqa: E402

import jacal  # noqa: E402
from jacal._internal.stats import mean_ci  # noqa: E402
from jacal._internal.io import atomic_open  # noqa: E402
from jacal.confidence import (FITTED, JACOBIAN_METHODS, METHODS, PROBABILISTIC, ConfidenceEstimator,  # noqa: E402
                              confidence_features, confidence_from, confidence_metrics, fit_confidence, ood_metrics)
from jacal.shift import CORRUPTIONS, FAR_OOD, SEVERITIES, corrupt, far_ood, near_shift_digits  # noqa: E402

OOD_BASELINE = "energy"
ALL = ("embeddings", "gram", "odin_logits")


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("mnist", "digits"), default="mnist",
                    help="mnist (falls back to digits with a note when absent) or digits")
    ap.add_argument("--data-root", type=Path, default=SHARED_MNIST)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-heldout", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--n-shift", type=int, default=1500, help="test images per corruption × severity")
    ap.add_argument("--n-ood", type=int, default=2000, help="images per far-OOD set")
    ap.add_argument("--epochs-mlp", type=float, default=20)
    ap.add_argument("--epochs-cnn", type=float, default=8)
    ap.add_argument("--corruptions", default=",".join(CORRUPTIONS))
    ap.add_argument("--severities", default=",".join(map(str, SEVERITIES)))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--timing-n", type=int, default=10000, help="clean images timed per estimator (0: no timing)")
    ap.add_argument("--timing-repeats", type=int, default=3,
                    help="timing rounds (jacobian_norm, then every estimator, per round): each ratio is the median "
                         "over rounds of the estimator's time over that round's jacobian_norm time")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--out", type=Path, default=Path("runs/confidence_shift"))
    ap.add_argument("--fresh", action="store_true", help="ignore per-model results cached in --out/runs")
    ap.add_argument("--tiny", action="store_true", help="digits, 2 seeds, small sets: an end-to-end check in seconds")
    args = ap.parse_args(argv)
    if args.tiny:
        args.dataset, args.seeds, args.n_train, args.n_heldout = "digits", 2, 900, 300
        args.n_test, args.n_shift, args.n_ood, args.epochs_mlp, args.epochs_cnn = 450, 150, 150, 15, 12
        args.severities, args.timing_n, args.timing_repeats = "1,3", 200, 1
    return args


# ---------------------------------------------------------------------------------------------
# data and models

def load(args: argparse.Namespace, seed: int) -> Dict[str, torch.Tensor]:
    n = args.n_train + args.n_heldout
    d = jacal.load_dataset(args.dataset, root=args.data_root, n_train=n, seed=seed, clamp=True)
    if len(d.x_train) < n:
        raise SystemExit(f"--n-train + --n-heldout = {n} exceeds the {len(d.x_train)} training images of {args.dataset}")
    return {"x_train": d.x_train[:args.n_train], "y_train": d.y_train[:args.n_train],
            "x_held": d.x_train[args.n_train:], "y_held": d.y_train[args.n_train:],
            "x_test": d.x_test[:args.n_test], "y_test": d.y_test[:args.n_test]}


def evaluation_sets(x_test: torch.Tensor, y_test: torch.Tensor, args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Every set a model is scored on, the same for all seeds and architectures."""
    sets = [{"name": "clean", "kind": "clean", "x": x_test, "y": y_test}]
    xs, ys = x_test[:args.n_shift], y_test[:args.n_shift]
    for c in args.corruptions.split(","):
        for s in map(int, args.severities.split(",")):
            sets.append({"name": f"{c}/{s}", "kind": "corruption", "corruption": c, "severity": s,
                         "x": corrupt(xs, c, s, seed=0), "y": ys})
    shape = tuple(x_test.shape[1:])
    if shape[1] > 8:  # digits are the training data of the offline default: no near shift then
        xd, yd = near_shift_digits(shape)
        sets.append({"name": "digits", "kind": "near", "x": xd, "y": yd})
    for kind in FAR_OOD:
        sets.append({"name": kind, "kind": "far", "x": far_ood(kind, args.n_ood, shape, seed=0), "y": None})
    return sets


def build(arch: str, shape: tuple, seed: int) -> torch.nn.Module:
    if arch == "mlp":
        return jacal.mlp(int(np.prod(shape)), 10, width=256, depth=2, seed=seed)
    return jacal.cnn(shape, 10, seed=seed)


# ---------------------------------------------------------------------------------------------
# one model

def run_one(arch: str, seed: int, args: argparse.Namespace, sets: List[Dict[str, Any]], data: Dict[str, torch.Tensor],
            methods: Sequence[str]) -> Dict[str, Any]:
    shape = tuple(data["x_train"].shape[1:])
    model = build(arch, shape, seed)
    splits = jacal.Splits(args.dataset, data["x_train"], data["y_train"], data["x_test"], data["y_test"], 10)
    epochs = args.epochs_mlp if arch == "mlp" else args.epochs_cnn
    tr = jacal.train(model, splits, optimizer="adam", lr=1e-3, batch_size=128, epochs=epochs, seed=seed, device="cpu")
    model.eval()
    bs = args.batch_size
    train_f = confidence_features(model, data["x_train"], need={"embeddings"}, batch_size=bs)
    held_f = confidence_features(model, data["x_held"], need=ALL, batch_size=bs)
    states = {}
    for m in methods:
        fit_on, y = (train_f, data["y_train"]) if FITTED.get(m) == "training" else (held_f, data["y_held"])
        states[m] = fit_confidence(fit_on.logits, y, method=m, gram=fit_on.gram, embeddings=fit_on.embeddings, seed=seed)
    out: Dict[str, Any] = {"arch": arch, "seed": seed, "train": tr.to_dict(), "sets": {}}
    clean_conf: Dict[str, np.ndarray] = {}
    for s in sets:
        t0 = time.perf_counter()
        f = confidence_features(model, s["x"], need=ALL, batch_size=bs)
        conf = {m: confidence_from(**f.arrays(), method=m, state=states[m]) for m in methods}
        row: Dict[str, Any] = {k: s[k] for k in ("kind", "corruption", "severity") if k in s}
        if s["kind"] == "far":
            row["methods"] = {m: ood_metrics(clean_conf[m], conf[m]) for m in methods}
        else:
            correct = f.logits.argmax(1) == s["y"].numpy()
            row["accuracy"] = float(correct.mean())
            row["methods"] = {m: confidence_metrics(conf[m], correct, probabilistic=m in PROBABILISTIC and s["kind"] == "clean")
                              for m in methods}
            if s["kind"] == "clean":
                clean_conf = conf
        row["seconds"] = round(time.perf_counter() - t0, 2)
        out["sets"][s["name"]] = row
    if seed == 0 and args.timing_n > 0:
        out["timing"] = timing(model, data["x_test"][:args.timing_n], states, methods, bs, args.timing_repeats)
    return out


def timing(model: torch.nn.Module, x: torch.Tensor, states: Dict[str, dict], methods: Sequence[str],
           batch_size: int, repeats: int = 3) -> Dict[str, Any]:
    """Seconds to score ``x`` with each estimator end to end (its own model pass), against ``jacobian_norm``.

    ``repeats`` rounds, each timing ``jacobian_norm`` and then every estimator once; an estimator's
    ratio is the median over rounds of its time over that round's ``jacobian_norm`` time (a single
    sub-second timing on a shared machine is noise), its seconds the median of its times.
    """
    def clock(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    jacal.jacobian_norm(model, x[:batch_size], batch_size=batch_size)  # warm-up: allocator, first-call costs
    estimators = {}
    for m in methods:
        estimators[m] = ConfidenceEstimator(m, batch_size=batch_size)
        estimators[m].state_ = states[m]
    bases, seconds = [], {m: [] for m in methods}
    for _ in range(max(1, repeats)):
        bases.append(clock(lambda: jacal.jacobian_norm(model, x, batch_size=batch_size)))
        for m, est in estimators.items():
            seconds[m].append(clock(lambda: est.predict_confidence(model, x)))
    return {"n": len(x), "repeats": len(bases), "jacobian_norm_s": float(np.median(bases)),
            "seconds": {m: float(np.median(s)) for m, s in seconds.items()},
            "ratio_to_jacobian_norm": {m: float(np.median(np.asarray(s) / np.asarray(bases)))
                                       for m, s in seconds.items()}}


# ---------------------------------------------------------------------------------------------
# summary

def per_run(run: Dict[str, Any], method: str) -> Dict[str, float]:
    """One model's numbers for one estimator: clean, corruption-averaged, near shift, far OOD."""
    sets = run["sets"]
    corr = [r["methods"][method] for r in sets.values() if r["kind"] == "corruption"]
    far = {k: r["methods"][method] for k, r in sets.items() if r["kind"] == "far"}
    out = {"clean_aurc": sets["clean"]["methods"][method]["aurc"],
           "clean_failure_auroc": sets["clean"]["methods"][method]["failure_auroc"],
           "clean_ece": sets["clean"]["methods"][method].get("ece", math.nan)}
    if corr:
        for key in ("aurc", "e_aurc", "failure_auroc"):
            out[f"corruption_{key}"] = float(np.nanmean([c[key] for c in corr]))
    if "digits" in sets:
        out["near_aurc"] = sets["digits"]["methods"][method]["aurc"]
    for k, r in far.items():
        out[f"ood_auroc_{k}"] = r["ood_auroc"]
        out[f"ood_fpr95_{k}"] = r["ood_fpr_at_95_tpr"]
    if far:
        out["far_ood_auroc"] = float(np.mean([r["ood_auroc"] for r in far.values()]))
    return out


def paired(a: List[float], b: List[float], alternative: str) -> Dict[str, float]:
    d = np.asarray(a) - np.asarray(b)
    p = float(stats.ttest_rel(a, b, alternative=alternative).pvalue) if len(d) >= 2 and np.ptp(d) > 0 else math.nan
    return {"n_pairs": len(d), "mean_difference": float(d.mean()), "p": p}


def holm(ps: Dict[str, float]) -> Dict[str, float]:
    finite = sorted((p, k) for k, p in ps.items() if math.isfinite(p))
    out, running = {k: math.nan for k in ps}, 0.0
    for i, (p, k) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - i) * p))
        out[k] = running
    return out


def summarize(runs: List[Dict[str, Any]], methods: Sequence[str], args: argparse.Namespace) -> Dict[str, Any]:
    archs = sorted({r["arch"] for r in runs}, key=lambda a: ("mlp", "cnn").index(a) if a in ("mlp", "cnn") else 9)
    table: Dict[str, Any] = {}
    for arch in archs:
        rs = [r for r in runs if r["arch"] == arch]
        rows = {}
        for m in methods:
            vals = [per_run(r, m) for r in rs]
            rows[m] = {k: mean_ci([v.get(k, math.nan) for v in vals]) for k in vals[0]}
            t = next((r["timing"] for r in rs if "timing" in r), None)
            if t:
                rows[m]["time_ratio"] = t["ratio_to_jacobian_norm"].get(m)
        by = {}
        for name, row in rs[0]["sets"].items():
            if row["kind"] == "corruption":
                by.setdefault(row["corruption"], {})[str(row["severity"])] = {
                    m: float(np.mean([r["sets"][name]["methods"][m]["aurc"] for r in rs])) for m in methods}
        acc = {name: mean_ci([r["sets"][name].get("accuracy", math.nan) for r in rs]) for name in rs[0]["sets"]
               if rs[0]["sets"][name]["kind"] != "far"}
        table[arch] = {"seeds": [r["seed"] for r in rs], "estimators": rows, "aurc_by_corruption": by,
                       "accuracy": acc, "train": mean_ci([r["train"]["test_accuracy"] for r in rs])}
    return {"table": table, "targets": targets(runs, methods), "protocol": protocol(args)}


def _versus(runs: List[Dict[str, Any]], methods: Sequence[str], key: str, baseline: str, alternative: str,
            better) -> Optional[Dict[str, Any]]:
    """Each Jacobian estimator against ``baseline`` on per-run ``key``, paired over (architecture, seed)."""
    jac = [m for m in JACOBIAN_METHODS if m in methods]
    if baseline not in methods or not jac or key not in per_run(runs[0], baseline):
        return None
    values = {m: [per_run(r, m)[key] for r in runs] for m in (*jac, baseline)}
    tests = {m: paired(values[m], values[baseline], alternative) for m in jac}
    for m, p in holm({m: t["p"] for m, t in tests.items()}).items():
        tests[m]["p_holm"] = p
    best = better(jac, key=lambda m: tests[m]["mean_difference"])
    return {"baseline": baseline, "best_jacobian": best, "vs_baseline": tests,
            "pairs": [[r["arch"], r["seed"]] for r in runs]}


def targets(runs: List[Dict[str, Any]], methods: Sequence[str]) -> Dict[str, Any]:
    """The issue's targets, pooled over architectures and per architecture.

    AURC: a Jacobian estimator with a lower corruption-averaged AURC than max-softmax, one-sided paired
    t-test p < 0.05 (p of the best is before selection; ``p_holm`` adjusts for trying every Jacobian
    estimator). Far OOD: a Jacobian estimator whose mean far-OOD AUROC is ≥ energy's (two-sided p
    reported). Cost: every estimator ≤ 2× ``jacobian_norm``'s time.
    """
    runs = sorted(runs, key=lambda r: (r["arch"], r["seed"]))
    groups = {"pooled": runs, **{a: [r for r in runs if r["arch"] == a] for a in sorted({r["arch"] for r in runs})}}
    out: Dict[str, Any] = {}
    for name, rs in groups.items():
        entry = {}
        c = _versus(rs, methods, "corruption_aurc", BASELINE, "less", min)
        if c:
            b = c["vs_baseline"][c["best_jacobian"]]
            c["met"] = bool(b["mean_difference"] < 0 and math.isfinite(b["p"]) and b["p"] < 0.05)
            entry["corruption_aurc"] = c
        o = _versus(rs, methods, "far_ood_auroc", OOD_BASELINE, "two-sided", max)
        if o:
            o["met"] = bool(o["vs_baseline"][o["best_jacobian"]]["mean_difference"] >= 0)
            entry["far_ood_auroc"] = o
        out[name] = entry
    ratios = {r["arch"]: r["timing"]["ratio_to_jacobian_norm"] for r in runs if "timing" in r}
    if ratios:
        worst = {a: max(v.items(), key=lambda kv: kv[1]) for a, v in ratios.items()}
        out["cost"] = {"limit": 2.0, "worst": {a: {"method": m, "ratio": x} for a, (m, x) in worst.items()},
                       "met": bool(all(x <= 2.0 for _, x in worst.values()))}
    return out


def protocol(args: argparse.Namespace) -> Dict[str, Any]:
    keys = ("dataset", "models", "seeds", "n_train", "n_heldout", "n_test", "n_shift", "n_ood", "epochs_mlp",
            "epochs_cnn", "corruptions", "severities", "timing_n", "timing_repeats", "batch_size")
    return {k: getattr(args, k) for k in keys}


# ---------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    note = None
    if args.dataset == "mnist" and not ((args.data_root / "MNIST" / "raw").exists() or (args.data_root / "mnist.npz").exists()):
        note = f"MNIST not found under {args.data_root}: ran on scikit-learn digits instead"
        args.dataset = "digits"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        raise SystemExit(f"unknown --methods {bad}; choose from {list(METHODS)}")
    started = time.perf_counter()
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in protocol(args).items() if k not in ("models", "seeds")}  # what one model's results depend on
    runs, sets = [], None
    for arch in [a.strip() for a in args.models.split(",") if a.strip()]:
        for seed in range(args.seeds):
            path = args.out / "runs" / f"{arch}-seed{seed}.json"
            if path.exists() and not args.fresh:
                cached = json.loads(path.read_text())
                if cached.get("config") == config and cached.get("methods") == methods:
                    runs.append(cached)
                    continue
            data = load(args, seed)
            if sets is None:
                sets = evaluation_sets(data["x_test"], data["y_test"], args)
            run = run_one(arch, seed, args, sets, data, methods)
            run.update(config=config, methods=methods)
            with atomic_open(path, "w") as f:
                json.dump(run, f)
            runs.append(run)
            print(f"[confidence_shift] {arch} seed {seed}: test acc {run['train']['test_accuracy']:.3f} "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    summary = summarize(runs, methods, args)
    summary["note"] = note
    write_table(summary, args.out)
    has_corr = summary["table"] and next(iter(summary["table"].values()))["aurc_by_corruption"]
    pngs = plot(summary, args.out, methods) if has_corr else []
    summary["files"] = {"summary": str(args.out / "summary.json"), "table": str(args.out / "table.md"),
                        "figures": [str(p) for p in pngs]}
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    summary = finite_or_none(summary)
    with atomic_open(args.out / "summary.json", "w") as f:
        json.dump(summary, f, indent=1, allow_nan=False)
    print(json.dumps(summary, allow_nan=False))
    return summary


if __name__ == "__main__":
    main()
