import json

import numpy as np
import pytest
import torch
from _cli import run as _run
from _helpers import one_line_error


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "model.pt"
    r = _run("train", "--out", path, "--epochs", "3", "--width", "32", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["dataset"] == "digits" and 0.5 < info["metrics"]["test_accuracy"] <= 1.0
    return path


def test_help_for_every_command():
    for cmd in ([], ["train"], ["score"], ["replicate"], ["acquire"], ["confidence"], ["loop"], ["serve"]):
        r = _run(*cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


def test_every_choice_uses_hyphens(tmp_path):
    """Strategy names use hyphens, so every other fixed choice of every command does too (one style)."""
    import typer

    import jacal
    from jacal.cli.app import app

    root = typer.main.get_command(app)
    seen = set()
    for name, cmd in root.commands.items():
        for param in cmd.params:
            if param.type_descriptor.is_choice:
                choices = [getattr(c, "value", c) for c in param.type_descriptor.choices]
                seen.update(choices)
                bad = [c for c in choices if "_" in c]
                assert not bad, f"jacal {name} {param.opts[0]}: {bad}"
    assert {"max-softmax", "jacobian-noise", "leaky-relu", "log-softmax", "label-studio"} <= seen
    for names in (jacal.STRATEGIES, jacal.confidence.METHODS, jacal.models.ACTIVATIONS, jacal.sensitivity.OUTPUTS):
        assert not [n for n in names if "_" in n], names
    (tmp_path / "m.pt").write_bytes(b"")
    (tmp_path / "d.npy").write_bytes(b"")
    one_line_error(_run("confidence", "--model", tmp_path / "m.pt", "--data", tmp_path / "d.npy", "--method",
                        "max_softmax"),
                   "'max_softmax' is not one of 'max-softmax'")


def test_score_dataset_to_csv_and_json(checkpoint, tmp_path):
    out = tmp_path / "scores.csv"
    r = _run("score", checkpoint, "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "scored 450 points (digits/test)" in r.stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "id,jacobian_norm,predicted,label" and len(lines) == 451
    jout = tmp_path / "scores.json"
    r = _run("score", checkpoint, "--out", jout, "--json")
    summary = json.loads(r.stdout)
    saved = json.loads(jout.read_text())
    assert summary["n"] == 450 and len(saved["scores"]) == 450
    norms = np.array([s["jacobian_norm"] for s in saved["scores"]])
    assert summary["mean"] == pytest.approx(norms.mean(), rel=1e-5)
    csv_norms = np.array([float(l.split(",")[1]) for l in lines[1:]])
    np.testing.assert_allclose(csv_norms, norms, rtol=1e-6)


def test_score_array_files(checkpoint, tmp_path):
    x = np.random.default_rng(0).random((7, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "a.npz", x=x, ids=np.array([f"item{i}" for i in range(7)]))
    torch.save({"x": torch.from_numpy(x)}, tmp_path / "a.pt")
    results = []
    for name in ("a.npy", "a.npz", "a.pt"):
        out = tmp_path / f"{name}.json"
        r = _run("score", checkpoint, "--input", tmp_path / name, "--out", out)
        assert r.exit_code == 0, r.output
        results.append(json.loads(out.read_text())["scores"])
    assert results[1][0]["id"] == "item0" and results[0][0]["id"] == 0
    assert [s["jacobian_norm"] for s in results[0]] == [s["jacobian_norm"] for s in results[2]]


def test_refuses_to_overwrite_without_force(checkpoint, tmp_path):
    out = tmp_path / "s.csv"
    out.write_text("keep me")
    one_line_error(_run("score", checkpoint, "--out", out), "--force")
    assert out.read_text() == "keep me"
    assert _run("score", checkpoint, "--out", out, "--force").exit_code == 0


def test_bad_inputs(checkpoint, tmp_path):
    one_line_error(_run("score", tmp_path / "missing.pt"), "Invalid value for 'checkpoint': file")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint")
    one_line_error(_run("score", corrupt), "not a jacal checkpoint, TorchScript file")
    nan = tmp_path / "nan.npy"
    arr = np.zeros((3, 64), np.float32)
    arr[1, 5] = np.nan
    np.save(nan, arr)
    one_line_error(_run("score", checkpoint, "--input", nan), "NaN or Inf in 1 row(s): 1")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 10), np.float32))
    one_line_error(_run("score", checkpoint, "--input", wrong), "expects 64 input features")
    bad_file = tmp_path / "bad.npy"
    bad_file.write_bytes(b"garbage")
    one_line_error(_run("score", checkpoint, "--input", bad_file), "could not read")
    one_line_error(_run("train", "--dataset", "nope"), "nope")
    one_line_error(_run("train", "--dataset", "mnist", "--data-root", tmp_path / "nothing", "--out", tmp_path / "m.pt"),
                    "does not exist")
    one_line_error(_run("train", "--dataset", "mnist", "--data-root", tmp_path, "--out", tmp_path / "m.pt"),
                    "not found under")
    one_line_error(_run("score", checkpoint, "--method", "fast"), "fast")
    one_line_error(_run("score", checkpoint, "--out", tmp_path / "x.txt"), "--format")
    assert not (tmp_path / "x.txt").exists()


def test_cli_entry_point_runs_as_installed_script(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "jacal.cli.app", "score", str(tmp_path / "none.pt")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == f"error: Invalid value for 'checkpoint': file '{tmp_path / 'none.pt'}' does not exist."
    assert "Traceback" not in r.stderr


def test_missing_input_files_are_one_line_usage_errors(tmp_path):
    """Every input file option is checked before any work (exists=True): one line that names the option."""
    here, gone, out = tmp_path / "here.npy", tmp_path / "gone.npy", tmp_path / "o.csv"
    here.write_bytes(b"")
    cases = [(["score", gone], "'checkpoint': file"), (["score", here, "--input", gone], "'--input': file"),
             (["train", "--pool", gone, "--labels", here], "'--pool': path"),
             (["train", "--pool", here, "--labels", gone], "'--labels': file"),
             (["acquire", "--model", gone, "--pool", here, "--k", 1, "--out", out], "'--model': file"),
             (["acquire", "--model", here, "--pool", gone, "--k", 1, "--out", out], "'--pool': path"),
             (["acquire", "--model", here, "--pool", here, "--k", 1, "--out", out, "--exclude", gone], "'--exclude': file"),
             (["confidence", "--model", here, "--data", gone], "'--data': path"),
             (["confidence", "--model", here, "--data", here, "--labels", gone], "'--labels': file"),
             (["confidence", "--model", here, "--data", here, "--fit-data", gone], "'--fit-data': path"),
             (["confidence", "--model", here, "--data", here, "--fit-labels", gone], "'--fit-labels': file")]
    for args, fragment in cases:
        one_line_error(_run(*args), f"Invalid value for {fragment} '{gone}' does not exist.")
    one_line_error(_run("acquire", "--model", tmp_path, "--pool", here, "--k", 1, "--out", out), "is a directory")
    assert not out.exists()


def test_loop_arch_and_strategies(monkeypatch, tmp_path):
    """--arch and --strategies reach the loop's config; loop has no --model (elsewhere it names a checkpoint)."""
    import jacal
    import jacal.cli._loop as loop_cli

    seen = []

    def run_loop(out, cfg, **kwargs):
        seen.append(cfg)
        raise jacal.JacalError("stopped before the work")

    monkeypatch.setattr(loop_cli, "run_loop", run_loop)
    one_line_error(_run("loop", "--arch", "cnn", "--strategies", "margin, jacobian", "--out", tmp_path), "stopped")
    assert seen[-1].model == "cnn" and seen[-1].strategies == ("margin", "jacobian")
    one_line_error(_run("loop", "--model", "cnn", "--out", tmp_path), "No such option: --model")
    for args, fragment in [(["--arch", "transformer"], "'transformer' is not one of 'mlp', 'cnn'"),
                           (["--strategies", "margin,oracle"], "'oracle' is not one of 'random'"),
                           (["--strategies", "jacobian-diverse"], "'jacobian-diverse' is not one of 'random'")]:
        one_line_error(_run("loop", *args, "--out", tmp_path), fragment)
    assert len(seen) == 1 and "--model" not in _run("loop", "--help").output


def test_split_is_a_choice(checkpoint):
    one_line_error(_run("score", checkpoint, "--split", "val"), "'val' is not one of 'train', 'test'")


def test_version_and_retired_strategies_out_of_help():
    import jacal

    r = _run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"jacal {jacal.__version__}"
    for cmd in (["acquire"], ["loop"], ["serve"]):
        out = _run(*cmd, "--help").output
        assert "jacobian-diverse" not in out and ("jacobian-topk" in out or cmd == ["serve"]), cmd
