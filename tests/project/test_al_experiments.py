"""benchmarks/al_experiments.py at a tiny size, so the script behind the active-learning benchmark pages cannot rot."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "al_experiments.py"


def _run(*args):
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.slow
def test_run_add_a_strategy_then_report(tmp_path):
    tiny = ["--seeds", "2", "--rounds", "2", "--max-epochs", "3", "--threads", "1", "--out", tmp_path]
    _run("run", "digits", "--strategies", "random,margin", *tiny)
    # a later run adds a strategy to the same experiment: the stored runs are reused, pairing holds
    out = _run("run", "digits", "--strategies", "random,margin,jacobian", *tiny)
    assert json.loads(out.strip().splitlines()[-1])["ranking"]
    report = json.loads(_run("report", "--out", tmp_path, "--docs", tmp_path / "docs"))
    table = report["digits"]
    assert set(table) == {"random", "margin", "jacobian"}
    for name in ("margin", "jacobian"):
        row = table[name]
        assert row["seeds"] == 2 and row["vs_random"]["n"] == 2
        assert 0 < row["aulc"]["mean"] < 1
    assert table["jacobian"]["vs_strong"]["baseline"] == "margin"
    assert table["random"]["vs_random"] is None
    assert (tmp_path / "docs" / "curves_digits.png").stat().st_size > 0
    assert "| jacobian | 2 |" in (tmp_path / "docs" / "learning_curves.md").read_text()


@pytest.mark.slow
def test_scenario_protocol_reports_wasted_labels(tmp_path):
    tiny = ["--seeds", "2", "--rounds", "2", "--max-epochs", "3", "--threads", "1", "--out", tmp_path]
    _run("run", "digits-open-set", "--strategies", "random,margin,jacobian", *tiny)
    report = json.loads(_run("report", "--out", tmp_path))
    table = report["digits-open-set"]
    for name in ("random", "margin", "jacobian"):
        sc = table[name]["scenario"]
        assert 0 < sc["wasted_share"]["mean"] < 1 and len(sc["labels_per_class"]) == 6
    assert table["jacobian"]["scenario"]["wasted_vs_random"]["n_seeds"] == 2
    assert "labels wasted" in (tmp_path / "table.md").read_text()


@pytest.mark.slow
def test_open_report_merges_run_directories(tmp_path, mnist_root):
    """Arms of one open-pool protocol run into two directories are reported together, paired over
    the seeds asked for, with the per-arm gap to the best baseline and both figures."""
    tiny = ["--seeds", "2", "--rounds", "2", "--max-epochs", "2", "--threads", "1", "--data-root", mnist_root]
    _run("run", "open-junk-40", "--strategies", "random:off,margin,jacobian", "--out", tmp_path / "a", *tiny)
    _run("run", "open-junk-40", "--strategies", "ldm-s,jacobian:class-floor", "--out", tmp_path / "b", *tiny)
    report = json.loads(_run("open-report", "--out", tmp_path / "a", "--out", tmp_path / "b", "--seed-range", "0:2",
                             "--docs", tmp_path / "docs"))
    pool = report["open-junk-40"]
    assert set(pool["arms"]) == {"random:off", "margin", "jacobian", "ldm-s", "jacobian:class-floor"}
    best = pool["jacobian"]["best_baseline"]
    assert best in ("margin", "ldm-s")
    gap = pool["arms"]["jacobian"]["vs_best"]
    assert gap["n"] == 2 and abs(gap["mean"] - (pool["arms"]["jacobian"]["aulc"] - pool["arms"][best]["aulc"])) < 1e-9
    assert all(0 <= a["wasted_share"] <= 1 for a in pool["arms"].values())
    for name in ("open-pools-curves-seeds-0-1.png", "open-pools-gap-seeds-0-1.png", "results-seeds-0-1.json"):
        assert (tmp_path / "docs" / name).stat().st_size > 0
    # the gap figure alone for chosen arms, under a tag: nothing else written
    _run("open-report", "--out", tmp_path / "a", "--out", tmp_path / "b", "--seed-range", "0:2",
         "--gap-arms", "jacobian,jacobian:class-floor", "--tag", "study", "--docs", tmp_path / "study")
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == ["open-pools-gap-study-seeds-0-1.png",
                                                                      "results-study-seeds-0-1.json"]
    # class discovery: per round, the classes with no labeled item, from each run's labels_per_class
    import sqlite3

    import numpy as np

    found = json.loads(_run("open-discovery", "--run", f"jacobian={tmp_path / 'a'}:jacobian",
                            "--run", f"the class floor={tmp_path / 'b'}:jacobian:class-floor",
                            "--pools", "open-junk-40", "--docs", tmp_path / "docs"))
    with sqlite3.connect(tmp_path / "b" / "open-junk-40" / "loop.sqlite") as con:
        rows = con.execute("SELECT round, metrics FROM round_metrics WHERE strategy = 'jacobian:class-floor'").fetchall()
    want = [np.mean([(np.asarray(json.loads(m)["labels_per_class"]) == 0).sum() for r_, m in rows if r_ == r])
            for r in range(3)]
    got = found["open-junk-40"]["the class floor"]
    assert got["seeds"] == 2 and np.allclose(got["unlabeled_classes"], want)
    assert found["open-junk-40"]["jacobian"]["unlabeled_classes"][0] == got["unlabeled_classes"][0]  # same first labels
    assert (tmp_path / "docs" / "open-pools-discovery.png").stat().st_size > 0
    r = subprocess.run([sys.executable, str(SCRIPT), "open-discovery", "--run", f"x={tmp_path / 'nowhere'}:jacobian"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "LABEL=DIR:ARM" in r.stderr
