"""Acquisition at scale: score a 60,000-item MNIST-sized pool and select k=1,000, every strategy.

Each strategy runs in its own subprocess so its peak memory (ru_maxrss) is its own. Prints JSON:
wall time (features + selection), peak RSS, and the RSS of a baseline process that only holds the
pool and the model, so ``extra_mb`` is what the strategy itself needs.

Model: the paper-sized MLP 784→512→512→512→10 (ReLU), with dropout 0.1 after each hidden layer so
that ``bald`` (MC dropout, 20 samples) has something to sample; in eval mode dropout is the
identity, so the other strategies see the plain MLP. Weights are a seeded initialization (speed
does not depend on training). Pool: real MNIST training images when ../shared/data has them.

    python benchmarks/bench_acquire.py                  # all strategies, CPU
    python benchmarks/bench_acquire.py --strategies jacobian,badge --pool-size 30000

With badge among the strategies, each result also carries ``time_vs_badge``.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, mnist_like, print_json  # noqa: E402

import jacal  # noqa: E402


def child(args) -> None:
    pool, source = mnist_like(args.pool_size, split="train")
    model = jacal.mlp(784, 10, width=512, depth=3, dropout=0.1, seed=0).eval()
    t0 = time.perf_counter()
    if args.single != "baseline":
        res = jacal.acquire(model, pool, args.k, strategy=args.single, batch_size=args.batch_size, seed=0,
                            device=args.device)
        assert len(set(res.indices)) == args.k
    wall = time.perf_counter() - t0
    print(json.dumps({"strategy": args.single, "seconds": round(wall, 2), "pool": source,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool-size", type=int, default=60000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--strategies", default=",".join(sorted(jacal.STRATEGIES)))
    ap.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.single:
        return child(args)
    rows = {}
    for name in ["baseline"] + args.strategies.split(","):
        cmd = [sys.executable, __file__, "--single", name, "--pool-size", str(args.pool_size), "--k", str(args.k),
               "--batch-size", str(args.batch_size), "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    base = rows.pop("baseline")
    for r in rows.values():
        r["extra_mb"] = round(r["peak_rss_mb"] - base["peak_rss_mb"], 1)
        if "badge" in rows:  # the yardstick: a Jacobian strategy may take at most 2× badge's time
            r["time_vs_badge"] = round(r["seconds"] / rows["badge"]["seconds"], 2)
    print_json({"benchmark": "acquire k from a pool (features + selection), one subprocess per strategy",
                "pool_size": args.pool_size, "k": args.k, "batch_size": args.batch_size, "device": args.device,
                "pool": base["pool"], "baseline_rss_mb": base["peak_rss_mb"], "machine": machine(), "results": rows})


if __name__ == "__main__":
    main()
