"""Per-point softmax Jacobian norm: jacal vs a naive per-class autograd loop vs torch.func.

One run, same model, same points, methods side by side. Prints JSON: points/s per method,
jacal's speedup over each baseline, and max relative error (vs the naive loop in float32 and
vs a float64 reference on a subset).

Every method runs in exact float32 (on CUDA with TF32 off for matmuls and convolutions, which
PyTorch otherwise leaves on for cuDNN convolutions), except jacal's opt-in rows
``jacal_auto_<precision>`` (``jacobian_norm(..., precision=...)``: TF32 on CUDA, bf16 for the
closed-form MLP engine), which report their speedup over the best torch.func row and their
error against the float64 reference, checked against the target "≥ 3× torch.func at relative
error ≤ 1e-3". On CPU, ``tf32`` is a no-op and its row is left out.

    python benchmarks/bench_jacobian.py                 # CPU, 2,048 points
    python benchmarks/bench_jacobian.py --device cuda   # GPU (adds the TF32 opt-in row)
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, mnist_like, print_json, timeit_interleaved  # noqa: E402

import jacal  # noqa: E402
from jacal.models._utils import parse_mlp  # noqa: E402
from jacal.sensitivity.jacobian import matmul_precision  # noqa: E402

TARGET_SPEEDUP, TARGET_REL_ERR = 3.0, 1e-3


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


def float64_reference(model, x, batch_size):
    """The naive loop on a float64 copy of the model (points do not interact in eval mode)."""
    m = copy.deepcopy(model).double()
    return naive_loop(m, x.double(), batch_size).double()


def rel_err(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float(((a - b).abs() / b.abs().clamp_min(1e-30)).max())


def opt_in_precisions(model, requested, device):
    """``({precision: kwargs}, {precision: why skipped})`` for the opt-in rows of this model."""
    run, skipped = {}, {}
    is_mlp = parse_mlp(model) is not None
    for prec in requested:
        if prec == "tf32" and device.type != "cuda":
            skipped[prec] = "a no-op on CPU"
        elif prec == "bf16" and not is_mlp:
            skipped[prec] = "bf16 is for the closed-form MLP engine only (jacobian_norm refuses it here)"
        else:
            run[prec] = {"precision": prec}
    return run, skipped


def bench_model(name, model, x, args, device):
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    n = len(x)
    bs = args.batch_size
    rows = {}
    precisions, skipped = opt_in_precisions(model, [p for p in args.precisions.split(",") if p], device)
    runs = {
        "naive_loop_full_batch": lambda: naive_loop(model, x, n),
        "naive_loop_chunked": lambda: naive_loop(model, x, bs),
        "torch_func_vmap_jacrev_full_batch": lambda: torch_func(model, x, n),
        "torch_func_vmap_jacrev_chunked": lambda: torch_func(model, x, bs),
        "jacal_auto": lambda: jacal.jacobian_norm(model, x, batch_size=bs),
        "jacal_vjp": lambda: jacal.jacobian_norm(model, x, method="vjp", batch_size=bs),
        "jacal_vjp_batched": lambda: jacal.jacobian_norm(model, x, method="vjp-batched", batch_size=bs),
    }
    for prec, kw in precisions.items():
        runs[f"jacal_auto_{prec}"] = (lambda kw=kw: jacal.jacobian_norm(model, x, batch_size=bs, **kw))
    with matmul_precision("float32", device):  # the baselines in exact float32 too (TF32 off on CUDA)
        timings = timeit_interleaved(runs, device, args.repeats)
        results = {key: fn() for key, fn in runs.items()}
        sub = min(args.ref_points, n)
        ref64 = float64_reference(model, x[:sub], bs)
    for key in runs:
        rows[key] = {"points_per_s": round(n / timings[key], 1), "seconds": round(timings[key], 4)}
    ref_naive = results["naive_loop_full_batch"]
    for key in rows:
        rows[key]["max_rel_err_vs_naive"] = rel_err(results[key], ref_naive)
        rows[key][f"max_rel_err_vs_float64_ref_{sub}pts"] = rel_err(results[key][:sub], ref64)
    auto = rows["jacal_auto"]["points_per_s"]
    speedups = {f"jacal_auto_over_{k}": round(auto / v["points_per_s"], 3) for k, v in rows.items()
                if not k.startswith("jacal")}
    best_naive = max(rows["naive_loop_full_batch"]["points_per_s"], rows["naive_loop_chunked"]["points_per_s"])
    best_func = max(rows["torch_func_vmap_jacrev_full_batch"]["points_per_s"],
                    rows["torch_func_vmap_jacrev_chunked"]["points_per_s"])
    speedups["jacal_auto_over_best_naive"] = round(auto / best_naive, 3)
    speedups["jacal_auto_over_best_torch_func"] = round(auto / best_func, 3)
    opt_in = {}
    for prec in ["float32"] + list(precisions):
        key = "jacal_auto" if prec == "float32" else f"jacal_auto_{prec}"
        speed = round(rows[key]["points_per_s"] / best_func, 3)
        err = rows[key][f"max_rel_err_vs_float64_ref_{sub}pts"]
        opt_in[prec] = {"speedup_over_best_torch_func": speed, "max_rel_err_vs_float64_ref": err,
                        "meets_target": bool(speed >= TARGET_SPEEDUP and err <= TARGET_REL_ERR)}
    return {"model": name, "methods": rows, "speedups": speedups, "precisions": opt_in,
            "precisions_skipped": skipped}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=2048, help="points")
    ap.add_argument("--batch-size", type=int, default=256, help="chunk size for the chunked methods")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ref-points", type=int, default=64, help="points checked against the float64 reference")
    ap.add_argument("--precisions", default="tf32,bf16",
                    help="comma-separated opt-in precisions of jacobian_norm to time ('' for none)")
    ap.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp (784-512x3-10 ReLU), cnn (small CNN)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(0)
    x, source = mnist_like(args.n)
    x = x.to(device)
    models = {"mlp": ("mlp_784-512x3-10_relu", lambda: jacal.mlp(784, 10, width=512, depth=3, activation="relu", seed=0)),
              "cnn": ("small_cnn_16-32-128", lambda: jacal.cnn((1, 28, 28), 10, channels=(16, 32), hidden=128, seed=0))}
    out = {
        "benchmark": "jacobian_norm (softmax output, Frobenius, per point)",
        "device": str(device), "n_points": args.n, "inputs": source, "batch_size": args.batch_size,
        "repeats": args.repeats, "timing": "median wall time of repeats timed round-robin across methods, after a warm-up",
        "machine": machine(),
        "target": {"speedup_over_best_torch_func": TARGET_SPEEDUP, "max_rel_err": TARGET_REL_ERR,
                   "note": "for an opt-in precision (tf32/bf16); float32, the default, must stay exact"},
        "results": [bench_model(models[k][0], models[k][1](), x, args, device) for k in args.models.split(",")],
    }
    print_json(out)
    return out


if __name__ == "__main__":
    main()
