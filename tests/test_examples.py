"""The examples run as documented."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "transitions around the ellipse" in r.stdout


def test_labeling_pipeline_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "labeling_pipeline.py"), "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "to_label.csv").read_text().splitlines()
    assert rows[0] == "id,rank,score,predicted,confidence" and len(rows) == 51
    assert (tmp_path / "to_review.csv").exists()
