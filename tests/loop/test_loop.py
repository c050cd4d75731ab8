import csv
import json
import math
import random
import signal
import sqlite3
import subprocess

import numpy as np
import pytest
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


@pytest.mark.slow
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
    for args, frag in [(["--strategies", "jacobian,oracle"], "oracle"), (["--initial", "-1"], "initial"), (["--scenario", "closed"], "scenario"),
                       (["--scenario-params", "share"], "name=number"), (["--cold-start", "magic"], "--cold-start"),
                       (["--model", "transformer"], "model"), (["--rounds", "500"], "too small"),
                       (["--dataset", "mnist", "--data-root", str(tmp_path / "none")], "does not exist")]:
        r = run(app, ["loop", "--out", str(tmp_path / "x"), *args])
        assert r.exit_code == 1 and frag in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    r = run(app, ["loop", "--out", str(tiny[0]), *TINY])
    assert r.exit_code == 1 and "--resume" in r.stderr


def _hand_rows():
    """Rounds of two seeds × three strategies, as the store holds them, without training anything."""
    acc = {"random": [0.41, 0.5234567891, 0.6], "margin": [0.41, 0.5712345678, 0.7123456789],
           "jacobian": [0.41, 0.5612345678, 0.7680738461538462]}
    shift = {"random": 0.0123456789, "margin": 0.0234567891, "jacobian": 0.00567891234}
    rows = []
    for strategy, accs in acc.items():
        for seed in (0, 1):
            for rnd, a in enumerate(accs):
                rows.append((strategy, seed, rnd, 20 + 7 * rnd, a - shift[strategy] * seed * rnd, 1.0 / (1 + rnd),
                             0.012345678 if rnd < 2 else float("nan"), 30))
    return rows


def test_report_rounds_numbers_and_ignores_docstrings(tmp_path, monkeypatch):
    import re

    import jacal.loop.report as report
    import jacal.loop.runner as runner
    import jacal.loop.summary as summary_module
    from jacal.loop import write_outputs

    cfg = replace(LOOP_PRESETS["smoke"], strategies=("jacobian", "margin", "random"), rounds=2, seeds=2, k=7)
    check = {"n": 450, "spearman_rho_jacobian_loss": 0.4123456789, "p": 0.05253678691660495,
             "error_auroc_jacobian": 0.7680738461538462, "test_accuracy": 0.8877777777}
    (tmp_path / "a").mkdir()
    summary = write_outputs(tmp_path / "a", cfg, _hand_rows(), check)
    text = (tmp_path / "a" / "report.md").read_text()
    assert summary["ranking"][0] == "jacobian" and math.isfinite(summary["strategies"]["jacobian"]["vs_random"]["p_ttest"])
    assert not re.search(r"\d\.\d{5,}", text), "a number printed at full precision"
    assert "AUROC of ‖J‖ = 0.768 " in text and "(p=0.053)" in text and "ρ(‖J(x)‖, loss) = 0.412 " in text
    assert re.search(r"\| 1 \| jacobian \| 0\.\d{3} \[0\.\d{1,3}, 0\.\d{1,3}\] \|", text), text
    assert re.search(r"win \(\+0\.\d{1,4}, p=0\.\d{1,3}\)|tie \(\+0\.\d{1,4}, p=0\.\d{1,3}\)", text), text
    for module in (runner, report, summary_module):  # the report does not paste docstrings
        monkeypatch.setattr(module, "__doc__", "an edited docstring")
    (tmp_path / "b").mkdir()
    write_outputs(tmp_path / "b", cfg, _hand_rows(), check)
    assert (tmp_path / "b" / "report.md").read_text() == text
    assert json.loads((tmp_path / "b" / "summary.json").read_text()) == summary


def test_curve_bands_are_clipped_and_paired_by_seed():
    from jacal.loop.figures import curve_bands

    rows = _hand_rows()
    bands = curve_bands(rows)
    assert set(bands["accuracy"]) == {"jacobian", "margin", "random"} and set(bands["vs_random"]) == {"jacobian", "margin"}
    ns, mean, lo, hi = bands["accuracy"]["margin"]
    assert ns.tolist() == [20, 27, 34]
    assert (lo >= 0).all() and (hi <= 1).all() and (lo <= mean).all() and (mean <= hi).all()
    spread = [("random", seed, 0, 20, a, 1.0, 0.1, 5) for seed, a in enumerate((0.95, 0.6))]  # t interval ±2.2
    _, mean, lo, hi = curve_bands(spread)["accuracy"]["random"]
    assert mean[0] == pytest.approx(0.775) and (lo[0], hi[0]) == (0.0, 1.0)
    acc = {(r[0], r[1], r[3]): r[4] for r in rows}
    for strategy in ("jacobian", "margin"):
        ns, mean, lo, hi = bands["vs_random"][strategy]
        for j, n in enumerate(ns):  # the mean over seeds of the per-seed difference from random
            want = np.mean([acc[(strategy, s, n)] - acc[("random", s, n)] for s in (0, 1)])
            assert mean[j] == pytest.approx(want)
        assert (lo >= -1).all() and (hi <= 1).all()


def test_summary_replays_the_stopping_criteria_from_the_stored_stop_set(tiny):
    """Each round stores the stop set's predictions; the summary's stop table is the library's on them."""
    from jacal.stopping.measure import REPLAYED, STOP_SET_SIZE, replay_record

    out, printed = tiny
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stopping"]) == set(printed["stopping"]) == {"jacobian", "margin"}
    con = sqlite3.connect(out / "loop.sqlite")
    for strategy in ("jacobian", "margin"):
        rows = con.execute("SELECT r.n_labeled, r.test_accuracy, m.metrics FROM rounds r JOIN round_metrics m "
                           "USING (strategy, seed, round) WHERE strategy=? AND seed=0 ORDER BY round",
                           (strategy,)).fetchall()
        recs = [json.loads(r[2])["stop_set"] for r in rows]
        data = load_dataset("digits")
        assert all(len(s["predictions"]) == min(STOP_SET_SIZE, len(data.x_test)) for s in recs)
        table = replay_record([r[0] for r in rows], [r[1] for r in rows], recs)
        got = summary["stopping"][strategy]["per_seed"]["0"]
        assert set(got) == {"oracle", *REPLAYED}
        for name in REPLAYED:
            assert got[name]["labels"] == table[name]["labels"] and got[name]["stopped"] == table[name]["stopped"]
    con.close()
