"""Acquisition at scale: score a pool and select k = 1,000, every strategy, wall time and peak memory.

Each strategy runs in its own subprocess, so its memory is its own. Prints JSON: wall time and peak
memory per strategy, next to a baseline process that only holds the pool and the model, so
``extra_mb`` is what the strategy itself needs. The time is split in the two halves of
:func:`jacal.acquire`: ``model_seconds`` (the feature pass over the pool) and ``selection_seconds``
(the strategy's selection on those features). For the diversity strategies the selection also
reports what it ran (``selection_method``: see :mod:`jacal.acquisition.selection`), the bytes each
pick reads (``bytes_per_pick``: the embedding, its sketch or the chain's rows and the centers, plus
the per-row vectors) and the bandwidth that makes (``selection_gbps``), next to the machine's
memory bandwidth measured in the same run by a STREAM-like triad (``triad``; ``selection_vs_triad``
is their ratio: near 1 means bound by memory traffic). With margin among the strategies, each result
carries ``time_vs_margin`` and ``model_vs_margin`` (the issue's yardstick).

``--selection exact|approximate|auto`` picks the path (default ``auto``: exact for small pools);
``--compare-exact`` also runs the exact selection on the same features and reports its time, the
picks' overlap, the objective each path serves evaluated exactly on a sample (k-center: covering
radius; k-means++: k-means cost) and, for the sketch, the distortion of squared distances; for the
seeded k-means++ strategies the same figures for the exact path at another seed say how much two
exact runs differ anyway; for bald it times the feature pass again with one forward pass per MC
sample (as before the samples were batched). ``--compare-passes`` runs the exact k-means++ seedings
(jacobian, jacobian-kmeans, badge) a second time with one pass over the pool per pick, the exact
path before rejection sampling, and reports its time, bytes per pick and the k-means cost of both.

Pools:

* ``--pool-size`` ≤ 60,000 (default 60,000): real MNIST training images in memory (uniform noise
  when ../shared/data/mnist.npz is absent), the setting of the 60,000-item figures in docs/benchmarks/selection_scale.md.
* larger, or ``--mmap``: a synthetic pool built from those images (each item an MNIST training image
  plus Gaussian noise of σ = 0.1, clipped to [0, 1], seeded), written once to a float32 ``.npy``
  (``--pool-file``, default in the system's temporary folder; reused when its shape matches) and
  memory-mapped read-only: the pool itself is never loaded (a million items: 3.1 GB on disk).

Memory: ``peak_rss_mb`` is the kernel's high-water mark (``ru_maxrss``), which also counts the pages of
a memory-mapped pool that were read (page cache, reclaimable, shared with the file). For a mapped
pool the figure that answers "how much memory does the strategy need" is anonymous memory:
``peak_anon_mb`` samples ``RssAnon`` (/proc/self/status) every 10 ms in a thread, and ``extra_mb``
is its peak over the baseline's. For an in-memory pool ``extra_mb`` is the ``ru_maxrss`` difference,
as before.

Model: the paper-sized MLP 784→512→512→512→10 (ReLU), with dropout 0.1 after each hidden layer so
that ``bald`` (MC dropout, 20 samples) has something to sample; in eval mode dropout is the identity,
so the other strategies see the plain MLP. Weights are a seeded initialization (speed does not depend
on training).

    python benchmarks/bench_acquire.py                  # all strategies, 60,000 items, CPU
    python benchmarks/bench_acquire.py --strategies jacobian,badge --pool-size 30000
    python benchmarks/bench_acquire.py --pool-size 1000000 --strategies margin,jacobian,badge,coreset
    python benchmarks/bench_acquire.py --pool-size 200000 --mmap --strategies margin,jacobian,badge,coreset --compare-exact

With badge among the strategies, each result also carries ``time_vs_badge``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, mnist_like, print_json  # noqa: E402

import jacal  # noqa: E402

IN_MEMORY_MAX = 60000


def _anon_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class AnonPeak:
    """The peak of this process's anonymous resident memory, sampled every ``every`` seconds."""

    def __init__(self, every: float = 0.01):
        self.every, self.peak, self._stop = every, _anon_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _anon_mb())
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _anon_mb())


def pool_file(path: Path, n: int, seed: int = 0, chunk: int = 20000) -> Path:
    """Write (once) ``n`` noisy MNIST training images, float32 (n, 1, 28, 28), to ``path`` as ``.npy``."""
    if path.exists():
        try:
            if np.load(path, mmap_mode="r").shape == (n, 1, 28, 28):
                return path
        except (OSError, ValueError):
            pass
    base, _ = mnist_like(IN_MEMORY_MAX, seed=seed, split="train")
    base = base.numpy()
    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, 1, 28, 28))
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        src = base[rng.integers(0, len(base), e - s)]
        out[s:e] = np.clip(src + rng.normal(0, 0.1, size=src.shape).astype(np.float32), 0, 1)
    out.flush()
    del out
    os.replace(tmp, path)
    return path


def triad_gbps(n: int = 1 << 25, repeats: int = 5) -> dict:
    """A STREAM-like triad ``a = b + s·c`` over float32 arrays of ``n`` numbers (128 MB each by
    default, far beyond any cache), at torch's thread count: the best of ``repeats`` runs, counted as
    STREAM does (three arrays of traffic per run, write-allocate not counted)."""
    import torch

    b, c = torch.rand(n), torch.rand(n)
    a = torch.empty(n)
    torch.add(b, c, alpha=3.0, out=a)  # touch every page once
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)
        best = min(best, time.perf_counter() - t0)
    return {"gbps": _sig(3 * 4 * n / best / 1e9), "array_mb": round(4 * n / 1e6), "threads": torch.get_num_threads()}


def _sig(v: float) -> float:
    return float(f"{v:.3g}")


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return round(len(np.intersect1d(a, b)) / max(1, len(a)), 4)


def quality(name: str, feats, picks: np.ndarray, exact_picks: np.ndarray, candidates: np.ndarray, seed: int = 0,
            sample: int = 20000) -> dict:
    """How an approximate selection compares with the exact one on the same features: the picks'
    overlap, and the objective each path serves, evaluated exactly on a seeded sample of the
    candidates (k-center: the covering radius, max over items of the distance to the nearest pick;
    k-means++: the k-means cost, mean squared distance to the nearest pick, origin included for the
    Jacobian strategies); for the sketch, the relative error of squared distances over 2,000 pairs."""
    import torch

    from jacal.acquisition.selection.kcenter import SKETCH_DIM, sketch_matrix

    rng = np.random.default_rng(seed)
    s = rng.choice(candidates, size=min(sample, len(candidates)), replace=False)
    out = {"overlap_with_exact": _overlap(picks, exact_picks)}
    if name == "badge":
        a = np.nan_to_num(feats.probs, nan=0.0)
        a[np.arange(len(a)), a.argmax(1)] -= 1.0
        h = feats.embeddings.astype(np.float64)

        def cost(p):
            ip = (a[s] @ a[p].T) * (h[s] @ h[p].T)
            n_s = (a[s] ** 2).sum(1) * (h[s] ** 2).sum(1)
            n_p = (a[p] ** 2).sum(1) * (h[p] ** 2).sum(1)
            return float(np.maximum(n_s[:, None] + n_p[None, :] - 2 * ip, 0).min(1).mean())
    else:
        e = {"coreset": feats.embeddings, "jacobian": feats.boundary_embedding,
             "jacobian-kmeans": feats.jacobian_embedding}[name]
        xs = torch.from_numpy(e[s]).double()

        def cost(p):
            c = torch.from_numpy(e[p]).double()
            if name != "coreset":
                c = torch.cat([c, torch.zeros(1, c.shape[1], dtype=c.dtype)])
            d = torch.cdist(xs, c).min(dim=1).values
            return float(d.max()) if name == "coreset" else float(d.pow(2).mean())
        if name == "coreset":
            i, j = rng.choice(candidates, size=(2, 2000))
            v = torch.from_numpy(e[i] - e[j]).double()
            sk = sketch_matrix(v.shape[1], SKETCH_DIM, seed)
            rel = (v @ sk).pow(2).sum(1) / v.pow(2).sum(1).clamp_min(1e-300) - 1
            out["sketch_sq_distance_rel_error"] = {"mean": round(float(rel.mean()), 4), "std": round(float(rel.std()), 4),
                                                   "p95_abs": round(float(rel.abs().quantile(0.95)), 4)}
    key = "covering_radius" if name == "coreset" else "kmeans_cost"
    out[key] = cost(picks)
    out[key + "_exact"] = cost(exact_picks)
    out[key + "_ratio"] = round(out[key] / out[key + "_exact"], 4) if out[key + "_exact"] > 0 else None
    return out


def child(args) -> None:
    from jacal.acquisition.selection import selection, trace
    from jacal.acquisition.strategies import as_selection, get_strategy
    from jacal.acquisition.strategies import class_floor_candidates
    from jacal.confidence.openset import in_set_probability
    from jacal.features import Need, extract_features

    if args.pool_file:
        pool, source = np.load(args.pool_file, mmap_mode="r"), "mnist-train+noise, memory-mapped .npy"
    else:
        pool, source = mnist_like(args.pool_size, split="train")
    model = jacal.mlp(784, 10, width=512, depth=3, dropout=0.1, seed=0).eval()
    row = {"strategy": args.single, "pool": source}
    t0 = time.perf_counter()
    with AnonPeak() as anon:
        if args.single != "baseline":  # what jacal.acquire does, its two halves timed apart
            strat = get_strategy(args.single)
            need = set(strat.needs)
            open_set = args.open_set > 0
            if open_set:
                need.add(Need.EMBEDDINGS)
            feats = extract_features(model, pool, need=need, batch_size=args.batch_size,
                                     device=args.device, mc_samples=20, seed=0)
            candidates = np.flatnonzero(feats.finite)
            if open_set:  # what acquire adds on an open pool: M items sent, 40% of them answered "none of these"
                sent = np.random.default_rng(0).choice(candidates, size=args.open_set, replace=False)
                out = sent[: int(0.4 * len(sent))]
                ins = np.setdiff1d(sent, out)
                free = np.setdiff1d(candidates, sent)
                try:  # what acquire runs: the strategy's own layer (open_set="auto")
                    from jacal.acquisition.engine import apply_open_pool_layer
                except ImportError:  # a checkout from before the layer was one function: every strategy's was the class floor
                    est = in_set_probability(feats.embeddings, feats.embeddings[ins], feats.embeddings[out])
                    candidates, layer = class_floor_candidates(est["probability"], feats.probs, free, args.k), "class-floor"
                else:
                    layer = getattr(strat, "open_set", None) or "class-floor"
                    classes = np.nan_to_num(feats.probs[ins], nan=0.0).argmax(1)
                    if args.open_set_classes == "all":  # as once every class has a labeled item
                        classes = np.arange(feats.probs.shape[1])
                    candidates = apply_open_pool_layer(feats, strat, layer, feats.embeddings[ins], feats.embeddings[out],
                                                       classes, free, args.k)
                row.update(open_set_sent=int(len(sent)), open_set_layer=layer, open_set_candidates=int(len(candidates)),
                           open_set_weighted=getattr(feats, "in_set", None) is not None)
            t1 = time.perf_counter()
            with selection(args.selection), trace() as calls:
                sel = as_selection(strat.select(feats, args.k, candidates=candidates, seed=0), n=len(feats.finite),
                                   k=args.k, candidates=candidates, name=strat.name)
            t2 = time.perf_counter()
            row.update(model_seconds=round(t1 - t0, 2), selection_seconds=round(t2 - t1, 2))
            if calls:  # a diversity selection: what its passes read, against the machine's bandwidth
                c = calls[0]
                row.update(selection_method=c["method"], bytes_per_pick=int(c["bytes_per_pick"]),
                           setup_bytes=int(c["setup_bytes"]), diversity_seconds=round(c["seconds"], 2),
                           selection_gbps=_sig(c["bytes_per_pick"] * args.k / 1e9 / max(c["seconds"], 1e-9)))
    row.update(seconds=round(time.perf_counter() - t0, 2),
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               peak_anon_mb=round(anon.peak, 1))
    if args.compare_exact and args.single == "bald":  # the MC samples one pass each, as before they were batched
        import jacal.features as F

        F.MC_BATCH_ROWS, t3 = 1, time.perf_counter()
        looped = extract_features(model, pool, need=set(strat.needs), batch_size=args.batch_size, device=args.device,
                                  mc_samples=20, seed=0)
        row["per_sample_mc_model_seconds"] = round(time.perf_counter() - t3, 2)
        row["batched_vs_per_sample"] = round(row["model_seconds"] / row["per_sample_mc_model_seconds"], 3)
        row["bald_score_max_abs_diff"] = float(np.nanmax(np.abs(looped.bald - feats.bald)))  # other masks: not 0
    if args.compare_passes and args.single != "baseline" and calls and "proposals_per_pick" in calls[0]:
        t3 = time.perf_counter()  # the exact seeding by one pass over the pool per pick
        with selection("exact", d2_sampler="pass"), trace() as full_calls:
            full = as_selection(strat.select(feats, args.k, candidates=candidates, seed=0), n=len(feats.finite),
                                k=args.k, candidates=candidates, name=strat.name)
        row["passes_selection_seconds"] = round(time.perf_counter() - t3, 2)
        row["passes_bytes_per_pick"] = int(full_calls[0]["bytes_per_pick"])
        row["rejection_vs_passes"] = round(row["selection_seconds"] / max(row["passes_selection_seconds"], 1e-9), 4)
        row["proposals_per_pick"] = round(calls[0]["proposals_per_pick"], 3)
        row["refreshes"] = int(calls[0]["refreshes"])
        # the same law, other random draws: the k-means cost of both (and the passes path at another seed)
        row["quality_vs_passes"] = quality(args.single, feats, np.asarray(sel.indices), np.asarray(full.indices),
                                           candidates)
        with selection("exact", d2_sampler="pass"):
            full1 = strat.select(feats, args.k, candidates=candidates, seed=1)
        row["quality_vs_passes"]["passes_seed1_vs_passes"] = quality(args.single, feats, np.asarray(full1[0]),
                                                                     np.asarray(full.indices), candidates)
    elif args.compare_passes and (args.single == "ldm-s" or args.single == "jacobian" and
                                  getattr(feats, "in_set", None) is not None):  # LDM-S's seeding: the pass per pick against rejection
        t3 = time.perf_counter()
        with selection(d2_sampler="pass"):
            strat.select(feats, args.k, candidates=candidates, seed=0)
        row["passes_selection_seconds"] = round(time.perf_counter() - t3, 2)
        row["rejection_vs_passes"] = round(row["selection_seconds"] / max(row["passes_selection_seconds"], 1e-9), 4)
    if args.compare_exact and args.single != "baseline" and calls and row["selection_method"] != "exact":
        t3 = time.perf_counter()
        with selection("exact"), trace() as exact_calls:
            exact = strat.select(feats, args.k, candidates=candidates, seed=0)
        row["exact_selection_seconds"] = round(time.perf_counter() - t3, 2)
        row["exact_bytes_per_pick"] = int(exact_calls[0]["bytes_per_pick"])
        row["quality_vs_exact"] = quality(args.single, feats, sel.indices, np.asarray(exact[0]), candidates)
        if args.single != "coreset":  # D² seeding is random: the same figures for exact at another seed, as the noise
            with selection("exact"):
                exact1 = strat.select(feats, args.k, candidates=candidates, seed=1)
            row["quality_vs_exact"]["exact_seed1_vs_exact"] = quality(args.single, feats, np.asarray(exact1[0]),
                                                                      np.asarray(exact[0]), candidates)
    print(json.dumps(row))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool-size", type=int, default=60000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--strategies", default=",".join(sorted(jacal.STRATEGIES)))
    ap.add_argument("--mmap", action="store_true", help="memory-map the pool from a .npy file at any size")
    ap.add_argument("--pool-file", type=Path, default=None,
                    help="where the memory-mapped pool is written (default: jacal_pool_N.npy in the temp folder)")
    ap.add_argument("--selection", default="auto", choices=["auto", "exact", "approximate"],
                    help="the diversity selection path (jacal.acquisition.selection.selection)")
    ap.add_argument("--compare-passes", action="store_true",
                    help="for the exact k-means++ seedings, also run them with one pass over the pool per pick (the "
                         "exact path before rejection sampling) on the same features: time, bytes per pick, and "
                         "the k-means cost of both (same law, other draws; the passes path at another seed for scale); "
                         "for LDM-S's seeding (ldm-s, and jacobian under --open-set) the time of both")
    ap.add_argument("--compare-exact", action="store_true",
                    help="also run the exact selection on the same features: its time, the picks' overlap and "
                         "the objective's ratio (see quality())")
    ap.add_argument("--open-set", type=int, default=0, metavar="M",
                    help="the open-pool path: M pool items count as sent, 40%% of them answered 'none of these'; every "
                         "strategy runs under acquire's default open-pool layer (embeddings, the calibrated P(in | x), "
                         "its own layer's candidates, as acquire's open_set='auto') and selects among them")
    ap.add_argument("--open-set-classes", default="all", choices=["all", "predicted"],
                    help="with --open-set, the labeled in-set items' classes the share floor sees: 'all' (every class "
                         "labeled, so it cuts) or 'predicted' (the untrained model's predictions for them, as acquire "
                         "would pass)")
    ap.add_argument("--triad-numbers", type=int, default=1 << 25, help=argparse.SUPPRESS)
    ap.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.single:
        return child(args)
    mapped = args.mmap or args.pool_size > IN_MEMORY_MAX
    path = None
    if mapped:
        path = pool_file(args.pool_file or Path(tempfile.gettempdir()) / f"jacal_pool_{args.pool_size}.npy",
                         args.pool_size)
    rows = {}
    for name in ["baseline"] + args.strategies.split(","):
        cmd = [sys.executable, __file__, "--single", name, "--pool-size", str(args.pool_size), "--k", str(args.k),
               "--batch-size", str(args.batch_size), "--device", args.device, "--selection", args.selection]
        if args.compare_exact:
            cmd.append("--compare-exact")
        if args.compare_passes:
            cmd.append("--compare-passes")
        if args.open_set:
            cmd += ["--open-set", str(args.open_set), "--open-set-classes", args.open_set_classes]
        if path is not None:
            cmd += ["--pool-file", str(path)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{name} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name}: {rows[name]['seconds']} s", file=sys.stderr, flush=True)
    base = rows.pop("baseline")
    triad = triad_gbps(args.triad_numbers)
    for r in rows.values():
        if "margin" in rows:  # the yardstick: each strategy's time as a multiple of margin's
            r["time_vs_margin"] = round(r["seconds"] / rows["margin"]["seconds"], 2)
            r["model_vs_margin"] = round(r["model_seconds"] / rows["margin"]["seconds"], 2)
        if triad is not None and "selection_gbps" in r:
            r["selection_vs_triad"] = _sig(r["selection_gbps"] / triad["gbps"])
        if mapped:
            r["extra_mb"] = round(r["peak_anon_mb"] - base["peak_anon_mb"], 1)
        else:
            r["extra_mb"] = round(r["peak_rss_mb"] - base["peak_rss_mb"], 1)
        if "badge" in rows:  # the yardstick: a Jacobian strategy may take at most 2× badge's time
            r["time_vs_badge"] = round(r["seconds"] / rows["badge"]["seconds"], 2)
    result = {"benchmark": "acquire k from a pool (features + selection), one subprocess per strategy",
              "pool_size": args.pool_size, "k": args.k, "batch_size": args.batch_size, "device": args.device,
              "pool": base["pool"], "memory_mapped": mapped,
              "extra_mb_is": "peak RssAnon over the baseline's" if mapped else "peak ru_maxrss over the baseline's",
              "baseline_rss_mb": base["peak_rss_mb"], "baseline_anon_mb": base["peak_anon_mb"],
              "selection": args.selection, "triad": triad, "machine": machine(), "results": rows}
    if path is not None:
        result["pool_file"] = str(path)
        result["pool_file_gb"] = round(path.stat().st_size / 1e9, 2)
    print_json(result)
    return result


if __name__ == "__main__":
    main()
