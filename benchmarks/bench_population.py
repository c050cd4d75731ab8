"""Population training throughput: jacal's batched trainer vs a sequential loop vs torch.func vmap,
and its achieved GFLOP/s against this machine's measured float32 GEMM rate.

Same configs (P models of one shape, per-model learning rates and data order), same data, same
number of steps, in one run. Prints JSON with model-steps/s of each and jacal's speedups.

FLOPs are counted for the Linear layers only, the usual way: a Linear ``in → out`` costs
``2·in·out`` per sample forward and ``×3`` for forward + backward (input and weight gradients), so
one training step of P models on a batch of b is ``6 · P · b · Σ_layers in·out`` FLOPs (evaluation
after training, ``2 · P · (n_train + n_test) · Σ in·out``, is left out of the rate). Elementwise
work (activations, loss, the optimizer update) is not counted, and autograd skips the first layer's
input gradient (the data needs none): ``executed_fraction_of_counted`` says how much of the counted
GEMM work is really executed. The trainer is timed from the end of its first step to the end of
its last (device synchronized; its setup and evaluation excluded) through its ``progress`` hook.

The GEMM rate is measured in the same run on the same device, float32 (on CUDA with TF32 off):
``torch.mm`` of two ``S × S`` matrices (``--gemm-size``; default 2048 on CPU, 8192 on CUDA), and
at the population's own shapes the ``torch.bmm`` calls of one training step (per layer
``(P,b,in)@(P,in,out)``, ``(P,b,out)@(P,out,in)``, ``(P,in,b)@(P,b,out)``), timed as a sequence.
``fraction_of_mm`` and ``fraction_of_bmm_at_shapes`` are the trainer's rate over each.

    python benchmarks/bench_population.py                      # CPU: P=32 MLPs on digits-sized data
    python benchmarks/bench_population.py --device cuda --models 512 --input-dim 784 --n 10000
    python benchmarks/bench_population.py --shapes smoke       # GFLOP/s at the smoke preset's shapes
"""
from __future__ import annotations

import argparse
import copy
import itertools
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, print_json, sync, timeit  # noqa: E402

import jacal  # noqa: E402
from jacal.data import Splits  # noqa: E402
from jacal.population import ModelConfig, _PopulationOptimizer, train_population  # noqa: E402
from jacal.sensitivity.jacobian import matmul_precision  # noqa: E402

FLOP_FORMULA = ("6 * models * batch * sum(in*out over Linear layers) per step "
                "(2*in*out per sample forward, x3 for forward+backward; Linear layers only)")


def layer_shapes(input_dim, width, depth, n_classes):
    """``[(in, out), ...]`` of an MLP with ``depth`` hidden layers of ``width``."""
    dims = [input_dim] + [width] * depth + [n_classes]
    return list(zip(dims[:-1], dims[1:]))


def step_flops(shapes, models, batch):
    """Counted FLOPs of one training step (see the module docstring)."""
    return 6 * models * batch * sum(i * o for i, o in shapes)


def executed_fraction(shapes):
    """Share of the counted GEMM FLOPs that autograd executes (no input gradient for the data)."""
    total = sum(i * o for i, o in shapes)
    return (6 * total - 2 * shapes[0][0] * shapes[0][1]) / (6 * total)


def mm_rate(device, size, repeats=5):
    """float32 FLOP/s of ``torch.mm`` on two ``size × size`` matrices (TF32 off on CUDA)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(size, size, generator=g).to(device) for _ in range(2))
    with matmul_precision("float32", device):
        t = timeit(lambda: torch.mm(a, b), device, repeats)
    return 2 * size ** 3 / t


def bmm_rate_at_shapes(device, shapes, models, batch, repeats=5):
    """float32 FLOP/s of the batched GEMMs of one training step at these shapes, timed as a sequence."""
    g = torch.Generator().manual_seed(0)
    ops = []
    for i, o in shapes:
        x, w, dz = (torch.rand(*s, generator=g).to(device) for s in ((models, batch, i), (models, i, o), (models, batch, o)))
        ops += [(x, w), (dz, w.transpose(1, 2)), (x.transpose(1, 2), dz)]  # forward, input grad, weight grad

    def run():
        for a, b in ops:
            torch.bmm(a, b)

    reps = max(3, repeats)
    with matmul_precision("float32", device):
        t = timeit(lambda: [run() for _ in range(reps)], device, 3) / reps
    return step_flops(shapes, models, batch) / t


class StepClock:
    """``progress`` hook timing steps 2..S of a training run (device synchronized at both ends)."""

    def __init__(self, device):
        self.device, self.t1, self.tn, self.steps = device, None, None, 0

    def __call__(self, step, total):
        if step == 1 or step == total:
            sync(self.device)
            now = time.perf_counter()
            if step == 1:
                self.t1 = now
            if step == total:
                self.tn, self.steps = now, total

    @property
    def seconds(self):
        return None if self.t1 is None or self.steps < 2 else self.tn - self.t1


def time_trainer(configs, data, device):
    """``(loop_seconds for steps 2..S, end_to_end_seconds)`` of jacal's population trainer."""
    small = [ModelConfig(**{**c.to_dict(), "steps": 3}) for c in configs[:2]]
    train_population(small, data, device=device)  # warm-up
    clock = StepClock(device)
    sync(device)
    t0 = time.perf_counter()
    train_population(configs, data, device=device, progress=clock)
    sync(device)
    return clock.seconds, time.perf_counter() - t0


def flops_report(shapes, models, batch, steps, loop_seconds, mm, bmm):
    """GFLOP/s of the trainer over its timed steps 2..S, and its fraction of each GEMM rate."""
    rate = step_flops(shapes, models, batch) * (steps - 1) / loop_seconds
    return {"gflop_per_s": round(rate / 1e9, 2), "gemm_mm_gflop_per_s": round(mm / 1e9, 2),
            "gemm_bmm_at_shapes_gflop_per_s": round(bmm / 1e9, 2), "fraction_of_mm": round(rate / mm, 3),
            "fraction_of_bmm_at_shapes": round(rate / bmm, 3),
            "executed_fraction_of_counted": round(executed_fraction(shapes), 3)}


def bound_note(trainer, bmm, mm, optimizer):
    """What the measured rates say bounds the trainer (or that it meets the 50% target)."""
    note = (f"jacal's trainer: {trainer / 1e9:.1f} GFLOP/s = {trainer / mm:.0%} of torch.mm's {mm / 1e9:.1f} GFLOP/s "
            f"and {trainer / bmm:.0%} of the batched GEMMs alone at the same shapes ({bmm / 1e9:.1f} GFLOP/s).")
    if trainer >= 0.5 * mm:
        return note + " That is at least 50% of the measured GEMM rate."
    if bmm < 0.9 * mm:
        note += (f" At these shapes the GEMMs by themselves reach only {bmm / mm:.0%} of the large-matrix rate "
                 "(small matrices: per-call overhead, low arithmetic intensity), which bounds any trainer built on them.")
    else:
        note += f" The GEMMs at these shapes run at {bmm / mm:.0%} of the large-matrix rate: matrix size is not the bound."
    if trainer < bmm:
        note += (f" The trainer spends {1 - trainer / bmm:.0%} of its time outside such GEMMs, on work the count "
                 f"leaves out: activations, loss, the {optimizer} update of every parameter, per-step batch indexing "
                 "and Python dispatch.")
    return note


def make_data(n, input_dim, n_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, input_dim, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return Splits("synthetic", x, y, x[:256], y[:256], n_classes)


def torch_optimizer(c, params):
    """The ``torch.optim`` optimizer that jacal's vectorized one reproduces for ``c.optimizer``."""
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr)
    if c.optimizer == "momentum":
        return torch.optim.SGD(params, lr=c.lr, momentum=0.9)
    if c.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=c.lr, alpha=0.99, eps=1e-8)
    return torch.optim.Adam(params, lr=c.lr)


def run_sequential(configs, data, device):
    """One model at a time: nn.Module + torch.optim, the usual training loop."""
    n = len(data.x_train)
    x, y = data.x_train.to(device), data.y_train.to(device)
    for c in configs:
        model = jacal.mlp(data.input_dim, data.n_classes, width=c.width, depth=c.depth, seed=c.seed).to(device)
        opt = torch_optimizer(c, model.parameters())
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
    opt = _PopulationOptimizer(configs[0].optimizer, [params[k] for k in keys], torch.tensor([c.lr for c in configs]))
    gens = [torch.Generator().manual_seed(c.seed) for c in configs]
    bs = configs[0].batch_size
    per_epoch = math.ceil(n / bs)
    for step in range(configs[0].steps):
        if step % per_epoch == 0:
            orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        idx = orders[:, (step % per_epoch) * bs:(step % per_epoch + 1) * bs]
        g = grad_fn(params, buffers, x[idx], y[idx])
        opt.step([g[k] for k in keys])


def smoke_shapes(args, device, mm):
    """Time the trainer and the batched GEMMs at every (width, depth, batch size) of the smoke preset."""
    from jacal.replication.config import PRESETS

    pre = PRESETS["smoke"]
    p, n, d, k = pre.models_per_group, pre.n_train or 500, 64, 10  # digits: 8×8 inputs, 10 classes
    data = make_data(n, d, k)
    rows, tot_flops, tot_loop, tot_bmm = [], 0.0, 0.0, 0.0
    for width, depth, bs in itertools.product(pre.widths, pre.depths, pre.batch_sizes):
        configs = [ModelConfig(width=width, depth=depth, optimizer=args.optimizer, lr=1e-3, batch_size=bs,
                               steps=args.steps, seed=i) for i in range(p)]
        loop, total = time_trainer(configs, data, device)
        shapes = layer_shapes(d, width, depth, k)
        bmm = bmm_rate_at_shapes(device, shapes, p, bs, args.repeats)
        flops = step_flops(shapes, p, bs) * (args.steps - 1)
        tot_flops, tot_loop, tot_bmm = tot_flops + flops, tot_loop + loop, tot_bmm + flops / bmm
        rows.append({"width": width, "depth": depth, "batch_size": bs, "models": p, "steps": args.steps,
                     "loop_seconds": round(loop, 4), "end_to_end_seconds": round(total, 3),
                     **flops_report(shapes, p, bs, args.steps, loop, mm, bmm)})
    rate, bmm_rate = tot_flops / tot_loop, tot_flops / tot_bmm
    return {"preset": "smoke", "preset_shapes": {"widths": pre.widths, "depths": pre.depths,
                                                 "batch_sizes": pre.batch_sizes, "models_per_group": p,
                                                 "n_train": n, "input_dim": d, "n_classes": k},
            "aggregate": {"gflop_per_s": round(rate / 1e9, 2), "gemm_mm_gflop_per_s": round(mm / 1e9, 2),
                          "gemm_bmm_at_shapes_gflop_per_s": round(bmm_rate / 1e9, 2),
                          "fraction_of_mm": round(rate / mm, 3), "fraction_of_bmm_at_shapes": round(rate / bmm_rate, 3),
                          "how": "total counted FLOPs of all shapes over their total time (trainer) / total GEMM time"},
            "note": bound_note(rate, bmm_rate, mm, args.optimizer), "shapes": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", choices=["custom", "smoke"], default="custom",
                    help="custom: one population of the shape given below, against the baselines; smoke: jacal's "
                         "trainer alone at every (width, depth, batch size) of the smoke preset, P = its models per group")
    ap.add_argument("--models", type=int, default=32)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--n", type=int, default=1347, help="training points")
    ap.add_argument("--input-dim", type=int, default=64)
    ap.add_argument("--optimizer", default="adam", choices=["sgd", "momentum", "adam", "rmsprop"])
    ap.add_argument("--sequential-models", type=int, default=None,
                    help="time the sequential loop on this many models (default: all) and report per-model-step rate")
    ap.add_argument("--gemm-size", type=int, default=None, help="torch.mm size (default 2048 on CPU, 8192 on CUDA)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of each GEMM timing (median)")
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps must be at least 2 (the trainer is timed over steps 2..S)")
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    size = args.gemm_size or (8192 if device.type == "cuda" else 2048)
    mm = mm_rate(device, size, args.repeats)
    gemm = {"mm_size": size, "mm_gflop_per_s": round(mm / 1e9, 2), "dtype": "float32 (TF32 off)"}
    if args.shapes == "smoke":
        out = {"benchmark": "population trainer GFLOP/s at the smoke preset's shapes vs this machine's float32 GEMM rate",
               "device": str(device), "config": vars(args), "machine": machine(), "flop_formula": FLOP_FORMULA,
               "gemm": gemm, **smoke_shapes(args, device, mm)}
        print_json(out)
        return out
    data = make_data(args.n, args.input_dim, 10)
    g = torch.Generator().manual_seed(0)
    lrs = torch.exp(torch.empty(args.models).uniform_(math.log(1e-4), math.log(1e-2), generator=g)).tolist()
    configs = [ModelConfig(width=args.width, depth=args.depth, optimizer=args.optimizer, lr=lr, batch_size=args.batch_size,
                           steps=args.steps, seed=i) for i, lr in enumerate(lrs)]
    seq_configs = configs[: args.sequential_models or len(configs)]
    shapes = layer_shapes(args.input_dim, args.width, args.depth, 10)
    bs = min(args.batch_size, args.n)
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
                      "model_steps_per_s": round(len(cfgs) * args.steps / dt, 1),
                      "gflop_per_s_end_to_end": round(step_flops(shapes, len(cfgs), bs) * args.steps / dt / 1e9, 2)}
    loop, total = time_trainer(configs, data, device)
    bmm = bmm_rate_at_shapes(device, shapes, len(configs), bs, args.repeats)
    trainer = {"loop_seconds": round(loop, 4), "end_to_end_seconds": round(total, 3),
               **flops_report(shapes, len(configs), bs, args.steps, loop, mm, bmm)}
    pop = rows["jacal_population"]["model_steps_per_s"]
    out = {
        "benchmark": "population training throughput (per-model lr and data order)",
        "device": str(device), "config": vars(args), "machine": machine(), "results": rows,
        "speedups": {"population_over_sequential": round(pop / rows["sequential_loop"]["model_steps_per_s"], 2),
                     "population_over_torch_func": round(pop / rows["torch_func_vmap"]["model_steps_per_s"], 2)},
        "flop_formula": FLOP_FORMULA, "gemm": gemm, "trainer_flops": trainer,
        "note": bound_note(step_flops(shapes, len(configs), bs) * (args.steps - 1) / loop, bmm, mm, args.optimizer),
    }
    print_json(out)
    return out


if __name__ == "__main__":
    main()
