"""`jacal serve` under load and faults: mixed valid and garbage traffic, kills and stops; prints JSON.

    nice -n 15 python benchmarks/serve_faults.py [--requests 1000] [--clients 20] [--garbage 0.1]

A real `jacal serve` process on 127.0.0.1 (a 64-32-10 MLP on sklearn's 8×8 digits, so it stays cheap)
beside a stand-in Label Studio (a local HTTP server: token refresh, the project's export, the model
version PATCH and "Retrieve Predictions", which calls the server's /predict back for every task of
the project, as Label Studio does). The project has 60 tasks; one of them names an image that does
not exist. Phases, in order:

1. **load**: ``--requests`` requests from ``--clients`` threads, a ``--garbage`` share of them
   garbage, cycling over: JSON nested 200,000 deep, a 196-byte PNG whose header claims 30000×30000,
   a real 144-megapixel PNG (140 kB), a FIFO, a path outside the document root, a symlink out of it,
   a ``file://`` URI outside it, and a 400 MB body streamed in 1 MB chunks. The valid requests are
   /predict of 1-5 tasks (95%) and annotation webhooks (5%; each first adds an annotation to the
   project). A separate thread polls /health every 0.1 s throughout. Reported: status counts (per
   kind), latency percentiles, /health's worst latency, the server's RSS idle (after warm-up) and
   peak (``VmHWM``);
2. **faults**: SIGTERM during a long training, restart (the interrupted job re-runs), SIGKILL during
   a long training, restart, then SIGKILL and SIGTERM at random moments of a burst of webhooks and
   short trainings (state and model writes), each followed by a restart. After each: the exit code
   and time, whether the state loads, the versions and the annotations the last version was trained
   on against those in the project;
3. **second server** on the running server's state folder; **damaged states** (7 kinds): the exit
   code and the stderr lines of ``jacal serve``;
4. **unreadable image**: after the last retraining, how many of the project's other tasks carry the
   new version's prediction (Label Studio's refresh) and the reason the unreadable one got.

Targets: 0 answers 5xx, /health within 1 s throughout, peak RSS ≤ 1.5× idle, SIGTERM exit 0
within 10 s, the second server refused in one line, every damaged state one line and exit 1, the
new version on every readable task.
"""
from __future__ import annotations

import argparse
import datetime
import http.server
import json
import os
import platform
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

NAMES = [str(i) for i in range(10)]
CONFIG = ('<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
          + "".join(f'<Choice value="{n}"/>' for n in NAMES) + '<Choice value="none of these"/></Choices></View>')
TOKEN = "bench.refresh.token"
N_TASKS, FIRST_ANNOTATED, MISSING_TASK = 60, 10, 7
GARBAGE = ["nested_json", "bomb_png", "big_png", "fifo", "outside_path", "symlink_out", "file_uri_out", "body_400mb"]


# ------------------------------------------------------------------------------------------ the stand-in Label Studio


class Project:
    """The project's tasks and annotations, and what each "Retrieve Predictions" got back."""

    def __init__(self, labels):
        self.lock = threading.Lock()
        self.labels = labels
        self.annotated = set(range(FIRST_ANNOTATED))
        self.serve_url = None
        self.refreshes = []  # (version, {task id: model_version or error})

    def task(self, i, with_annotation):
        image = "missing.png" if i == MISSING_TASK else f"/data/local-files/?d=img/{i:02d}.png"
        t = {"id": i, "project": 3, "data": {"image": image, "id": f"item {i}"}, "annotations": []}
        if with_annotation and i in self.annotated:
            t["annotations"] = [{"id": 1000 + i, "was_cancelled": False, "task": i,
                                 "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                             "value": {"choices": [NAMES[self.labels[i]]]}}]}]
        return t

    def annotate_one(self):
        with self.lock:
            rest = [i for i in range(N_TASKS) if i not in self.annotated]
            if rest:
                self.annotated.add(rest[0])

    def export(self):
        with self.lock:
            return [self.task(i, True) for i in range(N_TASKS)]


PROJECT: Project = None  # set in main


class FakeLabelStudio(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the server was killed mid-call: that is the point
            pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None

    def do_POST(self):
        body = self._body()
        if self.path == "/api/token/refresh/":
            return self._answer(200 if body == {"refresh": TOKEN} else 401, {"access": "bench-access"})
        if self.path.startswith("/api/dm/actions"):  # Retrieve Predictions: Label Studio calls /predict back
            tasks = [PROJECT.task(i, False) for i in range(N_TASKS)]
            try:
                _, out = post(PROJECT.serve_url + "/predict", {"tasks": tasks, "label_config": CONFIG, "project": "3"})
                got = {t["id"]: (r.get("model_version") if "result" in r else "error: " + r.get("error", ""))
                       for t, r in zip(tasks, out.get("results", []))}
                PROJECT.refreshes.append((out.get("model_version"), got))
            except Exception as err:  # noqa: BLE001 - recorded, the benchmark reports it
                PROJECT.refreshes.append((None, {"error": repr(err)}))
            return self._answer(200, {})
        self._answer(404, {})

    def do_PATCH(self):
        self._body()
        self._answer(200, {})

    def do_GET(self):
        if self.headers.get("Authorization") != "Bearer bench-access":
            return self._answer(401, {})
        if self.path.startswith("/api/projects/3/export"):
            return self._answer(200, PROJECT.export())
        self._answer(404, {})


# ------------------------------------------------------------------------------------------ HTTP helpers


def post(url, body, timeout=60, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read())
        except ValueError:
            return err.code, {}


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def stream_400mb(port):
    """POST a 400 MB body in 1 MB chunks (chunked encoding); the status the server answers, or 0."""
    chunk = b"1" * (1 << 20)
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        s.settimeout(0.0)
        for _ in range(400):
            try:
                answer += s.recv(65536)
            except (BlockingIOError, InterruptedError):
                pass
            if answer:
                break
            try:
                s.settimeout(30)
                s.sendall(b"100000\r\n" + chunk + b"\r\n")
                s.settimeout(0.0)
            except (BrokenPipeError, ConnectionResetError):
                break
        s.settimeout(10)
        try:
            while b"\r\n" not in answer:
                more = s.recv(65536)
                if not more:
                    break
                answer += more
        except (socket.timeout, ConnectionError):
            pass
    head = answer.split(b"\r\n", 1)[0].split()
    return int(head[1]) if len(head) > 1 and head[1].isdigit() else 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid, field="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def png(width, height, idat):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------ the server process


class Server:
    live = []  # every server started, killed at exit if still running

    def __init__(self, work, ls_url, epochs, log_name):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(work / log_name, "w")
        cmd = [sys.executable, "-m", "jacal.cli.app", "serve", "--model", str(work / "model.pt"),
               "--port", str(self.port), "--state-dir", str(work / "state"), "--document-root", str(work / "docs"),
               "--label-studio-url", ls_url, "--api-key", TOKEN, "--epochs", str(epochs), "--threads", "1",
               "--train-every", "20", "--debounce", "5", "--json"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.started = time.time()
        Server.live.append(self.proc)

    def wait_up(self, timeout=600):  # a start imports torch: minutes on a busy shared machine under nice
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {Path(self.log.name).read_text()[-500:]}")
            try:
                return get(self.url + "/health", 2)
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                time.sleep(0.1)
        raise RuntimeError("server did not come up")

    def health(self):
        return get(self.url + "/health", 5)

    def wait_training(self, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            if self.health()["training"]:
                return True
            time.sleep(0.05)
        return False

    def wait_idle(self, timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            h = self.health()
            if not h["training"] and not h["queued"]:
                return h
            time.sleep(0.1)
        return self.health()

    def signal(self, sig, timeout=30):
        t0 = time.time()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code, round(time.time() - t0, 3)


def state_summary(work):
    path = work / "state" / "state.json"
    if not path.exists():
        return {"versions": [], "jobs": []}
    data = json.loads(path.read_text())
    return {"versions": [v["version"] for v in data["versions"]],
            "last_version_items": (data["versions"][-1]["n_labeled"] if data["versions"] else 0),
            "jobs": [j["status"] for j in data["jobs"][-4:]]}


def readable_annotated():
    return len([i for i in PROJECT.annotated if i != MISSING_TASK])


# ------------------------------------------------------------------------------------------ phases


def load_phase(srv, work, args):
    rng = random.Random(0)
    n_garbage = int(round(args.requests * args.garbage))
    kinds = ["garbage"] * n_garbage + ["valid"] * (args.requests - n_garbage)
    rng.shuffle(kinds)
    plan, g = [], 0
    for k in kinds:
        if k == "garbage":
            plan.append(GARBAGE[g % len(GARBAGE)])
            g += 1
        else:
            plan.append("webhook" if rng.random() < 0.05 else "predict")
    refs = {"fifo": "fifo.png", "outside_path": str(work / "outside" / "secret.png"), "symlink_out": "img/link.png",
            "file_uri_out": (work / "outside" / "secret.png").as_uri(), "bomb_png": "bomb.png", "big_png": "big.png"}
    nested = b"[" * 200_000 + b"]" * 200_000

    def one(i):
        kind = plan[i]
        t0 = time.perf_counter()
        try:
            if kind == "predict":
                start = (i * 7) % (N_TASKS - 5)
                tasks = [PROJECT.task(j, False) for j in range(start, start + 1 + i % 5)]
                status, body = post(srv.url + "/predict", {"tasks": tasks, "label_config": CONFIG})
                ok = status == 200 and len(body["results"]) == len(tasks)
            elif kind == "webhook":
                PROJECT.annotate_one()
                status, _ = post(srv.url + "/webhook", {"action": "ANNOTATION_CREATED",
                                                        "project": {"id": 3, "label_config": CONFIG}})
                ok = status == 201
            elif kind == "nested_json":
                status, _ = post(srv.url + "/predict", None, raw=nested)
                ok = status == 400
            elif kind == "body_400mb":
                status = stream_400mb(srv.port)
                ok = status == 413
            else:  # an image that must get no prediction (and a reason), in a request of two tasks
                tasks = [{"id": 900 + i, "data": {"image": refs[kind]}}, PROJECT.task(0, False)]
                status, body = post(srv.url + "/predict", {"tasks": tasks, "label_config": CONFIG})
                r = body.get("results", [{}, {}])
                ok = status == 200 and "result" not in r[0] and "result" in r[1]
        except Exception as err:  # noqa: BLE001 - a transport failure is counted, not raised
            status, ok = f"exception {type(err).__name__}", False
        return kind, status, ok, time.perf_counter() - t0

    health = {"polls": 0, "over_1s": 0, "failed": 0, "max_s": 0.0}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                get(srv.url + "/health", 5)
                dt = time.perf_counter() - t0
                health["max_s"] = max(health["max_s"], dt)
                health["over_1s"] += dt > 1.0
            except Exception:  # noqa: BLE001
                health["failed"] += 1
            health["polls"] += 1
            stop.wait(0.1)

    idle = rss_mb(srv.proc.pid)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        answers = list(pool.map(one, range(args.requests)))
    wall = time.perf_counter() - t0
    srv.wait_idle(180)  # the trainings the webhooks started, and their refreshes
    stop.set()
    poller.join()
    peak = rss_mb(srv.proc.pid, "VmHWM")
    counts, by_kind = {}, {}
    for kind, status, ok, _ in answers:
        counts[str(status)] = counts.get(str(status), 0) + 1
        d = by_kind.setdefault(kind, {"n": 0, "as_expected": 0, "statuses": {}})
        d["n"] += 1
        d["as_expected"] += ok
        d["statuses"][str(status)] = d["statuses"].get(str(status), 0) + 1
    lat = sorted(a[3] for a in answers)
    valid_lat = sorted(a[3] for a in answers if a[0] in ("predict", "webhook"))

    def pct(v, q):
        return round(float(np.percentile(v, q)), 4)

    return {"requests": args.requests, "clients": args.clients, "garbage": n_garbage, "wall_s": round(wall, 2),
            "status_counts": counts, "by_kind": by_kind,
            "answers_5xx": sum(v for k, v in counts.items() if k.startswith("5")),
            "latency_s": {"p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99), "max": round(lat[-1], 4)},
            "latency_valid_s": {"p50": pct(valid_lat, 50), "p95": pct(valid_lat, 95), "p99": pct(valid_lat, 99)},
            "health": {**health, "max_s": round(health["max_s"], 4)},
            "rss_mb": {"idle": round(idle, 1), "peak": round(peak, 1), "ratio": round(peak / idle, 3)},
            "server_alive": srv.proc.poll() is None, **state_summary(work),
            "annotations_readable": readable_annotated()}


def restart(work, ls_url, epochs, name):
    srv = Server(work, ls_url, epochs, name)
    srv.wait_up()
    PROJECT.serve_url = srv.url
    return srv


def fault(work, ls_url, name, sig, during, rng):
    """Start a server, make it busy (``during``: a long training, or writes), send ``sig``, restart."""
    long_run = during == "training"
    srv = restart(work, ls_url, 1_000_000 if long_run else 30, f"{name}.log")
    if long_run:
        post(srv.url + "/webhook", {"action": "START_TRAINING", "project": {"id": 3, "label_config": CONFIG}})
        srv.wait_training()
        time.sleep(1.0)
    else:  # a burst of annotation webhooks (state writes) and short trainings (model + state writes)
        end = time.time() + rng.uniform(1.0, 4.0)
        while time.time() < end:
            PROJECT.annotate_one()
            post(srv.url + "/webhook", {"action": "START_TRAINING" if rng.random() < 0.3 else "ANNOTATION_CREATED",
                                        "project": {"id": 3, "label_config": CONFIG}})
            time.sleep(rng.uniform(0.0, 0.15))
    before = state_summary(work)
    code, took = srv.signal(sig)
    after_stop = state_summary(work)
    srv = restart(work, ls_url, 30, f"{name}.restart.log")  # the next start: unfinished jobs re-run
    h = srv.wait_idle(180)
    out = {"fault": name, "signal": signal.Signals(sig).name, "during": during, "exit_code": code, "exit_s": took,
           "versions_before": before["versions"], "jobs_after_stop": after_stop["jobs"],
           "restart_ok": True, "model_version_after_restart": h["model_version"], **state_summary(work),
           "annotations_readable": readable_annotated()}
    out["no_annotation_lost"] = out["last_version_items"] == out["annotations_readable"]
    out["orphan_tmp_files"] = [p.name for p in (work / "state").rglob("*.tmp")]
    return srv, out


def cli_once(work, state_dir, port=None):
    cmd = [sys.executable, "-m", "jacal.cli.app", "serve", "--model", str(work / "model.pt"), "--state-dir",
           str(state_dir), "--port", str(port or free_port()), "--document-root", str(work / "docs")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    return p.returncode, lines


def damaged_states(work):
    import jacal

    out = []
    base = {"schema": 1, "base_version": "jacal", "base_model": str(work / "model.pt"), "versions": [], "jobs": []}
    cases = {"version without file": {"versions": [{"version": "jacal.1"}]}, "versions: 5": {"versions": 5},
             "jobs: \"x\"": {"jobs": "x"}, "versions: [5]": {"versions": [5]}, "jobs: [3]": {"jobs": [3]},
             "file outside the folder": {"versions": [{"version": "jacal.1", "file": "../../etc/passwd"}]},
             "not JSON": None}
    for name, damage in cases.items():
        state = work / f"damaged-{len(out)}"
        (state / "models").mkdir(parents=True)
        jacal.save_checkpoint(state / "models" / "jacal.1.pt", jacal.mlp(64, 10, width=4, depth=1, seed=0))
        (state / "state.json").write_text("{not json" if damage is None else json.dumps({**base, **damage}))
        code, lines = cli_once(work, state)
        out.append({"damage": name, "exit_code": code, "stderr_lines": len(lines),
                    "names_file": bool(lines) and str(state / "state.json") in lines[0],
                    "message": lines[0][:200] if lines else ""})
    return out


def main():
    global PROJECT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--garbage", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    import jacal
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="jacal-serve-faults-"))
    (work / "docs" / "img").mkdir(parents=True)
    (work / "outside").mkdir()
    d = jacal.load_dataset("digits", n_train=300, seed=0)
    model = jacal.mlp(64, 10, width=32, depth=1, seed=0)
    jacal.train(model, d, epochs=5, seed=0)
    jacal.save_checkpoint(work / "model.pt", model.eval(), metadata={
        "input_shape": [1, 8, 8], "label_names": NAMES, "train": {"epochs": 30, "lr": 0.01, "batch_size": 16}})
    for i in range(N_TASKS):
        if i != MISSING_TASK:
            Image.fromarray((d.x_test[i, 0].numpy() * 255).round().astype(np.uint8), mode="L").save(
                work / "docs" / "img" / f"{i:02d}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(work / "outside" / "secret.png")
    (work / "docs" / "img" / "link.png").symlink_to(work / "outside" / "secret.png")
    os.mkfifo(work / "docs" / "fifo.png")
    (work / "docs" / "bomb.png").write_bytes(png(30000, 30000, zlib.compress(b"\0" * 30001)))
    rows = zlib.compressobj()
    (work / "docs" / "big.png").write_bytes(png(12000, 12000, b"".join(rows.compress(b"\0" * 12001)
                                                                       for _ in range(12000)) + rows.flush()))
    PROJECT = Project([int(v) for v in d.y_test[:N_TASKS]])
    ls = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeLabelStudio)
    threading.Thread(target=ls.serve_forever, daemon=True).start()
    ls_url = f"http://127.0.0.1:{ls.server_address[1]}"

    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=Path(__file__).parent).stdout.strip(),
              "hardware": f"{os.cpu_count()}-core {platform.machine()} CPU, no GPU",
              "command": "nice -n 15 python benchmarks/serve_faults.py " + " ".join(sys.argv[1:])}

    # 1. load
    srv = restart(work, ls_url, 30, "load.log")
    for _ in range(5):  # warm-up: the idle figure is a server that has answered
        post(srv.url + "/predict", {"tasks": [PROJECT.task(j, False) for j in range(5)], "label_config": CONFIG})
    time.sleep(1.0)
    result["load"] = load_phase(srv, work, args)
    code, took = srv.signal(signal.SIGTERM)
    result["load"]["sigterm_after_load"] = {"exit_code": code, "exit_s": took}

    # 2. faults
    faults = []
    for name, sig, during in [("sigterm_training", signal.SIGTERM, "training"),
                              ("sigkill_training", signal.SIGKILL, "training"),
                              ("sigkill_writes_1", signal.SIGKILL, "writes"), ("sigkill_writes_2", signal.SIGKILL, "writes"),
                              ("sigkill_writes_3", signal.SIGKILL, "writes"), ("sigterm_writes_1", signal.SIGTERM, "writes"),
                              ("sigterm_writes_2", signal.SIGTERM, "writes")]:
        srv, out = fault(work, ls_url, name, sig, during, rng)
        faults.append(out)
        if name != "sigterm_writes_2":
            srv.signal(signal.SIGTERM)
    result["faults"] = faults

    # 3. a second server on the running one's state folder; damaged states
    code, lines = cli_once(work, work / "state")
    result["second_server"] = {"exit_code": code, "stderr_lines": len(lines), "message": lines[0] if lines else ""}
    result["damaged_states"] = damaged_states(work)

    # 4. the project with one unreadable image: the last refresh
    post(srv.url + "/webhook", {"action": "START_TRAINING", "project": {"id": 3, "label_config": CONFIG}})
    h = srv.wait_idle(180)
    version, got = PROJECT.refreshes[-1] if PROJECT.refreshes else (None, {})
    others = [t for t in got if t != MISSING_TASK]
    result["unreadable_project"] = {"tasks": N_TASKS, "unreadable_task": MISSING_TASK, "version": h["model_version"],
                                    "refresh_version": version,
                                    "other_tasks_with_new_version": sum(got[t] == h["model_version"] for t in others),
                                    "other_tasks": len(others), "reason_given": got.get(MISSING_TASK, "")[:160],
                                    "health_unreadable_count": h["unreadable"]["count"]}
    code, took = srv.signal(signal.SIGTERM)
    logs = "".join(p.read_text() for p in work.glob("*.log"))
    result["token_in_logs"] = TOKEN in logs or "bench-access" in logs
    ls.shutdown()

    load, term = result["load"], [f for f in faults if f["signal"] == "SIGTERM"]
    up = result["unreadable_project"]
    result["targets"] = {
        "no_5xx": load["answers_5xx"] == 0,
        "garbage_answered_as_expected": all(v["as_expected"] == v["n"] for v in load["by_kind"].values()),
        "health_within_1s": load["health"]["over_1s"] == 0 and load["health"]["failed"] == 0,
        "peak_rss_at_most_1.5x_idle": load["rss_mb"]["ratio"] <= 1.5,
        "sigterm_exit_0_within_10s": all(f["exit_code"] == 0 and f["exit_s"] < 10 for f in term)
        and load["sigterm_after_load"]["exit_code"] == 0 and load["sigterm_after_load"]["exit_s"] < 10,
        "every_restart_resumes_with_no_annotation_lost": all(f["restart_ok"] and f["no_annotation_lost"] for f in faults),
        "second_server_refused_in_one_line": result["second_server"]["exit_code"] == 1
        and result["second_server"]["stderr_lines"] == 1,
        "damaged_states_one_line_exit_1": all(s["exit_code"] == 1 and s["stderr_lines"] == 1 and s["names_file"]
                                              for s in result["damaged_states"]),
        "new_version_on_every_readable_task": up["other_tasks_with_new_version"] == up["other_tasks"] > 0,
        "no_token_in_logs": not result["token_in_logs"]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    try:
        main()
    finally:
        for proc in Server.live:
            if proc.poll() is None:
                proc.kill()
