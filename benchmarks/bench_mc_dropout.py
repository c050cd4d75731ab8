"""bald's MC-dropout samples: batched through the model (one pass per chunk) vs one pass per sample.

The feature pass for ``need={"bald"}`` timed round-robin (median of ``--rounds``, after a warm-up of
each) with the samples batched (``jacal.features.MC_BATCH_ROWS`` as shipped) and one forward pass
per sample (``MC_BATCH_ROWS = 1``, the code before), next to a plain forward pass over the same
items (``need=set()``), so each figure is also a number of forward passes. Prints JSON.

    python benchmarks/bench_mc_dropout.py --items 2048 --threads 1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, mnist_like  # noqa: E402

import jacal  # noqa: E402
import jacal.features as F  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2048)
    ap.add_argument("--mc-samples", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, source = mnist_like(args.items, split="train")
    model = jacal.mlp(784, 10, width=512, depth=3, dropout=0.1, seed=0).eval()
    shipped = F.MC_BATCH_ROWS

    def timed(need, rows):
        F.MC_BATCH_ROWS = rows
        t0 = time.perf_counter()
        F.extract_features(model, x, need=need, batch_size=args.batch_size, mc_samples=args.mc_samples, seed=0)
        return time.perf_counter() - t0

    runs = {"batched": lambda: timed({"bald"}, shipped), "per_sample": lambda: timed({"bald"}, 1),
            "forward_only": lambda: timed(set(), shipped)}
    times = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    for _ in range(args.rounds):
        for k, fn in runs.items():
            times[k].append(round(fn(), 3))
    F.MC_BATCH_ROWS = shipped
    med = {k: float(np.median(v)) for k, v in times.items()}
    out = {"benchmark": "bald feature pass: MC samples batched vs one pass per sample", "pool": source,
           "items": args.items, "mc_samples": args.mc_samples, "batch_size": args.batch_size, "median_s": med,
           "rounds": times, "batched_vs_per_sample": round(med["batched"] / med["per_sample"], 3),
           "batched_in_forward_passes": round(med["batched"] / med["forward_only"], 1),
           "per_sample_in_forward_passes": round(med["per_sample"] / med["forward_only"], 1), "machine": machine()}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
