"""`jacal serve`'s /predict latency for 100 image tasks, and 20 concurrent /predict requests; prints JSON.

    python benchmarks/bench_serve.py [--tasks 100] [--repeats 5] [--concurrent 20]

A real server (uvicorn on 127.0.0.1, a free port) serving a 784-256-256-10 MLP checkpoint; 100 PNG
files of 28×28 digits (real MNIST from /work/shared/data/mnist.npz when present, else sklearn's
digits upscaled) as Label Studio tasks, half local paths and half ``/data/local-files/?d=`` URLs.

Measured side by side in one run:
* ``predict_100_s``: one POST /predict with every task, over HTTP (median of ``--repeats``);
* ``baseline_array_s``: the same scoring (``jacal.acquire(..., 1, strategy)`` on the decoded pixels)
  with the images already in memory: what the server adds is decoding, JSON and HTTP;
* ``concurrent``: ``--concurrent`` requests of 100 tasks each at once: all must answer 200.

Target (issue 23): ``predict_100_s`` ≤ 2 s on 2 CPU cores.
"""
import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jacal  # noqa: E402

NAMES = [str(i) for i in range(10)]
CONFIG = ('<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
          + "".join(f'<Choice value="{n}"/>' for n in NAMES) + '<Choice value="none of these"/></Choices></View>')


def images(n):
    path = Path("/work/shared/data/mnist.npz")
    if path.exists():
        with np.load(path) as f:
            return f["x_test"][:n].astype(np.uint8), "mnist"
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits().images[:n]
    return np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((28, 28))) for im in d]), "digits"


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return resp.status, json.loads(resp.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--strategy", default="jacobian")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target is for 2 cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import uvicorn
    from PIL import Image

    from jacal.serve import MLBackend
    from jacal.serve.app import create_app

    work = Path(tempfile.mkdtemp(prefix="jacal-bench-serve-"))
    (work / "docs" / "img").mkdir(parents=True)
    pix, source = images(args.tasks)
    tasks = []
    for j, p in enumerate(pix):
        f = work / "docs" / "img" / f"{j:04d}.png"
        Image.fromarray(p, mode="L").save(f)
        tasks.append({"id": j + 1, "data": {"image": str(f) if j % 2 else f"/data/local-files/?d=img/{f.name}",
                                            "id": f"item {j}"}})
    model = jacal.mlp(784, 10, width=256, depth=2, seed=0).eval()
    jacal.save_checkpoint(work / "model.pt", model, metadata={"input_shape": [1, 28, 28], "label_names": NAMES})
    backend = MLBackend(work / "model.pt", state_dir=work / "state", document_root=work / "docs",
                        strategy=args.strategy).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(backend), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/predict"
    body = {"tasks": tasks, "label_config": CONFIG, "project": "1.1764583200"}
    post(url, body)  # warm-up
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        status, out = post(url, body)
        times.append(time.perf_counter() - t)
        assert status == 200 and len(out["results"]) == args.tasks
    x = torch.as_tensor(pix, dtype=torch.float32)[:, None] / 255
    base = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        jacal.acquire(model, x, 1, strategy=args.strategy)
        base.append(time.perf_counter() - t)
    t = time.perf_counter()
    with ThreadPoolExecutor(args.concurrent) as pool:
        answers = list(pool.map(lambda _: post(url, body), range(args.concurrent)))
    wall = time.perf_counter() - t
    ok = sum(s == 200 and len(a["results"]) == args.tasks for s, a in answers)
    same = all(a["results"] == answers[0][1]["results"] for _, a in answers)
    server.should_exit = True
    backend.stop()
    med = statistics.median(times)
    print(json.dumps({"images": source, "tasks": args.tasks, "strategy": args.strategy, "threads": args.threads,
                      "predict_100_s": round(med, 4), "predict_runs_s": [round(v, 4) for v in times],
                      "baseline_array_s": round(statistics.median(base), 4),
                      "overhead_ratio": round(med / statistics.median(base), 2),
                      "concurrent": {"requests": args.concurrent, "answered_200": ok, "identical_results": same,
                                     "wall_s": round(wall, 3)},
                      "target_predict_100_s": 2.0, "meets_target": med <= 2.0}, indent=1))


if __name__ == "__main__":
    main()
