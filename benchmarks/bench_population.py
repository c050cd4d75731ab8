"""Population training throughput: jacal's batched trainer vs a sequential loop vs torch.func vmap.

Same configs (P models of one shape, per-model learning rates and data order), same data, same
number of steps, in one run. Prints JSON with model-steps/s of each and jacal's speedups.

    python benchmarks/bench_population.py                      # CPU: P=32 MLPs on digits-sized data
    python benchmarks/bench_population.py --device cuda --models 512 --input-dim 784 --n 10000
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, print_json, sync  # noqa: E402

import jacal  # noqa: E402
from jacal.data import Splits  # noqa: E402
from jacal.population import ModelConfig, _PopulationOptimizer, train_population  # noqa: E402


def make_data(n, input_dim, n_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, input_dim, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return Splits("synthetic", x, y, x[:256], y[:256], n_classes)


def run_sequential(configs, data, device):
    """One model at a time: nn.Module + torch.optim, the usual training loop."""
    n = len(data.x_train)
    x, y = data.x_train.to(device), data.y_train.to(device)
    for c in configs:
        model = jacal.mlp(data.input_dim, data.n_classes, width=c.width, depth=c.depth, seed=c.seed).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=c.lr)
        gen = torch.Generator().manual_seed(c.seed)
        per_epoch = math.ceil(n / c.batch_size)
        for step in range(c.steps):
            if step % per_epoch == 0:
                order = torch.randperm(n, generator=gen).to(device)
            idx = order[(step % per_epoch) * c.batch_size:(step % per_epoch + 1) * c.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def run_torch_func(configs, data, device):
    """torch.func model ensembling: stack_module_state + vmap(grad(functional_call))."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    n = len(data.x_train)
    x, y = data.x_train.to(device), data.y_train.to(device)
    models = [jacal.mlp(data.input_dim, data.n_classes, width=c.width, depth=c.depth, seed=c.seed).to(device)
              for c in configs]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def loss_fn(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    grad_fn = vmap(grad(loss_fn), in_dims=(0, 0, 0, 0))
    keys = list(params)
    opt = _PopulationOptimizer("adam", [params[k] for k in keys], torch.tensor([c.lr for c in configs]))
    gens = [torch.Generator().manual_seed(c.seed) for c in configs]
    bs = configs[0].batch_size
    per_epoch = math.ceil(n / bs)
    for step in range(configs[0].steps):
        if step % per_epoch == 0:
            orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        idx = orders[:, (step % per_epoch) * bs:(step % per_epoch + 1) * bs]
        g = grad_fn(params, buffers, x[idx], y[idx])
        opt.step([g[k] for k in keys])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", type=int, default=32)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--n", type=int, default=1347, help="training points")
    ap.add_argument("--input-dim", type=int, default=64)
    ap.add_argument("--sequential-models", type=int, default=None,
                    help="time the sequential loop on this many models (default: all) and report per-model-step rate")
    args = ap.parse_args(argv)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    data = make_data(args.n, args.input_dim, 10)
    g = torch.Generator().manual_seed(0)
    lrs = torch.exp(torch.empty(args.models).uniform_(math.log(1e-4), math.log(1e-2), generator=g)).tolist()
    configs = [ModelConfig(width=args.width, depth=args.depth, optimizer="adam", lr=lr, batch_size=args.batch_size,
                           steps=args.steps, seed=i) for i, lr in enumerate(lrs)]
    seq_configs = configs[: args.sequential_models or len(configs)]
    rows = {}
    for name, fn, cfgs in [("jacal_population", lambda c: train_population(c, data, device=device), configs),
                           ("torch_func_vmap", lambda c: run_torch_func(c, data, device), configs),
                           ("sequential_loop", lambda c: run_sequential(c, data, device), seq_configs)]:
        small = [ModelConfig(**{**c.to_dict(), "steps": 5}) for c in cfgs[:2]]
        fn(small)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        fn(cfgs)
        sync(device)
        dt = time.perf_counter() - t0
        rows[name] = {"models": len(cfgs), "steps": args.steps, "seconds": round(dt, 3),
                      "model_steps_per_s": round(len(cfgs) * args.steps / dt, 1)}
    pop = rows["jacal_population"]["model_steps_per_s"]
    print_json({
        "benchmark": "population training throughput (Adam, per-model lr and data order)",
        "device": str(device), "config": vars(args), "machine": machine(), "results": rows,
        "speedups": {"population_over_sequential": round(pop / rows["sequential_loop"]["model_steps_per_s"], 2),
                     "population_over_torch_func": round(pop / rows["torch_func_vmap"]["model_steps_per_s"], 2)},
    })


if __name__ == "__main__":
    main()
