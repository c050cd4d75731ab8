import csv
import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from _helpers import kill_after_rows
from jacal.cli.app import app
from jacal.data import load_dataset
from jacal.loop import LOOP_PRESETS, _splits
from dataclasses import replace

TINY = ["--strategies", "jacobian,margin", "--rounds", "2", "--seeds", "1", "--k", "7", "--max-epochs", "30",
        "--device", "cpu"]


def _curves(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "acquisition_time_s"} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("loop") / "a"
    r = CliRunner().invoke(app, ["loop", "--out", str(out), *TINY, "--json"])
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


def test_files_and_invariants(tiny):
    out, summary = tiny
    for name in ("curves.csv", "summary.json", "curves.png", "report.md", "loop.sqlite"):
        assert (out / name).stat().st_size > 0
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(out / "curves.csv")))
    assert len(rows) == 2 * 3  # 2 strategies × (rounds + 1)
    assert set(summary["ranking"]) == {"jacobian", "margin"}
    assert "spearman_rho_jacobian_loss" in summary["pointwise_check_c4"]
    cfg = replace(LOOP_PRESETS["smoke"], strategies=("jacobian", "margin"), rounds=2, seeds=1, k=7, max_epochs=30)
    data = load_dataset("digits")
    val, pool, initial = _splits(data, cfg, 0)
    con = sqlite3.connect(out / "loop.sqlite")
    for strategy in ("jacobian", "margin"):
        sets = [np.array(json.loads(r[0])) for r in con.execute(
            "SELECT labeled FROM rounds WHERE strategy=? AND seed=0 ORDER BY round", (strategy,))]
        n_labeled = [r[0] for r in con.execute(
            "SELECT n_labeled FROM rounds WHERE strategy=? AND seed=0 ORDER BY round", (strategy,))]
        assert n_labeled == [20, 27, 34]
        prev = initial
        for rnd, s in enumerate(sets[:-1]):  # each stored set is the one the round ends with
            assert len(s) == len(prev) + 7 and len(np.unique(s)) == len(s)
            assert set(prev) < set(s)  # grows by exactly k new items
            assert set(s) <= set(pool) and not set(s) & set(val)  # from the pool, never validation
            prev = s
        assert np.array_equal(sets[-1], prev)  # no acquisition after the last round
    con.close()
    report = (out / "report.md").read_text()
    assert "Ranking" in report and "Where the Jacobian strategies stand" in report


def test_same_seed_same_curve(tiny, tmp_path):
    out, _ = tiny
    r = CliRunner().invoke(app, ["loop", "--out", str(tmp_path / "b"), *TINY])
    assert r.exit_code == 0, r.output
    assert _curves(out / "curves.csv") == _curves(tmp_path / "b" / "curves.csv")


def test_killed_loop_resumes_to_the_same_curves(tiny, tmp_path):
    out, _ = tiny
    dest = tmp_path / "killed"
    cmd = [sys.executable, "-m", "jacal.cli.app", "loop", "--out", str(dest), *TINY]
    killed_at = kill_after_rows(cmd, dest / "loop.sqlite", "rounds")
    assert killed_at is not None and killed_at < 6, "could not kill the run part-way"
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _curves(out / "curves.csv") == _curves(dest / "curves.csv")


def test_loop_bad_input(tmp_path, tiny):
    run = CliRunner().invoke
    for args, frag in [(["--strategies", "jacobian,oracle"], "oracle"), (["--initial", "0"], "initial"),
                       (["--model", "transformer"], "model"), (["--rounds", "500"], "too small"),
                       (["--dataset", "mnist", "--data-root", str(tmp_path / "none")], "does not exist")]:
        r = run(app, ["loop", "--out", str(tmp_path / "x"), *args])
        assert r.exit_code == 1 and frag in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    r = run(app, ["loop", "--out", str(tiny[0]), *TINY])
    assert r.exit_code == 1 and "--resume" in r.stderr
