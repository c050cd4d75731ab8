"""jacal serve under the faults a long-running server meets: one test per fault of the server's
fault list (docs/guide/serve.md, "Security model" and "Troubleshooting").

Paths outside the document root, symlinks, FIFOs, credentials sent on redirects, a /setup that
would choose the Label Studio host, /health behind basic auth, nested JSON, decompression bombs,
large bodies, SIGTERM during training, two servers on one state folder, damaged and crashed
states, one unreadable image in a batch, the debounce, and what the log says (never a token)."""
import http.server
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

import jacal  # noqa: E402
from _cli import digits_model, run  # noqa: E402
from jacal.serve import MLBackend  # noqa: E402
from jacal.serve.app import create_app  # noqa: E402
from jacal.serve.labelstudio import LabelStudioClient  # noqa: E402

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CONFIG = ('<View><Image name="image" value="$image"/><Choices name="label" toName="image" choice="single">'
          + "".join(f'<Choice value="{n}"/>' for n in NAMES) + '<Choice value="none of these"/></Choices></View>')
TOKEN = "pat.refresh.token"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A model, a document root with 12 digit PNGs, and a folder outside it with a readable image."""
    from PIL import Image

    base = tmp_path_factory.mktemp("faults")
    ck, _, d = digits_model(base / "model.pt", metadata={"input_shape": [1, 8, 8], "label_names": NAMES,
                                                         "train": {"epochs": 2, "lr": 0.01, "batch_size": 16}})
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    for j in range(12):
        Image.fromarray((d.x_test[j, 0].numpy() * 255).round().astype(np.uint8), mode="L").save(root / f"{j:02d}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(outside / "secret.png")
    (outside / "secret.txt").write_text("not an image")
    return {"base": base, "root": root, "outside": outside, "model": ck, "y": d.y_test[:12]}


def task(i, ref, **extra):
    return {"id": i, "data": {"image": ref, "id": f"item {i}"}, "project": 3, **extra}


def backend(world, tmp_path, **kwargs):
    kwargs.setdefault("document_root", world["root"])
    return MLBackend(world["model"], state_dir=tmp_path / "state", **kwargs).start()


def predict(client, refs):
    return client.post("/predict", json={"tasks": [task(i, r) for i, r in enumerate(refs)], "label_config": CONFIG})


def ls_export(world, n=10):
    out = []
    for i in range(n):
        ann = {"id": 100 + i, "was_cancelled": False, "task": i,
               "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                           "value": {"choices": [NAMES[int(world["y"][i])]]}}]}
        out.append(task(i, f"/data/local-files/?d={i:02d}.png", annotations=[ann]))
    return out


class Recorder(http.server.BaseHTTPRequestHandler):
    """A second local HTTP server: records every request it receives (method, path, Authorization)."""

    seen = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).seen.append(("GET", self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


class FakeLS(http.server.BaseHTTPRequestHandler):
    """The few Label Studio calls jacal makes; ``redirect_to`` sends image fetches elsewhere with a 302."""

    export, calls, redirect_to = [], [], None

    def log_message(self, *args):
        pass

    def _answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        FakeLS.calls.append(("POST", self.path, self.headers.get("Authorization")))
        if self.path == "/api/token/refresh/":
            return self._answer(200 if body == {"refresh": TOKEN} else 401, {"access": "short-lived"})
        self._answer(200, {"ok": True})

    def do_PATCH(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        FakeLS.calls.append(("PATCH", self.path, self.headers.get("Authorization")))
        self._answer(200, {})

    def do_GET(self):
        FakeLS.calls.append(("GET", self.path, self.headers.get("Authorization")))
        if self.path.startswith("/data/upload/") and FakeLS.redirect_to:
            return self._answer(302, {}, [("Location", FakeLS.redirect_to + self.path)])
        if self.path.startswith("/api/projects/3/export"):
            return self._answer(200, FakeLS.export)
        self._answer(404, {})


def serve_http(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def fake_ls(world):
    server, url = serve_http(FakeLS)
    FakeLS.export, FakeLS.calls, FakeLS.redirect_to = ls_export(world), [], None
    yield url
    server.shutdown()


@pytest.fixture
def recorder():
    server, url = serve_http(Recorder)
    Recorder.seen = []
    yield url
    server.shutdown()


def errors_of(answer):
    return {r.get("error") for r in answer.json()["results"] if "result" not in r}


# ---------------------------------------------------------------------------------------------- security


def test_local_paths_are_confined_to_the_document_root_after_resolving_symlinks(world, tmp_path, monkeypatch):
    root, outside = world["root"], world["outside"]
    link_file, link_dir = root / "link.png", root / "out"
    if not link_file.exists():
        link_file.symlink_to(outside / "secret.png")
        link_dir.symlink_to(outside, target_is_directory=True)
    b = backend(world, tmp_path)
    client = TestClient(create_app(b))
    inside = [str(root / "00.png"), (root / "01.png").as_uri(), "02.png", "/data/local-files/?d=03.png"]
    escapes = [str(outside / "secret.png"), (outside / "secret.png").as_uri(), "../outside/secret.png",
               "link.png", "out/secret.png", "/data/local-files/?d=link.png", "/data/local-files/?d=out/secret.png"]
    opened, real_open = [], os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: (opened.append(os.path.realpath(path)),
                                                           real_open(path, *a, **k))[1])
    r = predict(client, inside + escapes)
    monkeypatch.setattr(os, "open", real_open)
    assert r.status_code == 200, r.text
    assert opened and not any(p.startswith(os.path.realpath(outside)) for p in opened), opened  # never opened
    results = r.json()["results"]
    assert all("result" in x for x in results[:4])  # inside the root, however written: read
    for ref, x in zip(escapes, results[4:]):  # outside, or a symlink out of it: never read, never classified
        assert "result" not in x and "leaves the document root" in x["error"], (ref, x)
    # the error is the same whether the outside file exists, is not an image, or is missing
    probes = [outside / "secret.png", outside / "secret.txt", outside / "missing.png", Path("/etc/shadow")]
    said = [predict(client, [str(p)]).json()["results"][0]["error"].replace(str(p), "P") for p in probes]
    assert len(set(said)) == 1, said
    b.stop()


def test_without_a_document_root_local_paths_are_refused(world, tmp_path, monkeypatch):
    monkeypatch.chdir(world["root"])
    b = backend(world, tmp_path, document_root=None)
    client = TestClient(create_app(b))
    refs = ["00.png", str(world["root"] / "00.png"), "../outside/secret.png", "../../../etc/passwd",
            (world["root"] / "00.png").as_uri()]
    results = predict(client, refs).json()["results"]
    for ref, x in zip(refs, results):
        assert "result" not in x and "--document-root" in x["error"], (ref, x)
    b.stop()


@pytest.mark.parametrize("token", ["legacy0token0abc", TOKEN])
def test_credentials_never_follow_a_redirect_to_another_host(world, fake_ls, recorder, token):
    FakeLS.redirect_to = recorder  # Label Studio's port redirects an image fetch to another port
    client = LabelStudioClient(fake_ls, token)
    with pytest.raises(jacal.JacalError, match="redirect"):
        client.fetch("/data/upload/3/x.png")
    assert all(auth is None for _, _, auth in Recorder.seen), Recorder.seen
    assert not any(token in str(s) or "short-lived" in str(s) for s in Recorder.seen)


def test_setup_without_a_label_studio_url_cannot_choose_the_host(world, tmp_path, recorder):
    b = backend(world, tmp_path)
    client = TestClient(create_app(b))
    r = client.post("/setup", json={"project": "3.1", "schema": CONFIG, "hostname": recorder,
                                    "access_token": "stolen-token"})
    assert r.status_code == 200
    x = predict(client, ["/data/upload/3/a.png"]).json()["results"][0]
    assert "result" not in x and "--label-studio-url" in x["error"]
    assert Recorder.seen == []  # no image and no export was fetched from the host /setup named
    b.stop()
    # behind basic auth, /setup comes from an authenticated Label Studio: its host is used
    b = MLBackend(world["model"], state_dir=tmp_path / "state2", document_root=world["root"]).start()
    auth = ("ls", "pw")
    client = TestClient(create_app(b, basic_auth=auth))
    assert client.post("/setup", json={"schema": CONFIG, "hostname": recorder, "access_token": "legacy0tok"},
                       auth=auth).status_code == 200
    assert b.client is not None and b.client.url == recorder
    b.stop()


def test_health_is_behind_basic_auth_and_a_wrong_password_says_so(world, tmp_path):
    b = backend(world, tmp_path)
    client = TestClient(create_app(b, basic_auth=("ls", "s3cret")))
    assert client.get("/health").status_code == 401
    wrong = client.get("/health", auth=("ls", "nope"))
    assert wrong.status_code == 401 and "wrong user or password" in wrong.json()["error"]
    assert client.get("/health", auth=("ls", "s3cret")).json()["status"] == "UP"
    b.stop()


# ---------------------------------------------------------------------------------------------- availability


def test_a_fifo_or_a_folder_as_an_image_is_refused_without_blocking(world, tmp_path):
    fifo = world["root"] / "pipe.png"
    if not fifo.exists():
        os.mkfifo(fifo)
    (world["root"] / "folder.png").mkdir(exist_ok=True)
    b = backend(world, tmp_path)
    client = TestClient(create_app(b))
    answer = []
    t = threading.Thread(target=lambda: answer.append(predict(client, ["pipe.png", "folder.png", "00.png"])),
                         daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # release the blocked reader before failing
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
        pytest.fail("a FIFO as an image path blocked /predict")
    results = answer[0].json()["results"]
    assert [("result" in x) for x in results] == [False, False, True]
    assert all("not a regular file" in x["error"] for x in results[:2]), results
    b.stop()


def _png(width, height, idat=b""):
    """A PNG whose header claims ``width`` × ``height`` (grayscale, 8 bit) with ``idat`` as its pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_nested_json_and_decompression_bombs_are_4xx(world, tmp_path):
    (world["root"] / "bomb.png").write_bytes(_png(30000, 30000, zlib.compress(b"\0" * 30001)))
    rows = zlib.compressobj()  # a real 12000 × 12000 PNG of zeros: 144 megapixels in ~140 kB
    data = b"".join(rows.compress(b"\0" * 12001) for _ in range(12000)) + rows.flush()
    (world["root"] / "big.png").write_bytes(_png(12000, 12000, data))
    b = backend(world, tmp_path, max_image_pixels=4_000_000)
    client = TestClient(create_app(b), raise_server_exceptions=False)
    r = client.post("/predict", content=b"[" * 200_000 + b"]" * 200_000)
    assert r.status_code == 400 and "nested" in r.json()["error"], r.text
    from PIL import ImageFile

    loads = []
    real_load = ImageFile.ImageFile.load
    ImageFile.ImageFile.load = lambda im: (loads.append(im.size), real_load(im))[1]
    try:
        r = predict(client, ["bomb.png", "big.png", "00.png"])
    finally:
        ImageFile.ImageFile.load = real_load
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert "too many pixels" in results[0]["error"] and "too many pixels" in results[1]["error"], results
    assert "result" in results[2]
    assert all(w * h <= 4_000_000 for w, h in loads), loads  # the big image was refused from its header
    b.stop()


def _uvicorn(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, port


def _raw_response(sock, timeout):
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionError):
        pass
    return data


def test_a_large_body_is_refused_before_it_is_read(world, tmp_path):
    b = backend(world, tmp_path)
    server, thread, port = _uvicorn(create_app(b, max_body=1 << 20))
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:  # announced: 400 MB, refused on the header
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 400000000\r\n\r\n" + b" " * 65536)
            assert _raw_response(s, 3).startswith(b"HTTP/1.1 413"), "a 400 MB Content-Length was not refused at once"
        with socket.create_connection(("127.0.0.1", port)) as s:  # streamed (chunked): refused at the cap
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            sent, answer = 0, b""
            s.settimeout(0.05)
            while sent < 64 << 20 and not answer:
                try:
                    s.sendall(b"10000\r\n" + b" " * 65536 + b"\r\n")
                    sent += 65536
                    answer = s.recv(65536)
                except socket.timeout:
                    continue
                except ConnectionError:
                    break
            answer += _raw_response(s, 3)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
            assert sent < 8 << 20, sent  # the server answered long before the client had sent 8 MB
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.should_exit = True
        thread.join(10)
        b.stop()


# ---------------------------------------------------------------------------------------------- state and faults


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_sigterm_during_a_long_training_exits_0_and_the_job_reruns_on_start(world, tmp_path, fake_ls):
    port, state = _free_port(), tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "jacal.cli.app", "serve", "--model", str(world["model"]),
                             "--port", str(port), "--state-dir", str(state), "--document-root", str(world["root"]),
                             "--label-studio-url", fake_ls, "--api-key", TOKEN, "--epochs", "1000000", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        json.loads(proc.stdout.readline())
        body = json.dumps({"action": "START_TRAINING", "project": {"id": 3, "label_config": CONFIG}}).encode()
        for _ in range(200):
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/webhook", data=body,
                                                              method="POST"), timeout=10).read()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        for _ in range(200):
            if _get(f"http://127.0.0.1:{port}/health")["training"]:
                break
            time.sleep(0.05)
        time.sleep(0.5)
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        took = time.time() - t0
        err = proc.stderr.read()
        assert code == 0 and took < 10, (code, took, err)
        assert "terminate called" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = json.loads((state / "state.json").read_text())
    assert saved["versions"] == [] and [j["status"] for j in saved["jobs"]] == ["interrupted"], saved
    b = MLBackend(world["model"], state_dir=state, document_root=world["root"], label_studio_url=fake_ls,
                  api_key=TOKEN, epochs=1, refresh=False).start()
    assert b.wait_idle(60)
    jobs = b.state.data["jobs"]
    assert [j["status"] for j in jobs] == ["rerun", "done"] and jobs[1]["rerun_of"] == jobs[0]["id"], jobs
    assert b.health()[1]["model_version"] == "jacal.1"
    b.stop()


def test_a_second_server_on_one_state_folder_is_refused_in_one_line(world, tmp_path):
    b = backend(world, tmp_path)
    with pytest.raises(jacal.JacalError, match="in use by another jacal serve"):
        backend(world, tmp_path)
    r = run("serve", "--model", world["model"], "--state-dir", tmp_path / "state", "--port", _free_port())
    assert r.exit_code == 1 and "in use by another jacal serve" in r.output and r.output.count("\n") == 1, r.output
    b.stop()
    backend(world, tmp_path).stop()  # released on stop


@pytest.mark.parametrize("damage", [
    {"versions": [{"version": "jacal.1"}]}, {"versions": 5}, {"jobs": "x"}, {"versions": [5]},
    {"jobs": [3]}, {"versions": [{"version": "jacal.1", "file": "../../model.pt"}]},
    {"versions": [{"version": 7, "file": "models/jacal.1.pt"}]}, "not json"])
def test_a_damaged_state_is_refused_in_one_line_naming_the_file(world, tmp_path, damage):
    state = tmp_path / "state"
    (state / "models").mkdir(parents=True)
    jacal.save_checkpoint(state / "models" / "jacal.1.pt", jacal.mlp(64, 10, width=4, depth=1, seed=0))
    data = {"schema": 1, "base_version": "jacal", "base_model": str(world["model"]), "versions": [], "jobs": []}
    (state / "state.json").write_text("{not json" if damage == "not json" else json.dumps({**data, **damage}))
    r = run("serve", "--model", world["model"], "--state-dir", state, "--port", _free_port())
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert r.output.startswith("error: ") and str(state / "state.json") in r.output, r.output


def test_a_crash_leaves_a_running_job_that_is_requeued_and_temporary_files_that_are_removed(world, tmp_path, fake_ls):
    state = tmp_path / "state"
    (state / "models").mkdir(parents=True)
    crashed = {"id": "abc", "project": "3", "action": "ANNOTATION_CREATED", "status": "running", "started": 1.0,
               "label_config": CONFIG}
    (state / "state.json").write_text(json.dumps({"schema": 1, "base_version": "jacal", "base_model": "m",
                                                  "versions": [], "jobs": [crashed]}))
    orphans = [state / ".state.json.x1.tmp", state / "models" / ".jacal.1.pt.x2.tmp"]
    for p in orphans:
        p.write_bytes(b"half")
    b = MLBackend(world["model"], state_dir=state, document_root=world["root"], label_studio_url=fake_ls,
                  api_key=TOKEN, epochs=1, refresh=False).start()
    assert not any(p.exists() for p in orphans)
    assert b.wait_idle(60)
    assert [(j["id"] == "abc", j["status"]) for j in b.state.data["jobs"]] == [(True, "rerun"), (False, "done")]
    b.stop()


def test_unfinished_jobs_that_cannot_be_rerun_are_recorded_as_abandoned(world, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    jobs = [{"id": "a", "project": "3", "status": "queued"}, {"id": "b", "project": "3", "status": "running"}]
    (state / "state.json").write_text(json.dumps({"schema": 1, "base_version": "jacal", "base_model": "m",
                                                  "versions": [], "jobs": jobs}))
    b = backend(world, tmp_path)  # no --label-studio-url: the project's export cannot be fetched
    assert b.wait_idle(5) and not b.health()[1]["queued"]
    saved = b.state.data["jobs"]
    assert [(j["id"], j["status"]) for j in saved] == [("a", "abandoned"), ("b", "abandoned")], saved
    assert "--label-studio-url" in saved[-1]["error"]
    b.stop()


def test_annotations_made_while_the_server_was_down_are_trained_on_at_the_next_start(world, tmp_path, fake_ls):
    def start():
        return MLBackend(world["model"], state_dir=tmp_path / "state", document_root=world["root"],
                         label_studio_url=fake_ls, api_key=TOKEN, epochs=1, refresh=False).start()

    b = start()
    b.webhook({"action": "START_TRAINING", "project": {"id": 3, "label_config": CONFIG}})
    assert b.wait_idle(60) and b.stop()
    FakeLS.export = ls_export(world, 11)  # one more annotation while it was down: its webhook went nowhere
    b = start()
    assert b.wait_idle(60) and b.stop()
    versions = json.loads((tmp_path / "state" / "state.json").read_text())["versions"]
    assert [(v["version"], v["n_labeled"]) for v in versions] == [("jacal.1", 10), ("jacal.2", 11)]
    b = start()  # nothing new: no new version
    assert b.wait_idle(60)
    assert b.state.current_version == "jacal.2" and b.state.last_job()["status"] == "skipped"
    b.stop()


def test_atomic_state_writes_fsync_the_file_before_the_rename_and_the_folder_after(world, tmp_path, monkeypatch):
    b = backend(world, tmp_path)
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, c: (calls.append(("replace", Path(c).name)), real_replace(a, c))[1])
    b.state.record_job({"id": "j", "status": "queued"})
    assert calls == [("fsync", False), ("replace", "state.json"), ("fsync", True)], calls
    b.stop()


# ---------------------------------------------------------------------------------------------- Label Studio interplay


def test_one_unreadable_image_gets_a_reason_and_every_other_task_a_prediction(world, tmp_path, caplog):
    b = backend(world, tmp_path)
    client = TestClient(create_app(b))
    refs = [f"{j:02d}.png" for j in range(5)]
    refs[2] = "missing.png"
    with caplog.at_level(logging.INFO, logger="jacal.serve"):
        r = predict(client, refs)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [("result" in x) for x in results] == [True, True, False, True, True]
    assert all(x["model_version"] == "jacal" for x in results)
    assert "missing.png" in results[2]["error"]
    assert "task 2" in caplog.text and "missing.png" in caplog.text  # in jacal's log
    health = client.get("/health").json()  # and where an operator looks
    assert health["unreadable"]["count"] == 1 and health["unreadable"]["recent"][0]["task"] == 2
    b.stop()


def test_a_training_leaves_out_an_unreadable_image_and_says_so(world, tmp_path, fake_ls):
    FakeLS.export[3]["data"]["image"] = "/data/local-files/?d=gone.png"
    b = backend(world, tmp_path, label_studio_url=fake_ls, api_key=TOKEN, epochs=1, refresh=False)
    b.webhook({"action": "START_TRAINING", "project": {"id": 3, "label_config": CONFIG}})
    assert b.wait_idle(60)
    job = b.state.last_job()
    assert job["status"] == "done" and (job["n_labeled"], job["n_unreadable"]) == (9, 1), job
    assert "task 3" in job["unreadable"][0] and "gone.png" in job["unreadable"][0]
    b.stop()


def test_training_starts_after_n_annotations_without_waiting_out_the_quiet_time(world, tmp_path, fake_ls):
    b = backend(world, tmp_path, label_studio_url=fake_ls, api_key=TOKEN, train_every=3, debounce=600,
                epochs=1, refresh=False)
    client = TestClient(create_app(b))
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 3, "label_config": CONFIG}}
    for _ in range(2):
        assert client.post("/webhook", json=event).status_code == 201
    time.sleep(0.5)
    assert b.state.data["versions"] == [] and not b.health()[1]["training"]  # 2 < 3 and no quiet yet
    assert client.post("/webhook", json=event).status_code == 201
    assert b.wait_idle(30)
    assert [v["version"] for v in b.state.data["versions"]] == ["jacal.1"]
    b.stop()
    with pytest.raises(jacal.JacalError, match="train_every"):
        MLBackend(world["model"], train_every=0)


def test_the_log_says_what_an_operator_needs_and_never_a_token(world, tmp_path, fake_ls, caplog):
    b = backend(world, tmp_path, label_studio_url=fake_ls, api_key=TOKEN, epochs=1, debounce=0)
    client = TestClient(create_app(b, basic_auth=("ls", "pw-secret")))
    auth = ("ls", "pw-secret")
    with caplog.at_level(logging.DEBUG):
        client.post("/setup", json={"schema": CONFIG, "access_token": "setup-token-xyz"}, auth=auth)
        client.post("/predict", content=b"{bad", auth=auth)
        client.get("/health", auth=("ls", "wrong-pw"))
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3, "label_config": CONFIG}},
                    auth=auth)
        assert b.wait_idle(60)
        b.stop()
    text = caplog.text
    for secret in (TOKEN, "short-lived", "setup-token-xyz", "pw-secret", "wrong-pw"):
        assert secret not in text, secret
    assert "400" in text and "not JSON" in text  # a 4xx and its reason
    assert "401" in text
    assert "job" in text and "jacal.1" in text  # the job and the version it made
    saved = (tmp_path / "state" / "state.json").read_text()
    assert TOKEN not in saved and "short-lived" not in saved
