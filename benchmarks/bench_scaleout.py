"""Local vs Ray backend on the same small replicate sweep, plus a paper-scale estimate.

Prints JSON:

* ``sweep``: wall time of ``run_replication`` with the local backend and with a local Ray instance
  (2 CPUs) on the same configs (``--groups`` × ``--models-per-group``, ``--steps`` per model, digits),
  Ray's start-up time measured apart, the mean group time, and Ray's overhead as a fraction of the
  local time.
* ``paper_scale``: the ``paper`` preset's total work (models, model-steps, training FLOPs, counted from
  its actual plan: widths, depths, batch sizes, input sizes of MNIST/Fashion-MNIST/CIFAR, pair
  variants assuming every base fits) and the time it takes at a throughput: this machine's measured
  population-trainer FLOP/s (``--measure-steps``), or a GPU's, given as ``--gpu-flops`` (measure it with
  ``benchmarks/bench_population.py --device cuda``), divided over ``--gpus`` workers.

    python benchmarks/bench_scaleout.py
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, print_json  # noqa: E402

from jacal.replication.config import PRESETS, plan_models, plan_pairs  # noqa: E402

INPUT = {"mnist": (784, 10, 60000), "fashion-mnist": (784, 10, 60000), "cifar10": (3072, 10, 50000),
         "cifar100": (3072, 100, 50000)}


def flops_per_step(width: int, depth: int, d_in: int, k: int, batch: int) -> float:
    """Forward + backward ≈ 3 × forward multiply-adds × 2 FLOPs, per training step of one model."""
    macs = d_in * width + (depth - 1) * width * width + width * k
    return 6.0 * batch * macs


def paper_work() -> dict:
    p = PRESETS["paper"]
    models, steps, flops = 0, 0, 0.0
    for ds in p.datasets:
        d_in, k, n = INPUT[ds]
        base = plan_models(p, ds, 0)
        variants, _ = plan_pairs(p, ds, base, {b.model_id for b in base})
        for pm in base + variants:
            c = pm.config
            b = n if c.batch_size == 0 else c.batch_size
            models += 1
            steps += c.steps
            flops += c.steps * flops_per_step(c.width, c.depth, d_in, k, b)
    return {"models": models, "model_steps": steps, "training_flops": flops}


def run_sweep(backend: str, out: Path, args) -> float:
    from jacal.replication import run_replication

    t0 = time.perf_counter()
    run_replication(out, preset="smoke", seed=0, device="cpu", backend=backend, write_report=False,
                    overrides={"n_groups": args.groups, "models_per_group": args.models_per_group,
                               "pairs_per_factor": 1, "steps": args.steps, "full_batch_steps": args.steps})
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--models-per-group", type=int, default=6)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--gpu-flops", type=float, default=None, help="effective training FLOP/s of one GPU (measured)")
    ap.add_argument("--measure-steps", type=int, default=300)
    args = ap.parse_args(argv)
    import ray

    from jacal.backends import RayBackend
    from jacal.replication.store import ResultStore

    tmp = Path(tempfile.mkdtemp())
    try:
        local_s = run_sweep("local", tmp / "local", args)
        with ResultStore(tmp / "local" / "results.sqlite") as st:
            n_models = len(st.models())
            n_groups = len({m["group_key"] for m in st.models()})
        t0 = time.perf_counter()
        backend = RayBackend(num_cpus=2)
        ray_start = time.perf_counter() - t0
        ray_s = run_sweep("ray", tmp / "ray", args)
        backend.close()
        # this machine's population-trainer throughput, in FLOP/s, on a paper-like group
        from jacal.data import Splits
        from jacal.population import ModelConfig, train_population
        import torch

        g = torch.Generator().manual_seed(0)
        data = Splits("synthetic", torch.rand(6000, 784, generator=g), torch.randint(0, 10, (6000,), generator=g),
                      torch.rand(256, 784, generator=g), torch.randint(0, 10, (256,), generator=g), 10)
        cfgs = [ModelConfig(width=256, depth=3, batch_size=64, steps=args.measure_steps, seed=i) for i in range(16)]
        t0 = time.perf_counter()
        train_population(cfgs, data)
        cpu_flops = len(cfgs) * args.measure_steps * flops_per_step(256, 3, 784, 10, 64) / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if ray.is_initialized():
            ray.shutdown()
    work = paper_work()
    est = {"this_machine_population_trainer_flops": cpu_flops,
           "this_machine_days": work["training_flops"] / cpu_flops / 86400}
    if args.gpu_flops:
        est[f"hours_on_{args.gpus}_gpus"] = work["training_flops"] / (args.gpu_flops * args.gpus) / 3600
    else:
        est["gpu_estimate"] = ("not measured here (no GPU): run benchmarks/bench_population.py --device cuda, convert its "
                               "model-steps/s to FLOP/s with flops_per_step(), and pass --gpu-flops")
    print_json({
        "benchmark": "replicate sweep: local vs Ray backend (local Ray, 2 CPUs), and the paper preset's scale",
        "machine": machine(),
        "sweep": {"models": n_models, "groups": n_groups, "steps_per_model": args.steps,
                  "local_seconds": round(local_s, 2), "ray_seconds_excluding_start": round(ray_s, 2),
                  "ray_start_seconds": round(ray_start, 2), "mean_local_group_seconds": round(local_s / n_groups, 2),
                  "ray_overhead_fraction": round((ray_s - local_s) / local_s, 3)},
        "paper_scale": {**work, **est},
    })


if __name__ == "__main__":
    main()
