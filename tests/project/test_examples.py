"""The examples run as documented."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "transitions around the ellipse" in r.stdout


@pytest.mark.slow
def test_labeling_pipeline_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "labeling_pipeline.py"), "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "to_label.csv").read_text().splitlines()
    assert rows[0].startswith("id,rank,score,predicted,confidence,reason,runner_up") and len(rows) == 51
    assert (tmp_path / "to_review.csv").exists()


@pytest.mark.slow
def test_label_studio_round_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "label_studio_round.py"), "--workdir", str(tmp_path)],
                       capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "second batch disjoint from the first" in r.stdout
    first, second = (json.loads((tmp_path / f"round{n}_tasks.json").read_text(encoding="utf-8")) for n in (1, 2))
    pool = {row["id"] for row in csv.DictReader((tmp_path / "manifest.csv").open(encoding="utf-8", newline=""))}
    ids1, ids2 = ({t["data"]["id"] for t in tasks} for tasks in (first, second))
    assert len(ids1) == len(ids2) == 40 and not ids1 & ids2 and (ids1 | ids2) <= pool
    assert all(t["predictions"][0]["model_version"] == "jacal" for t in second)  # stable across rounds


@pytest.mark.slow
def test_custom_strategy_runs():
    """A strategy written from the public API alone: registered, selected by name, batch spread over classes."""
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_strategy.py")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": picks" in line)
    assert set(lines) == {"class-balanced-jacobian", "jacobian-topk"}
    covered = lines["class-balanced-jacobian"].split("covered ")[1].split(";")[0]
    assert covered == "10/10", r.stdout  # 20 picks round robin over 10 predicted classes: 2 each
    assert "per class [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]" in lines["class-balanced-jacobian"]
