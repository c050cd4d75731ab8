import csv
import json
import random
import signal
import sqlite3
import subprocess

import numpy as np
from typer.testing import CliRunner

from _helpers import (INTERRUPTED_RESUMABLE, LOOP_TINY, cli, fsize_limit, integrity, kill_at_random_moment,
                      one_line_failure, signal_after_rows)
from jacal.cli.app import app
from jacal.data import load_dataset
from jacal.loop import LOOP_PRESETS
from jacal.loop.config import seed_splits
from dataclasses import replace

TINY = LOOP_TINY


def _curves(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "acquisition_time_s"} for r in csv.DictReader(f)]


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
    val, pool, initial = seed_splits(data, cfg, 0)
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


def _rounds(db):
    con = sqlite3.connect(db)
    try:
        return {r[:3]: r for r in con.execute(
            "SELECT strategy, seed, round, n_labeled, test_accuracy, test_loss, train_epochs, labeled FROM rounds")}
    finally:
        con.close()


def _keeps(before, after):
    assert all(after.get(k) == v for k, v in before.items()), "a committed round was lost or changed"


def test_faults_then_resume_give_the_uninterrupted_curves(tiny, tmp_path):
    """Ctrl-C, SIGKILLs at random moments, then a full disk; --resume ends with the uninterrupted
    curves, and no fault loses a committed round."""
    out, _ = tiny
    dest = tmp_path / "faulted"
    db = dest / "loop.sqlite"
    cmd = cli("loop", "--out", dest, *TINY, "--resume")
    # 1. Ctrl-C after the first round is committed
    n, proc = signal_after_rows(cmd, db, "rounds", signal.SIGINT)
    assert n is not None and n < 6, "could not interrupt the run part-way"
    assert proc.returncode == 130 and proc.stderr.strip() == INTERRUPTED_RESUMABLE, proc.stderr
    seen = _rounds(db)
    assert len(seen) >= n
    # 2. SIGKILLs at random moments
    rng = random.Random(15)
    for _ in range(2):
        kill_at_random_moment(cmd, rng, 2.0, 8.0)
        assert integrity(db) == "ok"
        now = _rounds(db)
        _keeps(seen, now)
        seen = now
    # 3. the disk fills up: every round fits, curves.png does not; the old outputs stay whole
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=fsize_limit(40_000))
    one_line_failure(r, "cannot write")
    assert integrity(db) == "ok"
    _keeps(seen, _rounds(db))
    # 4. resume
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _curves(out / "curves.csv") == _curves(dest / "curves.csv")
    assert not list(dest.glob(".*.tmp"))


def test_loop_bad_input(tmp_path, tiny):
    run = CliRunner().invoke
    for args, frag in [(["--strategies", "jacobian,oracle"], "oracle"), (["--initial", "0"], "initial"),
                       (["--model", "transformer"], "model"), (["--rounds", "500"], "too small"),
                       (["--dataset", "mnist", "--data-root", str(tmp_path / "none")], "does not exist")]:
        r = run(app, ["loop", "--out", str(tmp_path / "x"), *args])
        assert r.exit_code == 1 and frag in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    r = run(app, ["loop", "--out", str(tiny[0]), *TINY])
    assert r.exit_code == 1 and "--resume" in r.stderr
