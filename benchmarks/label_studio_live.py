"""A two-round live active-learning loop against a real Label Studio server, with `jacal serve` as
its ML backend; prints JSON.

    python benchmarks/label_studio_live.py [--label-studio PATH] [--rounds 2] [--k 15] [--workdir DIR]

Label Studio pins older packages, so it lives in its own virtual environment, never in jacal's:
``python3 -m venv /work/ls-venv && /work/ls-venv/bin/pip install label-studio``. The script finds
its ``label-studio`` at ``--label-studio``, ``$LABEL_STUDIO_BIN``, ``/work/ls-venv/bin/label-studio`` or
on ``PATH``; without one it prints ``{"skipped": true, ...}`` and exits 0 (CI has none; this is not
a pytest test).

What it does, every server on 127.0.0.1 and stopped by the PID it started:

1. a pool of digit PNGs (sklearn's digits) plus a few blank / noise images no class fits, under a
   Local Files document root; ids with spaces, commas, quotes and non-ASCII characters;
2. a seed model: `jacal train` on 30 labeled items;
3. `label-studio start --internal-host 127.0.0.1` (ML_BLOCK_LOCAL_IP=false so it may call a
   backend on loopback); a personal access token made through the API; a project with jacal's
   labeling config (``none of these`` among the choices) and uncertainty sampling; a Local Files
   storage; every item imported as a task;
4. `jacal serve` connected as the project's ML backend; predictions retrieved for every task;
5. each round: annotators (simulated from the ground truth; ``none of these`` for the junk
   images) label the tasks Label Studio's ``/next`` serves; training is started through Label
   Studio; `jacal serve` trains a new version, sets the project's model version and has Label
   Studio retrieve the new predictions.

Label Studio's ``/next`` returns the task an annotator already holds (its task lock) before it
consults the queue, so the simulated annotator opens no task between the round's last submission and
the new model's predictions; otherwise the first task after a retraining is the one the old model
chose.

Checked each round: every task carries a prediction of the current version; ``/next`` serves the
task jacal ranks first (the highest per-item score of the strategy, computed here from the same
images and the same model file); no task is served twice; junk answered ``none of these`` is
never trained on (the job's counts).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NONE = "none of these"
CONFIG = ('<View><Image name="image" value="$image"/><Choices name="label" toName="image" choice="single">'
          + "".join(f'<Choice value="{n}"/>' for n in NAMES) + f'<Choice value="{NONE}"/></Choices></View>')


def find_label_studio(given):
    for cand in (given, os.environ.get("LABEL_STUDIO_BIN"), "/work/ls-venv/bin/label-studio",
                 shutil.which("label-studio")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class API:
    """Label Studio's REST API on 127.0.0.1 with a legacy token or a bearer token."""

    def __init__(self, url, header):
        self.url, self.header = url, header

    def __call__(self, method, path, body=None, timeout=600):
        req = urllib.request.Request(self.url + path, data=None if body is None else json.dumps(body).encode(),
                                     method=method, headers={"Content-Type": "application/json",
                                                             "Authorization": self.header})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"{method} {path}: {err.code} {err.read()[:300]!r}") from None
        return json.loads(raw) if raw else None


def wait_for(url, seconds, proc=None):
    end = time.time() + seconds
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def stop(proc, name, out):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        out[f"{name}_exit_code"] = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out[f"{name}_exit_code"] = "killed after 60 s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label-studio", default=None, help="The label-studio executable (its own venv).")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--k", type=int, default=15, help="Tasks annotated per round.")
    ap.add_argument("--n", type=int, default=150, help="Digit images in the pool (plus 10 junk images).")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--startup-timeout", type=float, default=900, help="Seconds Label Studio may take to start.")
    args = ap.parse_args()
    ls_bin = find_label_studio(args.label_studio)
    if ls_bin is None:
        print(json.dumps({"skipped": True, "reason": "label-studio is not installed (install it in its own venv: "
                                                     "python3 -m venv /work/ls-venv && /work/ls-venv/bin/pip install "
                                                     "label-studio)"}))
        return 0

    import numpy as np
    import torch
    from PIL import Image
    from sklearn.datasets import load_digits

    import jacal
    from jacal.models import load_model_file
    from jacal.pipeline import train_checkpoint

    torch.set_num_threads(1)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="jacal-ls-live-"))
    docs = work / "docs"
    (docs / "digits").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = {"skipped": False, "label_studio": ls_bin, "workdir": str(work), "rounds": []}

    # 1. the pool: digits, and junk no class fits
    digits = load_digits()
    rng = np.random.default_rng(0)
    truth, rows = {}, []
    for j in range(args.n + 10):
        item = [f"scan {j:04d}", f"scan,{j:04d}", f'say "{j:04d}"', f"échantillon-{j:04d}", f"数字 {j:04d}"][j % 5]
        if j < args.n:
            pixels = (digits.images[j] * 255 / 16).round().astype(np.uint8)
            truth[item] = NAMES[int(digits.target[j])]
        else:  # blank or noise: outside the label set
            pixels = (np.zeros((8, 8)) if j % 2 else rng.integers(0, 256, (8, 8))).astype(np.uint8)
            truth[item] = NONE
        name = f"{j:04d}.png"
        Image.fromarray(pixels, mode="L").save(docs / "digits" / name)
        rows.append({"id": item, "path": str(docs / "digits" / name), "ref": f"/data/local-files/?d=digits/{name}"})
    with open(work / "manifest.csv", "w", encoding="utf-8", newline="") as f:
        import csv

        w = csv.DictWriter(f, ["id", "path"])
        w.writeheader()
        w.writerows({"id": r["id"], "path": r["path"]} for r in rows)
    seed = rng.choice(args.n, 30, replace=False)
    with open(work / "seed.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        w.writerows([rows[i]["id"], truth[rows[i]["id"]]] for i in seed)
    # 2. the seed model
    meta = train_checkpoint(work / "model.pt", pool=work / "manifest.csv", labels=work / "seed.csv", label_names=NAMES,
                            width=64, depth=1, epochs=60, lr=3e-3, batch_size=32, device="cpu", force=True)
    out["seed_train_accuracy"] = meta["metrics"]["train_accuracy"]
    pool = jacal.io.open_pool(work / "manifest.csv", image_size=(8, 8), channels=1)
    x_all = pool.materialize()

    ls = serve = None
    try:
        # 3. Label Studio on 127.0.0.1, in its own venv, with Local Files serving
        port = free_port()
        secret = work / "ls-user.json"  # kept, so a rerun on the same --workdir reuses the user and its data
        if not secret.exists():
            secret.write_text(json.dumps({"token": secrets.token_hex(20), "password": secrets.token_hex(8)}))
        legacy, password = (json.loads(secret.read_text())[k] for k in ("token", "password"))
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(work / "ls-data"),
               "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_SERVING_ENABLED": "true",
               "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(docs), "LOCAL_FILES_DOCUMENT_ROOT": str(docs),
               "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false", "OMP_NUM_THREADS": "1",
               "LATEST_VERSION_CHECK": "false", "LABEL_STUDIO_LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false",
               "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}
        env.pop("VIRTUAL_ENV", None)
        ls_log = open(work / "label-studio.log", "w")
        ls = subprocess.Popen(["nice", "-n", "15", ls_bin, "start", "--internal-host", "127.0.0.1", "--port", str(port),
                               "--no-browser", "--username", "jacal@example.com", "--password", password,
                               "--user-token", legacy, "--enable-legacy-api-token"],
                              stdout=ls_log, stderr=subprocess.STDOUT, env=env, cwd=work)
        out["label_studio_pid"] = ls.pid
        url = f"http://127.0.0.1:{port}"
        t = time.perf_counter()
        wait_for(url + "/health", args.startup_timeout, ls)
        out["label_studio_start_s"] = round(time.perf_counter() - t, 1)
        api = API(url, f"Token {legacy}")
        pat_file = work / "ls-pat.txt"
        if not pat_file.exists():  # a personal access token: a JWT refresh token (one per user)
            pat_file.write_text(api("POST", "/api/token/", {})["token"])
        pat = pat_file.read_text().strip()
        project = api("POST", "/api/projects", {"title": "jacal live loop", "label_config": CONFIG,
                                                "sampling": "Uncertainty sampling", "show_collab_predictions": True})
        pid = project["id"]
        api("POST", "/api/storages/localfiles", {"project": pid, "path": str(docs / "digits"), "title": "digits",
                                                 "use_blob_urls": False})
        api("POST", f"/api/projects/{pid}/import", [{"data": {"image": r["ref"], "id": r["id"]}} for r in rows])
        tasks = api("GET", f"/api/tasks?project={pid}&page_size=1000")["tasks"]
        task_item = {t["id"]: t["data"]["id"] for t in tasks}
        out["tasks_imported"] = len(tasks)
        assert len(tasks) == len(rows), len(tasks)

        # 4. jacal serve as the ML backend
        sport = free_port()
        shutil.rmtree(work / "state", ignore_errors=True)  # a fresh model line each run
        serve_log = open(work / "jacal-serve.log", "w")
        serve = subprocess.Popen([sys.executable, "-m", "jacal.cli.app", "serve", "--model", str(work / "model.pt"),
                                  "--port", str(sport), "--state-dir", str(work / "state"), "--document-root", str(docs),
                                  "--label-studio-url", url, "--api-key", pat, "--epochs", "60", "--threads", "1",
                                  "--json"], stdout=serve_log, stderr=subprocess.STDOUT, cwd=work,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
        serve_url = f"http://127.0.0.1:{sport}"
        wait_for(serve_url + "/health", 300, serve)
        ml = api("POST", "/api/ml", {"url": serve_url, "project": pid, "title": "jacal", "is_interactive": False,
                                     "auto_update": True})
        out["ml_backend_state"] = ml.get("state")

        def refresh_and_check(version, model_file, served):
            """Every task has a prediction of ``version``; /next serves jacal's first pick."""
            for _ in range(120):
                tasks = api("GET", f"/api/tasks?project={pid}&page_size=1000&fields=all")["tasks"]
                have = [t for t in tasks if any(p.get("model_version") == version for p in t.get("predictions", []))]
                if len(have) == len(tasks):
                    break
                time.sleep(2)
            model = load_model_file(model_file).model
            ref = jacal.acquire(model, x_all, 1, strategy="jacobian")
            open_ids = {task_item[t["id"]] for t in tasks if not t.get("annotations")}
            order = [pool.ids[i] for i in np.argsort(-ref.scores, kind="stable") if pool.ids[i] in open_ids]
            nxt = api("GET", f"/api/projects/{pid}/next")
            return {"predicted_tasks": len(have), "tasks": len(tasks), "next_item": task_item[nxt["id"]],
                    "jacal_first": order[0], "next_is_jacals_first": task_item[nxt["id"]] == order[0],
                    "next_in_jacals_top3": task_item[nxt["id"]] in order[:3], "_next": nxt}

        api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
            {"selectedItems": {"all": True, "excluded": []}, "project": str(pid)})
        api("PATCH", f"/api/projects/{pid}", {"model_version": "jacal"})  # valid once predictions carry it
        check = refresh_and_check("jacal", work / "model.pt", set())
        out["round0"] = {k: v for k, v in check.items() if not k.startswith("_")}
        served = []
        nxt = check["_next"]
        previous = "jacal"
        for rnd in range(1, args.rounds + 1):
            for j in range(args.k):  # annotators label what /next serves
                item = task_item[nxt["id"]]
                served.append(item)
                api("POST", f"/api/tasks/{nxt['id']}/annotations",
                    {"result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                 "value": {"choices": [truth[item]]}}], "task": nxt["id"], "project": pid})
                if j < args.k - 1:  # the round's last task submitted, the annotator waits for the new model:
                    # a task /next has served stays locked to its annotator (Label Studio's task lock comes
                    # before the queue), so one opened now would be served again after the retraining
                    nxt = api("GET", f"/api/projects/{pid}/next")
            t = time.perf_counter()
            asked = time.time() - 1
            api("POST", f"/api/ml/{ml['id']}/train", {"use_ground_truth": False})
            for _ in range(600):  # annotation webhooks may have trained already: wait for the job after this one
                with urllib.request.urlopen(serve_url + "/health", timeout=10) as resp:
                    health = json.loads(resp.read())
                job = health.get("last_job") or {}
                if (health["model_version"] != previous and not health["training"]
                        and job.get("status") in ("done", "failed") and job.get("requested", 0) >= asked):
                    break
                if job.get("status") == "failed":
                    raise RuntimeError(f"training failed: {job.get('error')}")
                time.sleep(1)
            train_s = round(time.perf_counter() - t, 1)
            version = previous = health["model_version"]
            check = refresh_and_check(version, work / "state" / "models" / f"{version}.pt", set(served))
            nxt = check.pop("_next")
            out["rounds"].append({"round": rnd, "version": health["model_version"], "train_s": train_s,
                                  "n_labeled": job.get("n_labeled"), "n_out_of_set": job.get("n_out_of_set"),
                                  "train_accuracy": job.get("train_accuracy"), "refreshed": job.get("refreshed"),
                                  "served_out_of_set": sum(truth[i] == NONE for i in served),
                                  "training_jobs_so_far": sum(j.get("status") == "done" for j in json.loads(
                                      (work / "state" / "state.json").read_text())["jobs"]), **check})
        out["served_twice"] = len(served) - len(set(served))
        labeled = [i for i in served if truth[i] != NONE]
        ok = (all(r["predicted_tasks"] == r["tasks"] for r in out["rounds"]) and out["served_twice"] == 0
              and all(r["n_labeled"] is not None and r["n_labeled"] >= len(labeled[:r["round"] * args.k]) - args.k
                      for r in out["rounds"])
              and len(out["rounds"]) == args.rounds and len({r["version"] for r in out["rounds"]} | {"jacal"}) == args.rounds + 1)
        out["next_is_jacals_first_every_round"] = bool(out["round0"]["next_is_jacals_first"]) and all(
            r["next_is_jacals_first"] for r in out["rounds"])
        out["ok"] = bool(ok) and out["next_is_jacals_first_every_round"]
    except Exception as err:  # noqa: BLE001 - reported in the JSON, servers stopped below
        out["ok"] = False
        out["error"] = f"{type(err).__name__}: {err}"
    finally:
        stop(serve, "jacal_serve", out)
        stop(ls, "label_studio", out)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
