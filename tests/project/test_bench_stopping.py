"""benchmarks/stopping.py end to end on a tiny synthetic MNIST, and its choice rule."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from _helpers import fake_mnist_family

ROOT = Path(__file__).resolve().parents[2]


def _module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_stopping", ROOT / "benchmarks" / "stopping.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_loops_then_replay_give_the_same_tables(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 255, (400, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 400).astype(np.uint8),
             x_test=rng.integers(0, 255, (100, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, 100).astype(np.uint8))
    mod = _module()
    args = ["--data-root", str(tmp_path), "--seeds", "2", "--strategies", "margin", "--pool", "200", "--stop-set",
            "50", "--initial", "20", "--per-round", "20", "--max-labels", "120", "--steps", "5", "--width", "16",
            "--design-seeds", "0"]
    mod.main([*args, "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out")])
    first = json.loads(capsys.readouterr().out)
    assert first["selection"]["design_seeds"] == [0] and first["selection"]["held_out_seeds"] == [1]
    mod.main(["--replay", str(tmp_path / "raw"), "--design-seeds", "0", "--out", str(tmp_path / "again")])
    again = json.loads(capsys.readouterr().out)
    assert again["overall"] == first["overall"] and again["selection"] == first["selection"]
    saved = json.loads((tmp_path / "out" / "stopping.json").read_text())
    assert len(saved["runs"]) == 2 and len(saved["runs"][0]["labels"]) == 6  # 20, 40, ..., 120
    assert (tmp_path / "out" / "curve_margin.png").read_bytes()[:4] == b"\x89PNG"
    assert "settled-predictions" in (tmp_path / "out" / "tables.md").read_text()


def test_choose_takes_the_fewest_labels_among_those_clearing_the_bar():
    mod = _module()
    ok = {"labels_ratio_mean": 1.2, "accuracy_lost_mean": 0.004, "accuracy_lost_max": 0.009, "stopped": 3, "runs": 3}
    summary = {"a": {**ok, "labels_mean": 1500}, "b": {**ok, "labels_mean": 1200},
               "c": {**ok, "labels_mean": 900, "accuracy_lost_max": 0.015},  # over the design bar
               "d": {**ok, "labels_mean": 800, "stopped": 2},  # did not stop in every run
               "budget": {**ok, "labels_mean": 100}}  # never a candidate
    pick = mod.choose(summary)
    assert pick["criterion"] == "b" and pick["candidates_clearing"] == ["a", "b"]
    none = {"x": {**ok, "labels_mean": 1, "accuracy_lost_mean": 0.02}, "y": {**ok, "labels_mean": 2,
                                                                          "accuracy_lost_mean": 0.03}}
    assert mod.choose(none) == {"criterion": "x", "cleared_design_bar": False, "candidates_clearing": []}


def test_an_open_scenario_counts_the_none_answers_as_labels_sent_and_never_trains_on_them(tmp_path, capsys):
    fake_mnist_family(tmp_path, "MNIST", 600, 120)
    mod = _module()
    mod.main(["--data-root", str(tmp_path), "--scenario", "open-set", "--scenario-params", "share=0.4,known=6",
              "--seeds", "1", "--strategies", "jacobian", "--pool", "300", "--stop-set", "50", "--initial", "30",
              "--per-round", "30", "--max-labels", "120", "--steps", "5", "--width", "16", "--design-seeds", "",
              "--raw", str(tmp_path / "raw")])
    capsys.readouterr()
    run = json.loads((tmp_path / "raw" / "curves.json").read_text())["curves"][0]
    assert run["labels"] == [30, 60, 90, 120]
    assert run["wasted"][0] > 0 and run["wasted"] == sorted(run["wasted"]) and run["wasted"][-1] < 120
    saved = json.loads((tmp_path / "raw" / "curves.json").read_text())["config"]
    assert saved["scenario"] == "open-set" and saved["scenario_params"] == "share=0.4,known=6"
    mod.main(["--scenario-report", str(tmp_path / "raw"), "--out", str(tmp_path / "report")])
    printed = json.loads(capsys.readouterr().out)
    res = json.loads((tmp_path / "report" / "scenarios.json").read_text())
    v = res["scenarios"]["raw"]["strategies"]["jacobian"]
    assert printed["scenarios"]["raw"]["jacobian"] == v["criteria"][res["default"]]
    assert v["wasted_share_at_end"] == run["wasted"][-1] / 120 and v["curve"]["labels"] == run["labels"]
    assert "| raw | jacobian |" in (tmp_path / "report" / "scenarios.md").read_text()
    assert (tmp_path / "report" / "scenarios.png").read_bytes()[:4] == b"\x89PNG"


def test_a_cnn_on_three_channel_images(tmp_path, capsys):
    fake_mnist_family(tmp_path, "MNIST", 600, 120)
    mod = _module()
    mod.main(["--data-root", str(tmp_path), "--scenario", "image3", "--scenario-params", "size=12", "--model", "cnn",
              "--seeds", "1", "--strategies", "margin", "--pool", "200", "--stop-set", "40", "--initial", "20",
              "--per-round", "20", "--max-labels", "60", "--steps", "3", "--width", "8", "--design-seeds", "",
              "--raw", str(tmp_path / "raw")])
    capsys.readouterr()
    obs = mod.load_raw(tmp_path / "raw" / "observations.npz")["margin/0"]
    assert obs["predictions"].shape == (3, 40) and obs["probs"].shape == (3, 40, 10)


def test_a_run_of_held_out_seeds_only_reports_without_choosing(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 255, (300, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 300).astype(np.uint8),
             x_test=rng.integers(0, 255, (50, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, 50).astype(np.uint8))
    _module().main(["--data-root", str(tmp_path), "--seeds", "1", "--first-seed", "3", "--strategies", "random",
                    "--pool", "150", "--stop-set", "30", "--initial", "20", "--per-round", "20", "--max-labels", "80",
                    "--steps", "3", "--width", "8"])
    res = json.loads(capsys.readouterr().out)
    assert "selection" not in res and res["overall"]["stabilizing-predictions"]["runs"] == 1


def test_without_raw_mnist_a_scenario_run_says_it_skipped(tmp_path, capsys):
    _module().main(["--data-root", str(tmp_path), "--scenario", "long-tail", "--seeds", "1"])
    assert "skipped" in json.loads(capsys.readouterr().out)
