"""Does the approximate selection keep what the exact one selects? Paired AULC, exact vs approximate.

Runs one protocol of ``benchmarks/al_experiments.py`` twice for the diversity strategies (the ones
whose selection :mod:`jacal.acquisition.selection` makes), once with every selection exact and once
with every selection approximate (``jacal.acquisition.selection.selection``: AFK-MC² seeding for the
k-means++ strategies, the sketched k-center greedy for coreset), everything else identical (the same
seeds, splits, first labeled sets and training). The protocols' pools are small enough that
``"auto"`` would run them exactly, so the approximate arm forces the approximate path: this measures
what it would change where it runs. Prints JSON: per strategy, each arm's AULC and the paired
difference approximate − exact over seeds (mean, 95% CI half-width, paired t-test p), and writes
``OUT/PROTOCOL/{exact,approximate}/`` (each a resumable ``jacal loop`` folder). ``--arms
passes,rejection`` compares instead the exact k-means++ seedings by one pass per pick with the same
seedings by rejection sampling (the default exact path: the same law, other random draws), a check
that the faster exact path keeps the learning curves it had.

    python benchmarks/selection_ab.py digits
    python benchmarks/selection_ab.py digits --arms passes,rejection --strategies badge,jacobian,jacobian-kmeans
    python benchmarks/selection_ab.py mnist-batch100 --data-root ../shared/data --seeds 3
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from al_experiments import PROTOCOLS  # noqa: E402

from jacal.acquisition.selection import selection  # noqa: E402
from jacal.loop import run_loop  # noqa: E402
from jacal.loop.summary import aulc, paired_seeds  # noqa: E402

DIVERSITY = ("badge", "coreset", "jacobian", "jacobian-kmeans")

#: the arms a comparison may name: each a context under which a loop runs
ARMS = {"exact": lambda: selection("exact"), "approximate": lambda: selection("approximate"),
        "rejection": lambda: selection("exact"),
        # the exact k-means++ seedings by one pass over the pool per pick: the same law, other random draws
        "passes": lambda: selection("exact", d2_sampler="pass")}


def areas(folder: Path) -> dict:
    """``{strategy: {seed: AULC}}`` from a loop folder's curves.csv."""
    by: dict = {}
    with open(folder / "curves.csv", newline="") as f:
        for r in csv.DictReader(f):
            by.setdefault(r["strategy"], {}).setdefault(int(r["seed"]), []).append(
                (int(r["round"]), float(r["n_labeled"]), float(r["test_accuracy"])))
    out: dict = {}
    for s, seeds in by.items():
        out[s] = {}
        for seed, rs in seeds.items():
            rs.sort()
            out[s][seed] = aulc(np.array([r[1] for r in rs]), np.array([r[2] for r in rs]))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("protocol", choices=sorted(PROTOCOLS))
    ap.add_argument("--out", default="runs/selection_ab")
    ap.add_argument("--strategies", default=",".join(DIVERSITY))
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arms", default="exact,approximate",
                    help="two of exact, approximate, rejection (exact k-means++ by rejection, the default exact "
                         "path) and passes (exact k-means++ by one pass per pick); the difference is second − first")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(PROTOCOLS[args.protocol], strategies=tuple(args.strategies.split(",")))
    cfg = dataclasses.replace(cfg, **{k: v for k, v in (("seeds", args.seeds), ("rounds", args.rounds)) if v is not None})
    t0 = time.perf_counter()
    arms = args.arms.split(",")
    if len(arms) != 2 or len(set(arms)) != 2 or not set(arms) <= set(ARMS):
        ap.error(f"--arms takes two different names of {', '.join(ARMS)}")
    per_arm = {}
    for arm in arms:
        folder = Path(args.out) / args.protocol / arm
        with ARMS[arm]():
            run_loop(folder, cfg, device=args.device, data_root=args.data_root, resume=True)
        per_arm[arm] = areas(folder)
        print(f"[{time.perf_counter() - t0:7.0f}s] {arm} done", file=sys.stderr, flush=True)
    results = {}
    first, second = arms
    for s in cfg.strategies:
        ex, ap_ = per_arm[first][s], per_arm[second][s]
        d = paired_seeds(ap_, ex)
        results[s] = {f"aulc_{first}": round(float(np.mean(list(ex.values()))), 4),
                      f"aulc_{second}": round(float(np.mean(list(ap_.values()))), 4),
                      f"{second}_minus_{first}": {"mean": d["mean_difference"], "ci95": d["ci95_half_width"],
                                                  "p_ttest": d["p_ttest"], "n_seeds": d["n_seeds"],
                                                  "verdict": d["verdict"]}}
    out = {"benchmark": f"paired AULC, {second} vs {first} diversity selection", "protocol": args.protocol,
           "config": dataclasses.asdict(cfg), "wall_s": round(time.perf_counter() - t0, 1), "results": results}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
