"""Per-point softmax Jacobian norm: jacal vs a naive per-class autograd loop vs torch.func.

One run, same model, same points, methods side by side. Prints JSON: points/s per method,
jacal's speedup over each baseline, and max relative error (vs the naive loop in float32 and
vs a float64 per-point reference on a subset).

    python benchmarks/bench_jacobian.py                 # CPU, 2,048 points
    python benchmarks/bench_jacobian.py --device cuda   # GPU (adds a TF32 opt-in row)
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, mnist_like, print_json, timeit, timeit_interleaved  # noqa: E402

import jacal  # noqa: E402


def naive_loop(model, x, batch_size):
    """One forward, then one autograd backward per class (through the softmax), per chunk."""
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].clone().requires_grad_(True)
        p = torch.softmax(model(xb), dim=1)
        sq = torch.zeros(len(xb), device=x.device)
        for k in range(p.shape[1]):
            (g,) = torch.autograd.grad(p[:, k].sum(), xb, retain_graph=k < p.shape[1] - 1)
            sq += g.reshape(len(xb), -1).pow(2).sum(1)
        out.append(sq.sqrt())
    return torch.cat(out)


def torch_func(model, x, batch_size):
    """``torch.func.vmap(torch.func.jacrev(f))`` over points, chunked."""
    def f(xi):
        return torch.softmax(model(xi.unsqueeze(0)), dim=1).squeeze(0)

    jac = torch.func.vmap(torch.func.jacrev(f))
    return torch.cat([jac(x[i:i + batch_size]).reshape(len(x[i:i + batch_size]), -1).norm(dim=1)
                      for i in range(0, len(x), batch_size)])


def float64_reference(model, x):
    m = copy.deepcopy(model).double()
    return naive_loop(m, x.double(), 1).double()


def rel_err(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float(((a - b).abs() / b.abs().clamp_min(1e-30)).max())


def bench_model(name, model, x, args, device):
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    n = len(x)
    bs = args.batch_size
    rows = {}
    runs = {
        "naive_loop_full_batch": lambda: naive_loop(model, x, n),
        "naive_loop_chunked": lambda: naive_loop(model, x, bs),
        "torch_func_vmap_jacrev_full_batch": lambda: torch_func(model, x, n),
        "torch_func_vmap_jacrev_chunked": lambda: torch_func(model, x, bs),
        "jacal_auto": lambda: jacal.jacobian_norm(model, x, batch_size=bs),
        "jacal_vjp": lambda: jacal.jacobian_norm(model, x, method="vjp", batch_size=bs),
        "jacal_vjp_batched": lambda: jacal.jacobian_norm(model, x, method="vjp-batched", batch_size=bs),
    }
    timings = timeit_interleaved(runs, device, args.repeats)
    results = {}
    for key, fn in runs.items():
        results[key] = fn()
        rows[key] = {"points_per_s": round(n / timings[key], 1), "seconds": round(timings[key], 4)}
    ref_naive = results["naive_loop_full_batch"]
    sub = min(args.ref_points, n)
    ref64 = float64_reference(model, x[:sub])
    for key in rows:
        rows[key]["max_rel_err_vs_naive"] = rel_err(results[key], ref_naive)
        rows[key][f"max_rel_err_vs_float64_ref_{sub}pts"] = rel_err(results[key][:sub], ref64)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        t = timeit(lambda: jacal.jacobian_norm(model, x, batch_size=bs), device, args.repeats)
        out = jacal.jacobian_norm(model, x, batch_size=bs)
        rows["jacal_auto_tf32_opt_in"] = {"points_per_s": round(n / t, 1), "seconds": round(t, 4),
                                          "max_rel_err_vs_naive": rel_err(out, ref_naive),
                                          f"max_rel_err_vs_float64_ref_{sub}pts": rel_err(out[:sub], ref64)}
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    auto = rows["jacal_auto"]["points_per_s"]
    speedups = {f"jacal_auto_over_{k}": round(auto / v["points_per_s"], 3) for k, v in rows.items()
                if not k.startswith("jacal")}
    best_naive = max(rows["naive_loop_full_batch"]["points_per_s"], rows["naive_loop_chunked"]["points_per_s"])
    best_func = max(rows["torch_func_vmap_jacrev_full_batch"]["points_per_s"],
                    rows["torch_func_vmap_jacrev_chunked"]["points_per_s"])
    speedups["jacal_auto_over_best_naive"] = round(auto / best_naive, 3)
    speedups["jacal_auto_over_best_torch_func"] = round(auto / best_func, 3)
    return {"model": name, "methods": rows, "speedups": speedups}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=2048, help="points")
    ap.add_argument("--batch-size", type=int, default=256, help="chunk size for the chunked methods")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ref-points", type=int, default=64, help="points checked against the float64 reference")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(0)
    x, source = mnist_like(args.n)
    x = x.to(device)
    paper_mlp = jacal.mlp(784, 10, width=512, depth=3, activation="relu", seed=0)
    small_cnn = jacal.cnn((1, 28, 28), 10, channels=(16, 32), hidden=128, seed=0)
    out = {
        "benchmark": "jacobian_norm (softmax output, Frobenius, per point)",
        "device": str(device), "n_points": args.n, "inputs": source, "batch_size": args.batch_size,
        "repeats": args.repeats, "timing": "median wall time of repeats timed round-robin across methods, after a warm-up",
        "machine": machine(),
        "results": [bench_model("mlp_784-512x3-10_relu", paper_mlp, x, args, device),
                    bench_model("small_cnn_16-32-128", small_cnn, x, args, device)],
    }
    print_json(out)


if __name__ == "__main__":
    main()
