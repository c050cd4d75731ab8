"""A 100,000-row manifest of small PNG files: memory bounded by the batch size, and its speed.

Writes ``--n`` distinct 28×28 grayscale PNG files (MNIST training images when ../shared/data has
them, repeated cyclically past 60,000 and so identical in content but separate files; else
seeded noise) into a temporary folder with a CSV manifest, then scores the pool with
``jacal.acquire`` (strategy ``margin``, score-only and chunked) two ways, each in its own
subprocess so that its peak memory is its own:

* ``manifest``: the manifest opened with :func:`jacal.io.open_pool` (images decoded batch by batch);
* ``array``: the same decoded pixels held in memory as one float32 array (read from a ``.npy`` made
  once from the same files), the way a pool is passed without a manifest.

``rss_growth_mb`` is the peak RSS during the run (Linux VmHWM, reset after imports, the model
and a warm-up pass) minus the RSS then, before the pool is opened; ``items_per_s`` covers the whole
scoring pass (file decoding included for the manifest). Measured on this project's 2 shared CPU
cores, 1 thread, 100,000 files: manifest 2,982 items/s and +57 MB (ids, paths and per-item scores,
about 0.5 KB an item; pixels only a batch at a time), array 36,903 items/s and +333 MB (the
pool's 299 MB of pixels), the same picks.
Prints JSON.

    python benchmarks/bench_manifest.py                 # 100,000 files
    python benchmarks/bench_manifest.py --n 20000 --batch-size 512
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED_MNIST, machine, print_json  # noqa: E402


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:  # Linux: VmRSS is the current RSS, VmHWM its peak
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0), so the peak read later is this run's own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _images(n: int) -> tuple:
    npz = SHARED_MNIST / "mnist.npz"
    if npz.exists():
        with np.load(npz) as f:
            raw = f["x_train"]
        return raw[np.arange(n) % len(raw)], "mnist-train (cyclic)"
    return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8), "uniform-noise"


def build(folder: Path, n: int) -> dict:
    from PIL import Image

    import jacal.io as jio

    t0 = time.perf_counter()
    pixels, source = _images(n)
    (folder / "png").mkdir(parents=True)
    with open(folder / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path"])
        for i in range(n):  # one file per item
            name = f"png/{i:06d}.png"
            Image.fromarray(pixels[i], mode="L").save(folder / name, compress_level=1)
            w.writerow([f"item {i:06d}", name])
    written = time.perf_counter() - t0
    pool = jio.open_pool(folder / "manifest.csv", image_size=(28, 28), channels=1)
    np.save(folder / "pool.npy", pool.materialize().numpy())  # the same decoded pixels, for the array run
    size = sum(p.stat().st_size for p in (folder / "png").iterdir())
    return {"files": n, "images": source, "write_seconds": round(written, 1), "png_mb": round(size / 2 ** 20, 1)}


def child(args) -> None:
    import torch

    import jacal
    import jacal.io as jio

    torch.set_num_threads(args.threads)
    model = jacal.mlp(784, 10, width=256, depth=2, seed=0).eval()
    # warm-up, for both runs alike: one scoring pass on a small batch, one image decoded (loads the codecs)
    jacal.acquire(model, torch.rand(512, 1, 28, 28), 2, strategy="margin", batch_size=args.batch_size)
    jio.open_pool(Path(args.folder) / "manifest.csv", image_size=(28, 28), channels=1).items[0]
    base = _status_mb("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    if args.single == "manifest":
        pool = jio.open_pool(Path(args.folder) / "manifest.csv", image_size=(28, 28), channels=1).items
    else:
        pool = torch.from_numpy(np.load(Path(args.folder) / "pool.npy"))
    res = jacal.acquire(model, pool, args.k, strategy="margin", batch_size=args.batch_size, device="cpu")
    wall = time.perf_counter() - t0
    assert len(set(res.indices.tolist())) == args.k and len(res.invalid) == 0
    peak = _status_mb("VmHWM")
    print(json.dumps({"pool": args.single, "seconds": round(wall, 2), "items_per_s": round(len(res.scores) / wall),
                      "rss_growth_mb": round(peak - base, 1), "peak_rss_mb": round(peak, 1),
                      "picks": res.indices.tolist()}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="Manifest rows (PNG files).")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--folder", default=None, help="Reuse (or keep) the files here instead of a temporary folder.")
    ap.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.single:
        return child(args)
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="jacal-manifest-"))
    try:
        data = (json.loads((folder / "build.json").read_text()) if (folder / "build.json").exists()
                else build(folder, args.n))
        (folder / "build.json").write_text(json.dumps(data))
        rows = {}
        for name in ("manifest", "array"):
            cmd = [sys.executable, __file__, "--single", name, "--folder", str(folder), "--k", str(args.k),
                   "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        same = rows["manifest"].pop("picks") == rows["array"].pop("picks")
        print_json({"benchmark": "score a manifest pool lazily vs the same items as an in-memory array (margin)",
                    "batch_size": args.batch_size, "k": args.k, "threads": args.threads, "data": data,
                    "same_picks": same, "array_pool_mb": round(data["files"] * 784 * 4 / 2 ** 20, 1),
                    "machine": machine(), "results": rows})
    finally:
        if not args.folder:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
