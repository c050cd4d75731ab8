"""jacal serve as a Label Studio ML backend: /predict against the model itself, bad payloads as 4xx
with /health alive, training from annotations (in the body, or fetched from a stand-in Label Studio
on 127.0.0.1 with a refreshed token) into a new version that a restart resumes, 20 concurrent
requests on a real server, basic auth, and SIGTERM exiting 0."""
import base64
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

import jacal  # noqa: E402
from _cli import digits_model  # noqa: E402
from jacal.serve import MLBackend, protocol as P  # noqa: E402
from jacal.serve.app import create_app  # noqa: E402

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CONFIG = ('<View><Image name="image" value="$image"/><Choices name="label" toName="image" choice="single">'
          + "".join(f'<Choice value="{n}"/>' for n in NAMES) + '<Choice value="none of these"/></Choices></View>')
N = 30


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("serve")
    ck, model, d = digits_model(root / "model.pt", metadata={"input_shape": [1, 8, 8], "label_names": NAMES,
                                                             "train": {"epochs": 3, "lr": 0.01, "batch_size": 16}})
    (root / "docs" / "digits").mkdir(parents=True)
    x = d.x_test[:N]
    refs = []
    for j in range(N):
        png = root / "docs" / "digits" / f"{j:02d} é.png"
        Image.fromarray((x[j, 0].numpy() * 255).round().astype(np.uint8), mode="L").save(png)
        refs.append([str(png), png.as_uri(), f"/data/local-files/?d=digits/{j:02d}%20%C3%A9.png"][j % 3])
    decoded = torch.stack([torch.as_tensor(np.asarray(Image.open(root / "docs" / "digits" / f"{j:02d} é.png"),
                                                      dtype=np.float32) / 255)[None] for j in range(N)])
    return {"root": root, "model": ck, "refs": refs, "x": decoded, "y": d.y_test[:N]}


def task(i, ref, **extra):
    return {"id": i, "data": {"image": ref, "id": f"item {i}"}, "project": 3, "annotations": [], "predictions": [],
            **extra}


def backend(setup, tmp_path, **kwargs):
    return MLBackend(setup["model"], state_dir=tmp_path / "state", document_root=setup["root"] / "docs",
                     **kwargs).start()


def test_predict_is_the_models_prediction_in_jacals_order(setup, tmp_path):
    b = backend(setup, tmp_path)
    client = TestClient(create_app(b))
    body = {"tasks": [task(i, r) for i, r in enumerate(setup["refs"])], "project": "3.1764583200",
            "label_config": CONFIG, "params": {"login": None, "password": None, "context": None}}
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_version"] == "jacal" and len(out["results"]) == N
    model = jacal.load_checkpoint(setup["model"]).model
    ref = jacal.acquire(model, setup["x"], 1, strategy="jacobian")  # the same pixels, scored as an array
    for i, res in enumerate(out["results"]):
        (choice,) = res["result"]
        assert (choice["from_name"], choice["to_name"], choice["type"]) == ("label", "image", "choices")
        assert choice["value"]["choices"] == [NAMES[int(ref.predicted[i])]]
        assert res["model_version"] == "jacal" and res["confidence"] == pytest.approx(ref.confidence[i], abs=1e-5)
    ls_order = np.argsort([res["score"] for res in out["results"]], kind="stable")  # Label Studio: lowest first
    np.testing.assert_array_equal(ls_order, np.argsort(-ref.scores, kind="stable"))
    # one task at a time (what /next asks for) gets the same score as in the batch
    one = client.post("/predict", json={**body, "tasks": body["tasks"][4:5]}).json()["results"][0]
    assert one["score"] == pytest.approx(out["results"][4]["score"], rel=1e-6)
    assert client.post("/setup", json={"project": "3.17", "schema": CONFIG}).json() == {"model_version": "jacal"}
    b.stop()


def test_bad_payloads_are_4xx_and_the_server_lives_on(setup, tmp_path):
    b = backend(setup, tmp_path)
    client = TestClient(create_app(b), raise_server_exceptions=False)
    good = task(0, setup["refs"][0])
    (tmp_path / "junk.png").write_bytes(b"not an image")
    cases = [(b"{not json", 400, "not JSON"), ([1, 2], 400, "JSON object"), ({"tasks": 3}, 400, "'tasks'"),
             ({"tasks": [good]}, 400, "labeling config"),
             ({"tasks": [good], "label_config": "<View"}, 400, "not valid XML"),
             ({"tasks": [{"id": 1}], "label_config": CONFIG}, 400, "no 'data'"),
             ({"tasks": [good], "label_config": CONFIG.replace('<Choice value="nine"/>', "")}, 422, "not <Choice>s"),
             ({"action": 7}, 400, "needs 'action'")]
    for payload, status, message in cases:
        path = "/webhook" if isinstance(payload, dict) and "action" in payload else "/predict"
        r = (client.post(path, content=payload) if isinstance(payload, bytes) else client.post(path, json=payload))
        assert r.status_code == status, (payload, r.text)
        assert message in r.json()["error"] and "\n" not in r.json()["error"]
        assert client.get("/health").status_code == 200
    # an image jacal cannot read: that task's entry says why (no "result"), the others are predicted
    (setup["root"] / "docs" / "junk.png").write_bytes(b"not an image")
    images = [(task(1, str(setup["root"] / "docs" / "missing.png")), "cannot open"),
              (task(2, "junk.png"), "not an image"), (task(3, "/data/local-files/?d=../../x.png"), "document root"),
              (task(4, str(tmp_path / "junk.png")), "leaves the document root"),
              ({"id": 5, "data": {"img": "a"}}, "no data.image")]
    r = client.post("/predict", json={"tasks": [good] + [t for t, _ in images], "label_config": CONFIG})
    assert r.status_code == 200, r.text
    first, *rest = r.json()["results"]
    assert "result" in first
    for (_, message), entry in zip(images, rest):
        assert "result" not in entry and message in entry["error"] and "\n" not in entry["error"], entry
    # training requests that cannot run say why, without a job
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3}}).status_code == 409
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 3}}).json()["status"] == "ignored"
    b.stop()


def ls_export(setup, labels, skipped=()):
    """Tasks as Label Studio's JSON export holds them: one annotation each (skips: was_cancelled)."""
    tasks = []
    for i, label in labels.items():
        ann = {"id": 100 + i, "completed_by": 1, "was_cancelled": i in skipped, "ground_truth": False, "task": i,
               "result": [] if i in skipped else [{"id": f"r{i}", "from_name": "label", "to_name": "image",
                                                   "type": "choices", "value": {"choices": [label]}}]}
        tasks.append(task(i, setup["refs"][i], annotations=[ann]))
    return tasks


def test_training_makes_a_new_version_and_a_restart_resumes_it(setup, tmp_path):
    b = backend(setup, tmp_path, label_config=CONFIG)
    client = TestClient(create_app(b))
    labels = {i: NAMES[int(setup["y"][i])] for i in range(12)}
    labels[12] = "none of these"
    labels[13] = NAMES[0]  # skipped by its annotator: out of set, not a "zero"
    r = client.post("/train", json={"annotations": ls_export(setup, labels, skipped={13}), "project": "3.17",
                                    "label_config": CONFIG})
    assert r.status_code == 201 and r.json()["status"] == "queued"
    assert b.wait_idle(120)
    health = client.get("/health").json()
    assert health["model_version"] == "jacal.1" and not health["training"]
    job = health["last_job"]
    assert job["status"] == "done", job
    assert (job["n_labeled"], job["n_out_of_set"]) == (12, 2)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert [v["version"] for v in state["versions"]] == ["jacal.1"] and state["versions"][0]["n_labeled"] == 12
    trained = jacal.load_checkpoint(tmp_path / "state" / state["versions"][0]["file"])
    assert trained.metadata["model_version"] == "jacal.1" and trained.metadata["label_names"] == NAMES
    out = client.post("/predict", json={"tasks": [task(0, setup["refs"][0])], "label_config": CONFIG}).json()
    assert out["model_version"] == "jacal.1" == out["results"][0]["model_version"]
    expected = trained.model(setup["x"][:1]).argmax(1).item()
    assert out["results"][0]["result"][0]["value"]["choices"] == [NAMES[expected]]
    b.stop()
    again = backend(setup, tmp_path)  # a restart on the same state folder serves the trained version
    assert again.health()[1]["model_version"] == "jacal.1"
    again.stop()


class FakeLabelStudio(http.server.BaseHTTPRequestHandler):
    """A stand-in for the few Label Studio API calls jacal makes (on 127.0.0.1)."""

    export, calls, png = [], [], b""

    def log_message(self, *args):
        pass

    def _answer(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        FakeLabelStudio.calls.append((self.command, self.path, self.headers.get("Authorization"), body))
        return body

    def do_POST(self):
        body = self._record()
        if self.path == "/api/token/refresh/":
            return self._answer(200 if body == {"refresh": "pat.refresh.token"} else 401, {"access": "short-lived"})
        return self._answer(200, {"ok": True})

    def do_PATCH(self):
        self._record()
        self._answer(200, {"id": 3})

    def do_GET(self):
        self._record()
        if self.headers.get("Authorization") != "Bearer short-lived":
            return self._answer(401, {"detail": "no"})
        if self.path.startswith("/api/projects/3/export"):
            return self._answer(200, FakeLabelStudio.export)
        if self.path.startswith("/data/upload/"):
            return self._answer(200, FakeLabelStudio.png, "image/png")
        self._answer(404, {})


def test_webhook_training_fetches_the_project_from_label_studio(setup, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeLabelStudio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    labels = {i: NAMES[int(setup["y"][i])] for i in range(10)}
    FakeLabelStudio.export = ls_export(setup, labels)
    FakeLabelStudio.export[0]["data"]["image"] = "/data/upload/3/first.png"  # an uploaded file, fetched with the token
    FakeLabelStudio.png = Path(setup["refs"][0]).read_bytes()
    FakeLabelStudio.calls = []
    try:
        b = backend(setup, tmp_path, label_studio_url=url, api_key="pat.refresh.token")
        client = TestClient(create_app(b))
        r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3, "label_config": CONFIG}})
        assert r.status_code == 201
        assert b.wait_idle(120)
        job = b.state.last_job()
        assert job["status"] == "done" and job["n_labeled"] == 10 and job["refreshed"], job
        paths = [(m, p.split("?")[0], a) for m, p, a, _ in FakeLabelStudio.calls]
        assert paths[0] == ("POST", "/api/token/refresh/", None)
        assert ("GET", "/api/projects/3/export", "Bearer short-lived") in paths
        assert ("GET", "/data/upload/3/first.png", "Bearer short-lived") in paths
        patch = [body for m, p, _, body in FakeLabelStudio.calls if m == "PATCH"]
        assert patch == [{"model_version": "jacal.1"}]
        assert any(p.startswith("/api/dm/actions?id=retrieve_tasks_predictions&project=3")
                   for m, p, _, _ in FakeLabelStudio.calls if m == "POST")
        b.stop()
    finally:
        server.shutdown()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body, auth=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **({"Authorization": auth} if auth else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_twenty_concurrent_requests_on_a_real_server_with_basic_auth(setup, tmp_path):
    import uvicorn

    b = backend(setup, tmp_path)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(b, basic_auth=("ls", "s3cret")), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    auth = "Basic " + base64.b64encode(b"ls:s3cret").decode()
    url = f"http://127.0.0.1:{port}/predict"
    bodies = [{"tasks": [task(j, setup["refs"][j]) for j in range(i % 5, i % 5 + 3)], "label_config": CONFIG}
              for i in range(18)]
    bodies += [{"tasks": [{"id": 1}], "label_config": CONFIG}, {"tasks": "bad"}]  # two bad ones among them
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda body: _post(url, body, auth), bodies))
    assert [s for s, _ in answers] == [200] * 18 + [400, 400]
    assert all(len(a["results"]) == 3 for _, a in answers[:18])
    first = {i: [r["score"] for r in a["results"]] for i, (_, a) in enumerate(answers[:18])}
    assert first[0] == pytest.approx(first[5])  # the same tasks, the same scores, whatever ran beside them
    assert _post(url, bodies[0])[0] == 401 and _post(url, bodies[0], "Basic " + base64.b64encode(b"ls:no").decode())[0] == 401
    health = urllib.request.Request(f"http://127.0.0.1:{port}/health", headers={"Authorization": auth})
    with urllib.request.urlopen(health, timeout=10) as resp:  # health too is behind the auth
        assert resp.status == 200
    server.should_exit = True
    thread.join(10)
    b.stop()


@pytest.mark.slow
def test_cli_serve_answers_then_exits_0_on_sigterm(setup, tmp_path):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jacal.cli.app", "serve", "--model", str(setup["model"]), "--port",
                             str(port), "--state-dir", str(tmp_path / "st"), "--document-root",
                             str(setup["root"] / "docs"), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["url"] == f"http://127.0.0.1:{port}" and info["model_version"] == "jacal" and info["trainable"]
        for _ in range(200):
            try:
                status, body = _post(f"http://127.0.0.1:{port}/predict",
                                     {"tasks": [task(0, setup["refs"][2])], "label_config": CONFIG})
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert status == 200 and body["results"][0]["model_version"] == "jacal"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_predict_only_models_and_bad_options(setup, tmp_path):
    model = jacal.load_checkpoint(setup["model"]).model
    torch.jit.trace(model, setup["x"][:2]).save(str(tmp_path / "scripted.pt"))
    b = MLBackend(tmp_path / "scripted.pt", state_dir=tmp_path / "st", image_size=(8, 8), channels=1,
                  label_config=CONFIG, document_root=setup["root"] / "docs").start()
    client = TestClient(create_app(b))
    r = client.post("/predict", json={"tasks": [task(0, setup["refs"][0])]})
    assert r.status_code == 200 and r.json()["results"][0]["result"][0]["value"]["choices"][0] in NAMES
    r = client.post("/train", json={"annotations": [], "project": "3"})
    assert r.status_code == 409 and "predicts only" in r.json()["error"]
    b.stop()
    with pytest.raises(jacal.JacalError, match="no image input shape"):
        MLBackend(tmp_path / "scripted.pt", state_dir=tmp_path / "st2").start()
    with pytest.raises(ValueError, match="psychic"):
        MLBackend(setup["model"], state_dir=tmp_path / "st3", strategy="psychic").start()
    with pytest.raises(P.ProtocolError, match="leaves the document root"):
        P.locate_image("../x.png", document_root=str(tmp_path))


@pytest.mark.parametrize("train_on", ["annotations", "request"])
def test_a_burst_of_annotation_events_trains_once_and_request_mode_ignores_them(setup, tmp_path, train_on):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeLabelStudio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    FakeLabelStudio.export = ls_export(setup, {i: NAMES[int(setup["y"][i])] for i in range(10)})
    FakeLabelStudio.calls = []
    try:
        b = backend(setup, tmp_path, label_studio_url=url, api_key="pat.refresh.token", train_on=train_on,
                    debounce=0.6, refresh=False)
        client = TestClient(create_app(b))
        answers = [client.post("/webhook", json={"action": "ANNOTATION_CREATED",
                                                 "project": {"id": 3, "label_config": CONFIG}}) for _ in range(5)]
        assert b.wait_idle(120)
        jobs = [j for j in b.state.data["jobs"] if j["status"] == "done"]
        if train_on == "annotations":  # five events within the debounce: one job, merged
            assert [a.status_code for a in answers] == [201] * 5 and [a.json()["merged"] for a in answers][1:] == [True] * 4
            assert len(jobs) == 1 and b.health()[1]["model_version"] == "jacal.1"
        else:
            assert all(a.status_code == 200 and a.json()["status"] == "ignored" and "--train-on request" in
                       a.json()["reason"] for a in answers)
            assert jobs == [] and b.health()[1]["model_version"] == "jacal"
        r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3, "label_config": CONFIG}})
        assert r.status_code == 201  # an explicit request trains in both modes, without waiting out the debounce
        assert b.wait_idle(120)
        assert len([j for j in b.state.data["jobs"] if j["status"] == "done"]) == len(jobs) + 1
        b.stop()
    finally:
        server.shutdown()


def test_train_on_and_debounce_are_checked(setup, tmp_path):
    with pytest.raises(jacal.JacalError, match="train_on"):
        MLBackend(setup["model"], train_on="always")
    with pytest.raises(jacal.JacalError, match="debounce"):
        MLBackend(setup["model"], debounce=-1)
