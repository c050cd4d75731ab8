"""A GPU run in one command: jacal's benchmarks and a ≥ 1,000-model MNIST replication slice, one JSON.

    python benchmarks/gpu_suite.py --device cuda --data-root ../shared/data
    python benchmarks/gpu_suite.py --device cuda --mnist-npz PATH/mnist.npz   # the compressed MNIST alone
    python benchmarks/gpu_suite.py --tiny                                      # tiny sizes, CPU is fine

Parts, each in its own subprocess (its own CUDA context and memory, a time limit, and a failure
that does not stop the others), with its full JSON kept in ``--out/PART.json``:

* ``jacobian``: ``bench_jacobian.py`` (jacal vs a naive autograd loop vs torch.func, exact float32
  and the opt-in ``tf32``/``bf16`` precisions, errors against a float64 reference);
* ``population``: ``bench_population.py`` (jacal's population trainer vs a sequential torch.optim
  loop vs torch.func vmap, with its GFLOP/s against the measured float32 GEMM rate);
* ``population_smoke_shapes``: the same GFLOP/s figures at the smoke preset's shapes;
* ``acquire``: ``bench_acquire.py`` (a 60,000-image MNIST pool, k = 1,000);
* ``replicate``: :func:`jacal.replication.run_replication` with the ``standard`` preset (MNIST,
  2,000 training points) resized by overrides to ``--groups × --models-per-group`` ≥ 1,000 models
  (plus the C3 pairs), written to ``--out/replicate``.

Sizes (defaults; ``--groups``, ``--models-per-group``, ``--steps``, ``--pairs`` resize the slice):
population 1,024 MLPs 784-128-128-10, batch 64, 1,000 steps (sequential loop timed on 16 of them,
per model-step); Jacobian 8,192 MNIST test images; the slice 32 groups × 32 models × 1,000 steps
plus 8 pairs per C3 factor. They were chosen by estimate to fit 8 minutes on one H100/H200-class
GPU; no GPU was available to time them, so the first GPU run is also their check.

Prints one JSON: the machine (GPU name, torch / CUDA / cuDNN versions), each part's headline
numbers and wall time, and a pass/fail per target of issue 12: population training ≥ 100× the
sequential loop and ≥ 5× torch.func; an opt-in Jacobian precision ≥ 3× torch.func at relative
error ≤ 1e-3 with float32 exact (≤ 1e-5); the slice has ≥ 1,000 models; the whole suite ≤ 480 s.
Every speed figure is a ratio against a baseline timed in the same part. ``--out/suite.json`` is
rewritten after each part, so a run cut short still leaves what it measured. With ``--tiny`` the
same parts run at tiny sizes (digits instead of MNIST when MNIST is absent) so that a CPU test can
check the whole pipeline; its figures mean nothing and its targets are marked non-binding.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _common import MNIST_NPZ_ENV, SHARED_MNIST  # noqa: E402

TARGETS = {"population_over_sequential": 100.0, "population_over_torch_func": 5.0,
           "jacobian_opt_in_speedup_over_torch_func": 3.0, "jacobian_opt_in_max_rel_err": 1e-3,
           "jacobian_float32_max_rel_err": 1e-5, "replicate_models": 1000, "total_seconds": 480.0}
ACQUIRE_STRATEGIES = "jacobian,jacobian-kmeans,jacobian-topk,badge,margin,coreset"


# ---------------------------------------------------------------------------------------------
# the parts


def part_commands(args: argparse.Namespace, out: Path) -> Dict[str, List[str]]:
    """``{part: argv}``: each part's command line at full (GPU) or ``--tiny`` sizes."""
    py, dev = sys.executable, args.device
    if args.tiny:
        jac = ["--n", "24", "--batch-size", "12", "--repeats", "1", "--ref-points", "6", "--models", "mlp"]
        pop = ["--models", "4", "--width", "16", "--depth", "1", "--batch-size", "16", "--steps", "4", "--n", "64",
               "--sequential-models", "2", "--repeats", "1", "--gemm-size", "128"]
        smoke = ["--steps", "2", "--repeats", "1", "--gemm-size", "128"]
        acq = ["--pool-size", "200", "--k", "5", "--batch-size", "100", "--strategies", "jacobian"]
    else:
        jac = ["--n", "8192", "--batch-size", "1024", "--repeats", "5", "--ref-points", "512"]
        pop = ["--models", "1024", "--width", "128", "--depth", "2", "--batch-size", "64", "--steps", "1000",
               "--n", "10000", "--input-dim", "784", "--sequential-models", "16"]
        smoke = ["--steps", "200"]
        acq = ["--pool-size", "60000", "--k", "1000", "--batch-size", "2048", "--strategies", args.acquire_strategies]
    rep = ["--part", "replicate", "--out", str(out / "replicate"), "--device", dev,
           "--groups", str(args.groups), "--models-per-group", str(args.models_per_group), "--steps", str(args.steps),
           "--pairs", str(args.pairs)]
    if args.data_root is not None:
        rep += ["--data-root", str(args.data_root)]
    if args.tiny:
        rep.append("--tiny")
    return {
        "jacobian": [py, str(BENCH / "bench_jacobian.py"), "--device", dev, *jac],
        "population": [py, str(BENCH / "bench_population.py"), "--device", dev, *pop],
        "population_smoke_shapes": [py, str(BENCH / "bench_population.py"), "--device", dev, "--shapes", "smoke", *smoke],
        "acquire": [py, str(BENCH / "bench_acquire.py"), "--device", dev, *acq],
        "replicate": [py, str(Path(__file__).resolve()), *rep],
    }


def run_part(name: str, cmd: List[str], env: Dict[str, str], timeout: float, out: Path) -> Dict[str, Any]:
    """Run one part; ``{"ok", "seconds", "result" | "error"}``, its JSON in ``out/NAME.json``, its log in ``NAME.log``."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        log = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        (out / f"{name}.log").write_text(log)
        return {"ok": False, "seconds": round(time.perf_counter() - t0, 1), "error": f"timed out after {timeout:.0f} s"}
    seconds = round(time.perf_counter() - t0, 1)
    (out / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        return {"ok": False, "seconds": seconds, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    try:
        start = proc.stdout.index("{")  # each part prints one JSON object (possibly after other lines)
        result = json.loads(proc.stdout[start:])
    except ValueError as err:
        return {"ok": False, "seconds": seconds, "error": f"no JSON in the output: {err}"}
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    return {"ok": True, "seconds": seconds, "result": result}


# ---------------------------------------------------------------------------------------------
# headlines and targets


def jacobian_headline(r: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for m in r["results"]:
        meth = m["methods"]
        out[m["model"]] = {
            "jacal_points_per_s": meth["jacal_auto"]["points_per_s"],
            "best_torch_func_points_per_s": max(meth["torch_func_vmap_jacrev_full_batch"]["points_per_s"],
                                                meth["torch_func_vmap_jacrev_chunked"]["points_per_s"]),
            "jacal_over_best_torch_func": m["speedups"]["jacal_auto_over_best_torch_func"],
            "jacal_over_best_naive": m["speedups"]["jacal_auto_over_best_naive"],
            "precisions": m["precisions"], "precisions_skipped": m["precisions_skipped"],
        }
    return out


def population_headline(r: Dict[str, Any]) -> Dict[str, Any]:
    return {"model_steps_per_s": {k: v["model_steps_per_s"] for k, v in r["results"].items()},
            "speedups": r["speedups"], "config": {k: r["config"][k] for k in ("models", "width", "depth", "batch_size",
                                                                              "steps", "input_dim", "sequential_models")},
            "trainer_gflop_per_s": r["trainer_flops"]["gflop_per_s"], "gemm_mm_gflop_per_s": r["gemm"]["mm_gflop_per_s"],
            "fraction_of_mm": r["trainer_flops"]["fraction_of_mm"],
            "fraction_of_bmm_at_shapes": r["trainer_flops"]["fraction_of_bmm_at_shapes"]}


def smoke_headline(r: Dict[str, Any]) -> Dict[str, Any]:
    return {**r["aggregate"], "gemm_mm_size": r["gemm"]["mm_size"], "note": r["note"]}


def acquire_headline(r: Dict[str, Any]) -> Dict[str, Any]:
    return {"pool": r["pool"], "pool_size": r["pool_size"], "k": r["k"],
            "seconds": {k: v["seconds"] for k, v in r["results"].items()},
            "time_vs_badge": {k: v.get("time_vs_badge") for k, v in r["results"].items()}}


HEADLINES = {"jacobian": jacobian_headline, "population": population_headline,
             "population_smoke_shapes": smoke_headline, "acquire": acquire_headline,
             "replicate": lambda r: {k: v for k, v in r.items() if k != "claims_detail"}}


def check(value: Optional[float], target: float, at_least: bool) -> Dict[str, Any]:
    """``{"value", "target", "pass"}``; ``pass`` is ``None`` when the part did not run."""
    ok = None if value is None else bool(value >= target if at_least else value <= target)
    return {"value": value, "target": ("≥ " if at_least else "≤ ") + f"{target:g}", "pass": ok}


def targets(parts: Dict[str, Dict[str, Any]], total: float) -> Dict[str, Any]:
    """Pass/fail of each issue-12 target from the parts' full results."""
    res = {k: v.get("result") for k, v in parts.items() if v.get("ok")}
    t: Dict[str, Any] = {}
    pop = res.get("population")
    t["population_over_sequential"] = check(pop and pop["speedups"]["population_over_sequential"],
                                            TARGETS["population_over_sequential"], True)
    t["population_over_torch_func"] = check(pop and pop["speedups"]["population_over_torch_func"],
                                            TARGETS["population_over_torch_func"], True)
    jac = res.get("jacobian")
    if jac:
        per_model, exact = {}, {}
        for m in jac["results"]:
            opt = {p: v for p, v in m["precisions"].items() if p != "float32"}
            good = [v["speedup_over_best_torch_func"] for v in opt.values()
                    if v["max_rel_err_vs_float64_ref"] <= TARGETS["jacobian_opt_in_max_rel_err"]]
            per_model[m["model"]] = {"best_opt_in_speedup_within_error": max(good) if good else None,
                                     "opt_in": opt}
            exact[m["model"]] = m["precisions"]["float32"]["max_rel_err_vs_float64_ref"]
        speeds = [v["best_opt_in_speedup_within_error"] for v in per_model.values()]
        t["jacobian_opt_in_3x_torch_func_at_1e-3"] = {
            "per_model": per_model, "target": f"≥ {TARGETS['jacobian_opt_in_speedup_over_torch_func']:g}× the best "
            f"torch.func row at max relative error ≤ {TARGETS['jacobian_opt_in_max_rel_err']:g}, for every model",
            "pass": bool(speeds and all(s is not None and s >= TARGETS["jacobian_opt_in_speedup_over_torch_func"]
                                        for s in speeds))}
        t["jacobian_float32_exact"] = {**check(max(exact.values()), TARGETS["jacobian_float32_max_rel_err"], False),
                                       "per_model": exact}
    else:
        t["jacobian_opt_in_3x_torch_func_at_1e-3"] = {"pass": None}
        t["jacobian_float32_exact"] = {"pass": None}
    rep = res.get("replicate")
    t["replicate_at_least_1000_models"] = check(rep and rep["n_models"], TARGETS["replicate_models"], True)
    t["total_seconds"] = check(round(total, 1), TARGETS["total_seconds"], False)
    return t


# ---------------------------------------------------------------------------------------------
# the replication slice (run as a part: `gpu_suite.py --part replicate ...`)


def replicate_part(args: argparse.Namespace) -> Dict[str, Any]:
    import jacal  # noqa: F401  (import before timing)
    from jacal.replication import run_replication
    from jacal.replication.runner import Callbacks

    dataset, data_root = "mnist", args.data_root
    if args.tiny:
        try:
            jacal.load_dataset("mnist", root=data_root, n_train=10, n_test=10)
        except Exception:  # noqa: BLE001 (any reason MNIST cannot be read: use the offline dataset)
            dataset = "digits"
    if args.tiny:
        overrides = dict(n_groups=args.groups, models_per_group=args.models_per_group, pairs_per_factor=args.pairs,
                         steps=args.steps, full_batch_steps=args.steps, n_train=200, n_test=100, jacobian_points=50,
                         stored_points=30, n_ellipses=1, ellipse_points=24, c2_ellipses=1, c2_steps=args.steps,
                         c2_architectures=((16, 1),))
    else:
        overrides = dict(n_groups=args.groups, models_per_group=args.models_per_group, pairs_per_factor=args.pairs,
                         steps=args.steps)
    phases: Dict[str, float] = {}
    t0 = time.perf_counter()
    cb = Callbacks(on_phase=lambda text: phases.setdefault(text, time.perf_counter() - t0))
    report = run_replication(Path(args.out), preset="standard", datasets=[dataset], seed=0, device=args.device,
                             data_root=data_root, overrides=overrides, callbacks=cb)
    wall = time.perf_counter() - t0
    train = phases.get("analysing", wall)
    return {"dataset": dataset, "preset": "standard", "overrides": overrides, "device": report.get("device"),
            "n_models": report["n_models"], "n_pairs": report["n_pairs"], "seconds": round(wall, 1),
            "train_and_measure_seconds": round(train, 1), "analysis_and_figures_seconds": round(wall - train, 1),
            "models_per_s": round(report["n_models"] / train, 2),
            "verdicts": {c["id"]: c["verdict"] for c in report["claims"]}, "out": str(args.out)}


# ---------------------------------------------------------------------------------------------


def machine_info(device: str) -> Dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "device": device}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(), cudnn=torch.backends.cudnn.version(),
                    gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1))
    else:
        info["gpu"] = None
    return info


def resolve_mnist(args: argparse.Namespace, out: Path) -> Optional[Path]:
    """Point ``args.data_root`` at a folder jacal reads MNIST from; return the npz the benchmarks use, if any."""
    if args.mnist_npz is not None:
        npz = Path(args.mnist_npz).resolve()
        if not npz.is_file():
            raise SystemExit(f"error: --mnist-npz {npz} is not a file")
        if npz.name != "mnist.npz":  # jacal.load_dataset reads ROOT/mnist.npz
            link = out / "data" / "mnist.npz"
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(npz)
            npz = link
        args.data_root = args.data_root or npz.parent
        return npz
    if args.data_root is not None:
        args.data_root = Path(args.data_root).resolve()
        npz = args.data_root / "mnist.npz"
        return npz if npz.is_file() else None
    if (SHARED_MNIST / "mnist.npz").is_file() or (SHARED_MNIST / "MNIST" / "raw").is_dir():
        args.data_root = SHARED_MNIST
        return SHARED_MNIST / "mnist.npz" if (SHARED_MNIST / "mnist.npz").is_file() else None
    return None


def main(argv: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    ap.add_argument("--data-root", type=Path, default=None,
                    help="MNIST in torchvision's layout or ROOT/mnist.npz (default: ../shared/data when present)")
    ap.add_argument("--mnist-npz", type=Path, default=None, help="the compressed MNIST (x_train, y_train, x_test, y_test)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_suite", help="each part's JSON and log, the replicate folder")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (CPU is fine; digits when MNIST is absent)")
    ap.add_argument("--groups", type=int, default=None, help="replicate: architecture groups (default 32; tiny 2)")
    ap.add_argument("--models-per-group", type=int, default=None, help="replicate: models per group (default 32; tiny 3)")
    ap.add_argument("--steps", type=int, default=None, help="replicate: optimizer steps per model (default 1000; tiny 30)")
    ap.add_argument("--pairs", type=int, default=None, help="replicate: C3 pairs per factor (default 8; tiny 1)")
    ap.add_argument("--acquire-strategies", default=ACQUIRE_STRATEGIES)
    ap.add_argument("--parts", default=",".join(HEADLINES), help="comma-separated subset of the parts to run")
    ap.add_argument("--part-timeout", type=float, default=480.0, help="seconds before a part is stopped")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name, full, tiny in (("groups", 32, 2), ("models_per_group", 32, 3), ("steps", 1000, 30), ("pairs", 8, 1)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    if args.part == "replicate":
        print(json.dumps(replicate_part(args)))
        return None
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(HEADLINES)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose from {list(HEADLINES)}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    npz = resolve_mnist(args, out)
    if not args.tiny and "replicate" in parts and args.data_root is None:
        ap.error("the replicate slice needs MNIST: pass --data-root DIR or --mnist-npz PATH")
    if (out / "replicate").exists():
        import shutil

        shutil.rmtree(out / "replicate")  # a fresh slice every run: its wall time is part of the suite's
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if npz is not None:
        env[MNIST_NPZ_ENV] = str(npz)
    suite: Dict[str, Any] = {"suite": "jacal GPU suite (issue 12)", "tiny": args.tiny, "machine": machine_info(args.device),
                             "mnist_npz": str(npz) if npz else None, "data_root": str(args.data_root) if args.data_root else None,
                             "out": str(out), "parts": {}}
    commands = part_commands(args, out)
    done: Dict[str, Dict[str, Any]] = {}
    t0 = time.perf_counter()
    for name in parts:
        r = run_part(name, commands[name], env, args.part_timeout, out)
        entry = {"ok": r["ok"], "seconds": r["seconds"], "command": " ".join(Path(c).name if i < 2 else c
                                                                            for i, c in enumerate(commands[name]))}
        if r["ok"]:
            entry["headline"] = HEADLINES[name](r["result"])
        else:
            entry["error"] = r["error"]
        suite["parts"][name] = entry
        done[name] = r
        suite["total_seconds"] = round(time.perf_counter() - t0, 1)
        suite["targets"] = targets(done, suite["total_seconds"])  # of the parts so far
        suite["targets_binding"] = not args.tiny
        (out / "suite.json").write_text(json.dumps(suite, indent=2))
    suite["all_parts_ok"] = all(p["ok"] for p in suite["parts"].values())
    if args.tiny:
        suite["note"] = "tiny run: the figures and pass/fail flags only show that every part runs end to end"
    (out / "suite.json").write_text(json.dumps(suite, indent=2))
    print(json.dumps(suite, indent=2))
    return suite


if __name__ == "__main__":
    main()
