"""A two-round live active-learning loop against a real Label Studio server, with `jacal serve` as
its ML backend; prints JSON.

    python benchmarks/label_studio_live.py [--label-studio PATH] [--rounds 2] [--k 15] [--workdir DIR]
        [--stop-n 100] [--check-tasks 6] [--screenshots DIR] [--out FILE]

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
   storage; every item imported as a task. The config has the text areas ``al_reason`` and
   ``al_stop`` on the image, so each prediction carries its item's reason and its version's stop
   advice as ``textarea`` regions;
4. `jacal serve --stop-set` (``--stop-n`` held-out digits, never imported) connected as the
   project's ML backend; predictions retrieved for every task;
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
never trained on (the job's counts). And, for the initial version and each trained one: for
``--check-tasks`` tasks, the prediction Label Studio stored (read back through its REST API) holds
the ``al_reason`` and ``al_stop`` texts, equal to those jacal's ``/predict`` answers for the same
tasks, with the same score; the stop text is the one ``/health`` gives for that version; and
``/health``'s ``stop.history`` has one entry per version served so far, in order.

``--screenshots DIR`` drives headless Chromium (``/usr/bin/chromium``, through the DevTools
protocol with the ``websocket-client`` package, logged in with a session cookie) to take the Data
Manager's prediction column and one task's labeling view as PNGs. ``--out FILE`` also writes the
JSON summary to FILE.
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
CONFIG = ('<View><Image name="image" value="$image" maxWidth="240px"/><Choices name="label" toName="image" choice="single">'
          + "".join(f'<Choice value="{n}"/>' for n in NAMES) + f'<Choice value="{NONE}"/></Choices>'
          '<TextArea name="al_reason" toName="image" rows="1"/><TextArea name="al_stop" toName="image" rows="1"/>'
          '</View>')


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


def get_json(url, body=None, timeout=600):
    """GET (or POST ``body`` as JSON to) one of jacal serve's routes."""
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def texts(result):
    """``{from_name: text}`` of the ``textarea`` regions of one prediction's ``result``."""
    return {r["from_name"]: r["value"]["text"][0] for r in result or [] if r.get("type") == "textarea"}


def stop_line(entry):
    """The ``al_stop`` text jacal serve writes for a version's entry of ``/health``'s ``stop.history``."""
    return f"model {entry['model_version']}: {'stop labeling' if entry['stop'] else 'keep labeling'} — {entry['reason']}"


def check_explanations(api, pid, serve_url, version, tasks, state_file, n_sample):
    """What Label Studio stored for ``version`` against what jacal serve answers now.

    Every task: the stored prediction of ``version`` (from the task list) has the ``al_reason`` and
    ``al_stop`` texts, equal to those of jacal's ``/predict`` for all the project's tasks in one
    request (as "Retrieve Predictions" sends them), with the same score. ``n_sample`` tasks are also
    read one by one from ``/api/predictions``. ``/health``: the stop text is its entry for
    ``version``, and ``stop.history`` lists the first version and every trained one, once, in order.
    """
    answer = get_json(serve_url + "/predict", {"tasks": [{"id": t["id"], "data": t["data"]} for t in tasks],
                                               "label_config": CONFIG, "project": f"{pid}.0"})
    jacal_by_task = {t["id"]: r for t, r in zip(tasks, answer["results"])}
    health = get_json(serve_url + "/health")
    history = health["stop"]["history"]
    trained = json.loads(Path(state_file).read_text())["versions"] if Path(state_file).exists() else []
    served = ["jacal"] + [v["version"] for v in trained]  # the seed model's version, then each trained one
    entry = next((h for h in history if h["model_version"] == version), None)
    mismatches, checked, missing = [], 0, 0
    for t in tasks:
        stored = [p for p in t.get("predictions", []) if p.get("model_version") == version]
        if not stored:
            missing += 1
            continue
        got, want = texts(stored[-1].get("result")), jacal_by_task[t["id"]]
        want_texts = texts(want.get("result"))
        checked += 1
        same = (got.get("al_reason") is not None and got.get("al_reason") == want_texts.get("al_reason") == want["reason"]
                and got.get("al_stop") is not None and got.get("al_stop") == want_texts.get("al_stop")
                and entry is not None and got["al_stop"] == stop_line(entry)
                and abs(float(stored[-1]["score"]) - float(want["score"])) <= 1e-6 * max(1.0, abs(float(want["score"]))))
        if not same:
            mismatches.append({"task": t["id"], "stored": got, "stored_score": stored[-1].get("score"),
                               "jacal": want_texts, "jacal_score": want.get("score")})
    sample = sorted(tasks, key=lambda t: t["id"])[:: max(1, len(tasks) // max(1, n_sample))][:n_sample]
    sampled = []
    for t in sample:
        preds = api("GET", f"/api/predictions?task={t['id']}")
        preds = preds.get("results", preds) if isinstance(preds, dict) else preds
        mine = [p for p in preds if p.get("model_version") == version]
        got = texts(mine[-1]["result"]) if mine else {}
        sampled.append({"task": t["id"], "al_reason": got.get("al_reason"), "al_stop": got.get("al_stop"),
                        "equal_to_predict": bool(mine) and got == texts(jacal_by_task[t["id"]]["result"])})
    return {"tasks_checked": checked, "tasks_without_prediction": missing, "text_mismatches": len(mismatches),
            "mismatch_examples": mismatches[:3], "sampled_via_api_predictions": sampled,
            "sampled_equal": sum(s["equal_to_predict"] for s in sampled),
            "stop_history_versions": [h["model_version"] for h in history], "versions_served": served,
            "stop_history_one_per_version": [h["model_version"] for h in history] == served,
            "stop_advice": None if entry is None else {k: entry[k] for k in ("stop", "value", "round", "reason")}}


def ls_session(url, email, password):
    """Label Studio's session and CSRF cookies for ``email``, from its login form."""
    import http.cookiejar
    import urllib.parse

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(url + "/user/login/", timeout=120).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode({"email": email, "password": password, "csrfmiddlewaretoken": csrf}).encode()
    opener.open(urllib.request.Request(url + "/user/login/", data=form, headers={"Referer": url + "/user/login/"}),
                timeout=120).read()
    cookies = {c.name: c.value for c in jar}
    if "sessionid" not in cookies:
        raise RuntimeError("Label Studio's login form gave no session cookie")
    return cookies


class Chromium:
    """Headless Chromium driven through the DevTools protocol (``websocket-client``)."""

    def __init__(self, binary="/usr/bin/chromium"):
        import websocket

        self.port, self.profile = free_port(), tempfile.mkdtemp(prefix="jacal-chromium-")
        self.proc = subprocess.Popen(["nice", "-n", "15", binary, "--headless", "--no-sandbox", "--disable-gpu",
                                      "--no-first-run", f"--user-data-dir={self.profile}", "--window-size=1400,1000",
                                      f"--remote-debugging-port={self.port}", "--remote-allow-origins=*", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"http://127.0.0.1:{self.port}/json/version", 120, self.proc)
        page = next(t for t in get_json(f"http://127.0.0.1:{self.port}/json") if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=120)
        self.n = 0

    def __call__(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:  # events arrive between the answers
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def shot(self, url, file, marker, seconds=180, click=None):
        """Open ``url``, wait until the page's text holds ``marker``, click the element whose text is
        ``click`` (if any), scroll ``marker`` into view, save a PNG; True if the marker showed."""
        import base64

        def find(text, exact):
            test = "e.innerText.trim() === t" if exact else "e.innerText.includes(t)"
            return (f"(() => {{ const t = {json.dumps(text)}; const all = [...document.querySelectorAll('body *')]"
                    f".filter(e => e.innerText && {test}); return all.length ? all[all.length - 1] : null; }})()")

        def wait_text(text):
            end = time.time() + seconds
            while time.time() < end:
                time.sleep(2)
                body = self("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                            returnByValue=True)["result"].get("value", "")
                if text in body:
                    return True
            return False

        self("Page.navigate", url=url)
        seen = wait_text(marker)
        if click is not None:
            self("Runtime.evaluate", expression=f"{find(click, True)}?.click()")
            time.sleep(3)
            seen = wait_text(marker)
        self("Runtime.evaluate", expression=f"{find(marker, False)}?.scrollIntoView({{block: 'center'}})")
        time.sleep(3)  # the last renders
        png = self("Page.captureScreenshot", format="png")["data"]
        Path(file).write_bytes(base64.b64decode(png))
        return seen

    def close(self):
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.profile, ignore_errors=True)


def screenshots(folder, url, api, email, password, pid, task_id, marker, version):
    """The Data Manager with the prediction columns (a view of its own) and ``task_id``'s labeling view
    with ``version``'s prediction opened."""
    folder.mkdir(parents=True, exist_ok=True)
    keep = {"tasks:id", "tasks:predictions_results", "tasks:predictions_score", "tasks:total_annotations",
            "tasks:data.image"}
    cols = ["inner_id", "completed_at", "cancelled_annotations", "total_predictions", "annotators",
            "annotations_results", "annotations_ids", "predictions_model_versions", "file_upload", "storage_filename",
            "created_at", "updated_at", "updated_by", "avg_lead_time", "draft_exists", "data.id", "predictions_results",
            "predictions_score", "total_annotations", "id", "data.image", "comment_count", "unresolved_comment_count",
            "annotations_ids", "ground_truth", "comments", "agreement", "reviewed", "reviewers"]
    hidden = [f"tasks:{c}" for c in dict.fromkeys(cols) if f"tasks:{c}" not in keep]
    view = api("POST", "/api/dm/views", {"project": pid, "data": {
        "title": "jacal", "ordering": ["tasks:predictions_score"], "columnsWidth": {"tasks:predictions_results": 1000},
        "hiddenColumns": {"explore": hidden, "labeling": hidden}}})
    cookies = ls_session(url, email, password)
    t = time.perf_counter()
    browser = Chromium()
    try:
        for name, value in cookies.items():
            browser("Network.setCookie", name=name, value=value, url=url)
        dm = browser.shot(f"{url}/projects/{pid}/data?tab={view['id']}", folder / "data-manager.png", marker)
        lv = browser.shot(f"{url}/projects/{pid}/data?tab={view['id']}&task={task_id}", folder / "labeling-view.png",
                          marker, click=version)
    finally:
        browser.close()
    return {"data_manager": str(folder / "data-manager.png"), "data_manager_shows_reason": dm,
            "labeling_view": str(folder / "labeling-view.png"), "labeling_view_shows_reason": lv, "task": task_id,
            "seconds": round(time.perf_counter() - t, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label-studio", default=None, help="The label-studio executable (its own venv).")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--k", type=int, default=15, help="Tasks annotated per round.")
    ap.add_argument("--n", type=int, default=150, help="Digit images in the pool (plus 10 junk images).")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--startup-timeout", type=float, default=900, help="Seconds Label Studio may take to start.")
    ap.add_argument("--stop-n", type=int, default=100, help="Held-out digit images in the server's stop set.")
    ap.add_argument("--check-tasks", type=int, default=5,
                    help="Tasks whose predictions are also read one by one through /api/predictions.")
    ap.add_argument("--screenshots", default=None, help="Folder for PNGs of the Data Manager and a labeling view.")
    ap.add_argument("--out", default=None, help="Also write the JSON summary to this file.")
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
    # the stop set: held-out digits, outside the document root, never imported
    (work / "stop").mkdir(exist_ok=True)
    for j in range(args.stop_n):
        pixels = (digits.images[len(digits.images) - 1 - j] * 255 / 16).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(work / "stop" / f"{j:04d}.png")
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
        out["label_studio_version"] = (api("GET", "/api/version").get("release")
                                       or api("GET", "/api/version").get("label-studio-os-package", {}).get("version"))
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
                                  "--stop-set", str(work / "stop"), "--json"], stdout=serve_log, stderr=subprocess.STDOUT, cwd=work,
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
                    "next_in_jacals_top3": task_item[nxt["id"]] in order[:3], "_next": nxt, "_tasks": tasks}

        api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
            {"selectedItems": {"all": True, "excluded": []}, "project": str(pid)})
        api("PATCH", f"/api/projects/{pid}", {"model_version": "jacal"})  # valid once predictions carry it
        check = refresh_and_check("jacal", work / "model.pt", set())
        out["round0"] = {k: v for k, v in check.items() if not k.startswith("_")}
        t = time.perf_counter()
        out["round0"]["explained"] = check_explanations(api, pid, serve_url, "jacal", check["_tasks"],
                                                        work / "state" / "state.json", args.check_tasks)
        out["round0"]["check_s"] = round(time.perf_counter() - t, 1)
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
            t = time.perf_counter()
            explained = check_explanations(api, pid, serve_url, version, check.pop("_tasks"),
                                           work / "state" / "state.json", args.check_tasks)
            check["explained"], check["check_s"] = explained, round(time.perf_counter() - t, 1)
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
        every = [out["round0"]["explained"]] + [r["explained"] for r in out["rounds"]]
        out["explained"] = {
            "versions_checked": len(every), "tasks_checked": sum(e["tasks_checked"] for e in every),
            "text_mismatches": sum(e["text_mismatches"] for e in every),
            "tasks_without_prediction": sum(e["tasks_without_prediction"] for e in every),
            "sampled_via_api_predictions": sum(len(e["sampled_via_api_predictions"]) for e in every),
            "sampled_equal": sum(e["sampled_equal"] for e in every),
            "stop_history_one_per_version_every_round": all(e["stop_history_one_per_version"] for e in every),
            "stop_history_length": len(every[-1]["stop_history_versions"])}
        explained_ok = (out["explained"]["text_mismatches"] == 0 and out["explained"]["tasks_without_prediction"] == 0
                        and out["explained"]["tasks_checked"] == len(every) * len(tasks)
                        and out["explained"]["sampled_equal"] == out["explained"]["sampled_via_api_predictions"] > 0
                        and out["explained"]["stop_history_one_per_version_every_round"])
        if args.screenshots:
            out["screenshots"] = screenshots(Path(args.screenshots), url, api, "jacal@example.com", password, pid,
                                             nxt["id"], marker="from the boundary", version=version if out["rounds"] else "jacal")
        out["next_is_jacals_first_every_round"] = bool(out["round0"]["next_is_jacals_first"]) and all(
            r["next_is_jacals_first"] for r in out["rounds"])
        out["ok"] = bool(ok) and out["next_is_jacals_first_every_round"] and explained_ok
    except Exception as err:  # noqa: BLE001 - reported in the JSON, servers stopped below
        out["ok"] = False
        out["error"] = f"{type(err).__name__}: {err}"
    finally:
        stop(serve, "jacal_serve", out)
        stop(ls, "label_studio", out)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(out, indent=1, ensure_ascii=False)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
