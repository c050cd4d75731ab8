"""`jacal acquire` with stop advice (--stop-set / --stop-state) and the batch figure (--figure)."""
import json

import numpy as np
import pytest
import torch

import jacal
from jacal.stopping import criterion, load_state
from _cli import digits_model, run as _run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stop")
    ck1, m1, d = digits_model(root / "m1.pt", epochs=1, metadata={"input_shape": [1, 8, 8]})
    ck2, m2, _ = digits_model(root / "m2.pt", epochs=3, metadata={"input_shape": [1, 8, 8]})
    np.save(root / "pool.npy", d.x_test[:60].numpy())
    np.save(root / "stop.npy", d.x_test[100:180].numpy())
    return root, (ck1, m1), (ck2, m2), d


def _acquire(root, ck, out, *extra):
    return _run("acquire", "--model", ck, "--pool", root / "pool.npy", "--k", 5, "--out", out, "--device", "cpu",
                "--stop-set", root / "stop.npy", "--stop-state", root / "state.json", *extra)


def test_stop_state_follows_the_rounds_and_matches_the_library(setup, tmp_path):
    root, (ck1, m1), (ck2, m2), d = setup
    (root / "state.json").unlink(missing_ok=True)
    r = _acquire(root, ck1, tmp_path / "b1.csv", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)["stop"]
    assert first["criterion"] == criterion().name and first["round"] == 1 and not first["stop"]
    r = _acquire(root, ck2, tmp_path / "b2.csv", "--json")
    second = json.loads(r.stdout)["stop"]
    assert second["round"] == 2
    # the library, same two models on the same stop set
    crit = criterion()
    stop = np.load(root / "stop.npy")
    crit.update(m1.eval(), stop, labeled=0)
    expected = crit.update(m2.eval(), stop, labeled=0)
    assert second == {**expected.to_dict(), "labeled": 0}
    # the same model again (a batch acquired twice) repeats the advice and leaves the state alone
    before = (root / "state.json").read_text()
    r = _acquire(root, ck2, tmp_path / "b3.csv")
    assert r.exit_code == 0, r.output
    assert "stop advice (" in r.stdout and "same model as last round" in r.stdout
    assert (root / "state.json").read_text() == before
    assert len(load_state(root / "state.json").history_) == 2


def test_figure_and_batch_summary(setup, tmp_path):
    root, (ck1, _), _, _ = setup
    fig = tmp_path / "batch.png"
    r = _run("acquire", "--model", ck1, "--pool", root / "pool.npy", "--k", 8, "--out", tmp_path / "b.jsonl",
             "--device", "cpu", "--figure", fig)
    assert r.exit_code == 0, r.output
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "class pairs" in r.stdout
    rows = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert all(x["reason"].startswith("between ") for x in rows)


@pytest.mark.parametrize("args, flag", [
    (["--stop-set", "STOP"], "--stop-state"),
    (["--stop-set", "STOP", "--stop-state", "NEW", "--stop-criterion", "nope"], "--stop-criterion"),
])
def test_bad_stop_options_are_one_line_errors(setup, tmp_path, args, flag):
    root, (ck1, _), _, _ = setup
    args = [str(root / "stop.npy") if a == "STOP" else str(tmp_path / "s.json") if a == "NEW" else a for a in args]
    out = tmp_path / "b.csv"
    r = _run("acquire", "--model", ck1, "--pool", root / "pool.npy", "--k", 5, "--out", out, "--device", "cpu", *args)
    assert r.exit_code == 1 and flag in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()


def test_a_stop_set_of_another_size_is_refused_and_nothing_is_written(setup, tmp_path):
    root, (ck1, _), (ck2, _), d = setup
    state = tmp_path / "s.json"
    ok = _run("acquire", "--model", ck1, "--pool", root / "pool.npy", "--k", 5, "--out", tmp_path / "a.csv",
              "--device", "cpu", "--stop-set", root / "stop.npy", "--stop-state", state)
    assert ok.exit_code == 0, ok.output
    np.save(tmp_path / "small.npy", d.x_test[:10].numpy())
    r = _run("acquire", "--model", ck2, "--pool", root / "pool.npy", "--k", 5, "--out", tmp_path / "b.csv",
             "--device", "cpu", "--stop-set", tmp_path / "small.npy", "--stop-state", state)
    assert r.exit_code == 1 and "--stop-set" in r.output and "same --stop-set" in r.output, r.output
    assert not (tmp_path / "b.csv").exists()
