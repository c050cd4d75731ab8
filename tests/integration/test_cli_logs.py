"""Long commands in a log file (stdout/stderr not a terminal): progress lines, and tables kept whole."""
import re
import types

import pytest

from typer.testing import CliRunner

from _helpers import LOOP_TINY
from jacal.cli import _common
from jacal.cli.app import app


def test_progress_lines_at_most_every_interval(monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(_common, "time", types.SimpleNamespace(monotonic=lambda: clock[0], strftime=lambda f: "12:00:00"))
    monkeypatch.setenv("JACAL_PROGRESS_SECONDS", "30")
    lazy = _common.LazyProgress()
    task = lazy.progress.add_task("models", total=None)
    lazy.begin(task, 10)
    for t in (10, 20, 31, 40, 62):
        clock[0] = float(t)
        lazy.progress.advance(task)
    lazy.stop()
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[12:00:00] models 3/10 (30%) · 31s elapsed, about 1m12s left",
                     "[12:00:00] models 5/10 (50%) · 1m02s elapsed, about 1m02s left",
                     "[12:00:00] models 5/10 (50%) · 1m02s elapsed, about 1m02s left"]


def test_no_progress_lines_before_the_interval_or_with_json(monkeypatch, capsys):
    monkeypatch.setenv("JACAL_PROGRESS_SECONDS", "3600")
    lazy = _common.LazyProgress()
    task = lazy.progress.add_task("models", total=None)
    lazy.begin(task, 10)
    lazy.progress.advance(task)
    lazy.stop()
    monkeypatch.setenv("JACAL_PROGRESS_SECONDS", "0")
    quiet = _common.LazyProgress(enabled=False)
    task = quiet.progress.add_task("models", total=None)
    quiet.begin(task, 10)
    quiet.progress.advance(task)
    quiet.stop()
    assert capsys.readouterr().out == ""


@pytest.mark.timeout(900)
def test_loop_in_a_log_file(tmp_path):
    """`jacal loop > log`: progress lines in the log, the result table one line per strategy, and stderr
    left to warnings and errors."""
    args = LOOP_TINY[:LOOP_TINY.index("--max-epochs")] + ["--max-epochs", "5", "--device", "cpu"]
    r = CliRunner().invoke(app, ["loop", "--out", str(tmp_path / "run"), *args], env={"JACAL_PROGRESS_SECONDS": "0"})
    assert r.exit_code == 0, r.output
    progress = [line for line in r.stdout.splitlines() if re.match(r"\[\d\d:\d\d:\d\d\] ", line)]
    assert r.stderr == ""
    assert len(progress) >= 4 and all(re.match(r"\[\d\d:\d\d:\d\d\] .* \d+/6 \(\d+%\) · ", line) for line in progress), progress
    assert "(100%)" in progress[-1]
    table = r.stdout.splitlines()
    for strategy in ("jacobian", "margin"):
        rows = [line for line in table if line.startswith(f"│ {strategy} ")]
        assert len(rows) == 1, r.stdout
    assert "…" not in r.stdout and max(map(len, table)) > 80  # laid out wider than a terminal, not cut


def test_replicate_claims_table_in_a_log_file(monkeypatch, tmp_path):
    """The claims table keeps one line per claim (no "replica…", no 80-column wrap) off a terminal."""
    import jacal.cli._replicate as replicate_cli
    from jacal.replication.analysis import PAPER

    verdicts = ("replicated", "not replicated", "inconclusive", "not tested")
    claims = [{"id": cid, "short": text, "verdict": verdicts[i % 4], "reason": "the rule's reason, in one sentence",
               "statistic": {"rho": 0.4321, "ci_low": 0.1234, "ci_high": 0.6789, "p": 0.0012, "n": 64}}
              for i, (cid, text) in enumerate(PAPER.items())]
    report = {"preset": {"name": "smoke"}, "n_models": 64, "claims": claims, "exclusions": []}
    monkeypatch.setattr(replicate_cli, "run_replication", lambda out, **kwargs: report)
    r = CliRunner().invoke(app, ["replicate", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "…" not in r.stdout
    for claim in claims:
        rows = [line for line in lines if line.startswith(f"│ {claim['id']} ")]
        assert len(rows) == 1 and claim["verdict"] in rows[0] and claim["short"] in rows[0], r.stdout
