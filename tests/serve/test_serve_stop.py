"""jacal serve's reasons and stop advice: every prediction carries jacal.acquire's reason for the item
(as Label Studio text areas and as JSON), and a stopping criterion watches a stop set at every model
version, persisted in the state folder, resumed after a restart, logged and shown on /health; bad
stop settings fail at start in one line naming the flag."""
import json
import logging
import re

import numpy as np
import pytest
import torch

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

import jacal  # noqa: E402
from _cli import digits_model, run  # noqa: E402
from _helpers import one_line_error  # noqa: E402
from jacal.io.readers import image_transform  # noqa: E402
from jacal.serve import MLBackend  # noqa: E402
from jacal.serve.app import create_app  # noqa: E402
from jacal.stopping import criterion  # noqa: E402

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CHOICES = ('<Choices name="label" toName="image" choice="single">' + "".join(f'<Choice value="{n}"/>' for n in NAMES)
           + "</Choices>")
PLAIN = f'<View><Image name="image" value="$image"/>{CHOICES}</View>'
AREAS = (f'<View><Image name="image" value="$image"/>{CHOICES}<TextArea name="al_reason" toName="image"/>'
         '<TextArea name="al_stop" toName="image"/><TextArea name="comment" toName="image"/></View>')
N = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("serve_stop")
    ck, model, d = digits_model(root / "model.pt", metadata={"input_shape": [1, 8, 8], "label_names": NAMES,
                                                             "train": {"epochs": 3, "lr": 0.01, "batch_size": 16}})
    (root / "docs").mkdir()
    refs, pixels = [], []
    for j in range(N):
        png = root / "docs" / f"{j:02d}.png"
        Image.fromarray((d.x_test[j, 0].numpy() * 255).round().astype(np.uint8), mode="L").save(png)
        refs.append(str(png))
        with Image.open(png) as im:  # decoded as the server decodes, to the last bit
            pixels.append(image_transform((8, 8), 1)(im.convert("L")))
    stop = d.x_test[100:220].numpy()
    np.save(root / "stop.npy", stop)
    return {"root": root, "model": ck, "refs": refs, "x": torch.stack(pixels), "y": d.y_test[:N],
            "stop": torch.as_tensor(stop), "stop_file": root / "stop.npy"}


def task(i, ref, **extra):
    return {"id": i, "data": {"image": ref, "id": f"item {i}"}, "project": 3, **extra}


def start(world, tmp_path, **kwargs):
    return MLBackend(world["model"], state_dir=tmp_path / "state", document_root=world["root"] / "docs",
                     label_config=PLAIN, **kwargs).start()


@pytest.mark.parametrize("strategy", ["jacobian", "coreset"])
def test_each_prediction_carries_acquires_reason_for_the_item(world, tmp_path, strategy):
    b = start(world, tmp_path, strategy=strategy)
    client = TestClient(create_app(b))
    tasks = [task(i, r) for i, r in enumerate(world["refs"])]
    out = client.post("/predict", json={"tasks": tasks, "label_config": AREAS}).json()["results"]
    ref = jacal.acquire(jacal.load_checkpoint(world["model"]).model, world["x"], N, strategy=strategy)
    for i, res in enumerate(out):
        r = int(np.flatnonzero(ref.indices == i)[0])
        assert res["reason"] == ref.reasons[r]
        fields = res["reason_fields"]
        assert fields["runner_up"] == NAMES[int(ref.reason_fields["runner_up"][r])]
        assert fields["margin"] == pytest.approx(float(ref.reason_fields["margin"][r]), rel=1e-6)
        assert fields["selection_score"] == pytest.approx(float(ref.reason_fields["selection_score"][r]), rel=1e-6)
        if strategy == "jacobian":
            assert fields["boundary_distance"] == pytest.approx(float(ref.reason_fields["boundary_distance"][r]),
                                                                rel=1e-6)
        choice, shown = res["result"]  # no stop set: no al_stop text; the annotators' comment box stays empty
        assert choice["value"]["choices"] == [NAMES[int(ref.predicted[i])]]
        assert shown == {"from_name": "al_reason", "to_name": "image", "type": "textarea",
                         "value": {"text": [ref.reasons[r]]}}
    # a config without the text area: the reason is in the JSON only, the pre-annotation is the choice alone
    plain = client.post("/predict", json={"tasks": tasks[:3], "label_config": PLAIN}).json()["results"]
    assert all(len(p["result"]) == 1 and p["reason"] for p in plain)
    b.stop()


@pytest.mark.timeout(120)
def test_copies_of_an_image_share_the_first_copys_prediction_and_the_rest_is_unchanged(world, tmp_path):
    # the same file imported several times: acquire over the request would be asked for more picks
    # than there are distinct items
    b = start(world, tmp_path)
    client = TestClient(create_app(b))
    refs = world["refs"] + [world["refs"][2]] * 3 + [world["refs"][5]]
    out = client.post("/predict", json={"tasks": [task(i, r) for i, r in enumerate(refs)],
                                        "label_config": AREAS}).json()["results"]
    assert len(out) == N + 4
    ref = jacal.acquire(jacal.load_checkpoint(world["model"]).model, world["x"], N, strategy="jacobian")
    for i in range(N):
        r = int(np.flatnonzero(ref.indices == i)[0])
        assert out[i]["reason"] == ref.reasons[r]
        assert out[i]["result"][1]["value"]["text"] == [ref.reasons[r]]
    for i, first in zip(range(N, N + 4), [2, 2, 2, 5]):
        assert out[i] == out[first]
    b.stop()


def trained_versions(world, tmp_path, client, b, n_labeled):
    labels = {i: NAMES[int(world["y"][i])] for i in range(n_labeled)}
    export = [task(i, world["refs"][i], annotations=[{"id": i, "was_cancelled": False, "result": [  # a prediction
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [lab]}},  # accepted:
        {"from_name": "al_reason", "to_name": "image", "type": "textarea", "value": {"text": ["why"]}}]}])  # its text too
        for i, lab in labels.items()]
    assert client.post("/train", json={"annotations": export, "project": "3", "label_config": PLAIN}).status_code == 201
    assert b.wait_idle(120)
    job = b.state.last_job()
    assert job["status"] == "done" and job["n_labeled"] == n_labeled, job


def test_stop_advice_follows_every_version_survives_a_restart_and_resumes(world, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="jacal.serve")
    b = start(world, tmp_path, stop_set=world["stop_file"])
    client = TestClient(create_app(b))
    first = client.get("/health").json()["stop"]
    assert (first["model_version"], first["round"], first["criterion"]) == ("jacal", 1, "settled-predictions")
    trained_versions(world, tmp_path, client, b, 10)
    health = client.get("/health").json()
    assert health["model_version"] == "jacal.1" and health["last_job"]["stop"]["reason"] == health["stop"]["reason"]
    # the same rounds by hand: the base model, then the trained version, on the same stop set
    crit = criterion()
    base = jacal.load_checkpoint(world["model"]).model.eval()
    v1 = jacal.load_checkpoint(tmp_path / "state" / b.state.versions[-1]["file"]).model.eval()
    expected = [crit.update(base, world["stop"]), crit.update(v1, world["stop"], labeled=10)]
    assert [(h["model_version"], h["round"], h["reason"], h["labeled"]) for h in health["stop"]["history"]] == \
        [("jacal", 1, expected[0].reason, None), ("jacal.1", 2, expected[1].reason, 10)]
    assert any(r.getMessage().startswith("model jacal.1: keep labeling (settled-predictions, round 2): continue:")
               for r in caplog.records)
    # what the labeling view shows for this version
    shown = client.post("/predict", json={"tasks": [task(0, world["refs"][0])], "label_config": AREAS}).json()
    stop_text = [r["value"]["text"][0] for r in shown["results"][0]["result"] if r["from_name"] == "al_stop"]
    assert stop_text == [f"model jacal.1: keep labeling — {expected[1].reason}"]
    b.stop()

    saved = json.loads((tmp_path / "state" / "stop.json").read_text())
    assert saved["criterion"]["criterion"] == "settled-predictions" and len(saved["history"]) == 2
    again = start(world, tmp_path, stop_set=world["stop_file"])  # a restart: the served version is not counted twice
    assert again.health()[1]["stop"]["history"] == health["stop"]["history"]
    client = TestClient(create_app(again))
    trained_versions(world, tmp_path, client, again, 14)  # the next version continues the same criterion
    v2 = jacal.load_checkpoint(tmp_path / "state" / again.state.versions[-1]["file"]).model.eval()
    third = crit.update(v2, world["stop"], labeled=14)
    stop = again.health()[1]["stop"]
    assert (stop["model_version"], stop["round"], stop["reason"], stop["stop"]) == \
        ("jacal.2", 3, third.reason, third.stop)
    again.stop()


def test_health_shows_the_advice_as_json(world, tmp_path):
    b = start(world, tmp_path)
    assert b.health()[1]["stop"] is None  # no stop set: no advice
    b.stop()
    b = start(world, tmp_path, stop_set=world["stop_file"], stop_criterion="stabilizing-predictions")
    client = TestClient(create_app(b), raise_server_exceptions=False)
    stop = client.get("/health").json()["stop"]
    assert set(stop) == {"stop", "reason", "value", "criterion", "model_version", "round", "labeled", "stop_set",
                         "history"}
    assert stop["stop"] is False and stop["value"] is None  # a first round: nothing to compare yet
    assert stop["criterion"] == "stabilizing-predictions" and stop["stop_set"]["n"] == len(world["stop"])
    assert stop["history"] == [{"model_version": "jacal", "round": 1, "stop": False, "value": None,
                                "reason": stop["reason"], "labeled": None}]
    # a garbage request stays a 4xx, and the advice is still there
    assert client.post("/predict", content=b"{junk").status_code == 400
    assert client.get("/health").json()["stop"] == stop
    b.stop()


def test_bad_stop_settings_fail_at_start_in_one_line(world, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbage.npy").write_bytes(b"this is not an array")
    np.save(bad / "flat.npy", np.zeros((5, 64), dtype=np.float32))
    cases = [({"stop_set": world["stop_file"], "stop_criterion": "psychic"}, "`stop_criterion` must be one of"),
             ({"stop_set": world["stop_file"], "stop_criterion": "budget"}, "needs a label budget"),
             ({"stop_criterion": "budget"}, "`stop_criterion` needs `stop_set`"),
             ({"stop_set": bad / "missing.npy"}, "`stop_set` not found"),
             ({"stop_set": bad / "garbage.npy"}, "cannot be read"),
             ({"stop_set": bad / "flat.npy"}, "the model takes (1, 8, 8)")]
    for kwargs, message in cases:
        with pytest.raises(jacal.JacalError, match=re.escape(message)):
            start(world, tmp_path, **kwargs)
    start(world, tmp_path, stop_set=world["stop_file"]).stop()  # the folder was released by every failed start
    with pytest.raises(jacal.JacalError, match="differs from the criterion"):
        start(world, tmp_path, stop_set=world["stop_file"], stop_criterion="classification-change")
    np.save(bad / "fewer.npy", world["stop"][:50].numpy())
    with pytest.raises(jacal.JacalError, match="has 50 usable items"):
        start(world, tmp_path, stop_set=bad / "fewer.npy")
    (tmp_path / "state" / "stop.json").write_text("{half")
    with pytest.raises(jacal.JacalError, match="stop.json is damaged"):
        start(world, tmp_path, stop_set=world["stop_file"])
    # the command says the flag, in one line, exit code 1
    for args, flag in [(["--stop-set", bad / "missing.npy"], "--stop-set"),
                       (["--stop-set", world["stop_file"], "--stop-criterion", "psychic"], "--stop-criterion")]:
        result = run("serve", "--model", world["model"], "--state-dir", tmp_path / "cli", *args)
        one_line_error(result, flag)


class _NanOnBright(torch.nn.Module):
    """The served model, but NaN logits for items brighter than ``level`` (finite inputs, no output)."""

    def __init__(self, model, level):
        super().__init__()
        self.model, self.level = model, level

    def forward(self, x):
        z = self.model(x)
        bright = x.flatten(1).mean(1) > self.level
        return torch.where(bright[:, None], torch.full_like(z, float("nan")), z)


def test_items_the_model_gives_no_finite_output_get_no_score_and_the_answer_stays_json(world, tmp_path):
    b = start(world, tmp_path)
    level = float(world["x"].flatten(1).mean(1).median())
    b._model = {**b._model, "model": _NanOnBright(b._model["model"], level)}
    r = TestClient(create_app(b)).post("/predict", json={"tasks": [task(i, ref) for i, ref in enumerate(world["refs"])],
                                                         "label_config": AREAS})
    assert r.status_code == 200, r.text
    ref = jacal.acquire(_NanOnBright(jacal.load_checkpoint(world["model"]).model, level), world["x"], N)
    bright = (world["x"].flatten(1).mean(1) > level).numpy()
    assert 0 < bright.sum() < N
    for i, res in enumerate(r.json()["results"]):
        assert (res["score"] is None and "confidence" not in res) == bool(bright[i])
        assert res["reason"] == ref.reasons[int(np.flatnonzero(ref.indices == i)[0])]
    b.stop()


def test_only_the_named_text_areas_on_the_labeled_image_are_filled():
    from jacal.serve.protocol import parse_label_config, prediction

    cfg = parse_label_config('<View><Image name="image" value="$image"/><Image name="other" value="$o"/>' + CHOICES
                             + '<TextArea name="al_reason" toName="other"/><TextArea name="al_stop" toName="image"/>'
                               '<TextArea name="notes" toName="image"/></View>')
    assert (cfg.reason_area, cfg.stop_area) == (None, "al_stop")
    p = prediction("one", 0.5, cfg, "v", reason="between 1 and 7", reason_fields={"runner_up": "seven"},
                   stop="model v: keep labeling — continue")
    assert [r["from_name"] for r in p["result"]] == ["label", "al_stop"]
    assert (p["reason"], p["reason_fields"]) == ("between 1 and 7", {"runner_up": "seven"})
    assert "al_stop" not in [r["from_name"] for r in prediction("one", 0.5, cfg, "v")["result"]]
