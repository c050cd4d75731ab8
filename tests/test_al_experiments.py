"""benchmarks/al_experiments.py at a tiny size, so the script behind the active-learning benchmark pages cannot rot."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "al_experiments.py"


def _run(*args):
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout


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
