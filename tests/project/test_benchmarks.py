"""The speed benchmarks and the GPU suite at tiny sizes on CPU, so that the scripts behind the benchmark pages'
figures cannot rot: each runs end to end and prints the JSON its readers expect."""
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_jacobian_reports_the_opt_in_precisions(capsys):
    out = _load("bench_jacobian").main(["--n", "16", "--batch-size", "8", "--repeats", "1", "--ref-points", "4"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(out))
    mlp, cnn = out["results"]
    for r in (mlp, cnn):
        assert r["precisions"]["float32"]["max_rel_err_vs_float64_ref"] < 1e-5
        assert r["precisions_skipped"]["tf32"] == "a no-op on CPU"
        assert "jacal_auto_tf32" not in r["methods"]
    # bf16 runs for the closed-form MLP engine and is refused (so skipped) for the CNN
    assert mlp["methods"]["jacal_auto_bf16"]["points_per_s"] > 0
    assert 0 < mlp["precisions"]["bf16"]["max_rel_err_vs_float64_ref"] < 1e-2
    assert "bf16" in cnn["precisions_skipped"] and "jacal_auto_bf16" not in cnn["methods"]


def test_bench_population_reports_gflops_against_the_gemm_rate(capsys):
    mod = _load("bench_population")
    out = mod.main(["--models", "3", "--width", "8", "--depth", "2", "--batch-size", "8", "--steps", "4", "--n", "40",
                    "--repeats", "1", "--gemm-size", "64", "--optimizer", "rmsprop"])
    assert json.loads(capsys.readouterr().out)["speedups"] == out["speedups"]
    tf = out["trainer_flops"]
    shapes = mod.layer_shapes(64, 8, 2, 10)
    assert shapes == [(64, 8), (8, 8), (8, 10)]
    assert mod.step_flops(shapes, 3, 8) == 6 * 3 * 8 * (64 * 8 + 8 * 8 + 8 * 10)
    rate = mod.step_flops(shapes, 3, 8) * 3 / tf["loop_seconds"] / 1e9  # steps 2..4 are timed
    assert tf["gflop_per_s"] == pytest.approx(rate, rel=0.02, abs=0.01)
    # both rates are printed to 2 decimals: on a busy machine they are a few hundredths, so the ratio of the
    # printed values is only known to within their rounding (±0.005 each)
    a, b = tf["gflop_per_s"], out["gemm"]["mm_gflop_per_s"]
    lo, hi = max(a - 0.005, 0) / (b + 0.005), (a + 0.005) / max(b - 0.005, 1e-9)
    assert lo * 0.98 - 1e-3 <= tf["fraction_of_mm"] <= hi * 1.02 + 1e-3
    assert 0 < tf["executed_fraction_of_counted"] < 1 and out["gemm"]["mm_gflop_per_s"] > 0
    assert "GFLOP/s" in out["note"] and out["flop_formula"].startswith("6 * models * batch")
    assert set(out["results"]) == {"jacal_population", "torch_func_vmap", "sequential_loop"}


def test_bench_population_at_the_smoke_preset_shapes(capsys):
    from jacal.replication.config import PRESETS

    out = _load("bench_population").main(["--shapes", "smoke", "--steps", "2", "--repeats", "1", "--gemm-size", "64"])
    capsys.readouterr()
    pre = PRESETS["smoke"]
    got = [(r["width"], r["depth"], r["batch_size"]) for r in out["shapes"]]
    assert got == list(itertools.product(pre.widths, pre.depths, pre.batch_sizes))
    assert all(r["models"] == pre.models_per_group and r["gflop_per_s"] > 0 for r in out["shapes"])
    agg = out["aggregate"]
    # Consistency of its own figures, not a speed: the fraction is rate / GEMM rate before the rates were
    # rounded to 0.01, so it must lie inside the interval those two roundings allow (whatever the load).
    g, m, h = agg["gflop_per_s"], agg["gemm_mm_gflop_per_s"], 0.005
    assert g > 0 and m > 0
    lo, hi = max(g - h, 0.0) / (m + h), (g + h) / max(m - h, 1e-12)
    assert lo - 5e-4 <= agg["fraction_of_mm"] <= hi + 5e-4


@pytest.mark.slow
def test_bench_acquire_memory_maps_a_synthetic_pool(tmp_path, capsys):
    """The million-item benchmark's path at 400 items: a noisy-MNIST .npy written once, memory-mapped,
    every strategy timed with its anonymous memory over the baseline's."""
    mod = _load("bench_acquire")
    pool = tmp_path / "pool.npy"
    args = ["--pool-size", "400", "--k", "5", "--batch-size", "64", "--mmap", "--pool-file", str(pool),
            "--triad-numbers", "100000", "--strategies", "margin,coreset"]
    out = mod.main(args)
    assert json.loads(capsys.readouterr().out)["results"].keys() == out["results"].keys() == {"margin", "coreset"}
    assert out["memory_mapped"] and out["pool_file"] == str(pool) and "RssAnon" in out["extra_mb_is"]
    assert out["triad"]["gbps"] > 0
    core = out["results"]["coreset"]  # the two halves timed apart, the selection's traffic against the triad
    assert core["seconds"] >= core["model_seconds"] + core["selection_seconds"] - 0.02
    assert core["selection_method"] == "exact" and core["bytes_per_pick"] > 400 * 4  # at least its float32 embedding
    assert core["selection_vs_triad"] > 0 and "bytes_per_pick" not in out["results"]["margin"]
    x = np.load(pool, mmap_mode="r")
    assert x.shape == (400, 1, 28, 28) and x.dtype == np.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    before = pool.stat().st_mtime_ns
    for r in out["results"].values():
        assert r["seconds"] > 0 and r["peak_anon_mb"] > 0 and r["extra_mb"] == pytest.approx(
            r["peak_anon_mb"] - out["baseline_anon_mb"], abs=0.11)
    mod.main(args[:-2] + ["--strategies", "margin"])  # reused, not rewritten
    capsys.readouterr()
    assert pool.stat().st_mtime_ns == before


def test_bench_acquire_open_set_runs_each_strategy_under_its_own_layer(tmp_path, capsys):
    """--open-set times what acquire runs: jacobian under its weighted share floor (every class labeled:
    it cuts), margin and ldm-s under the class floor; --compare-passes times LDM-S's seeding both ways.
    With the untrained model's predictions as the labeled classes the share floor keeps the class floor's."""
    mod = _load("bench_acquire")
    args = ["--pool-size", "400", "--k", "5", "--batch-size", "64", "--mmap", "--pool-file", str(tmp_path / "p.npy"),
            "--triad-numbers", "100000", "--open-set", "100", "--compare-passes", "--strategies", "margin,jacobian,ldm-s"]
    out = mod.main(args)["results"]
    capsys.readouterr()
    assert {n: (r["open_set_layer"], r["open_set_weighted"]) for n, r in out.items()} == {
        "margin": ("class-floor", False), "jacobian": ("share-floor", True), "ldm-s": ("class-floor", False)}
    assert all(r["open_set_sent"] == 100 for r in out.values())
    assert out["jacobian"]["open_set_candidates"] < 300  # 40 of the 100 sent answered "none of these": a cut
    for name in ("jacobian", "ldm-s"):
        assert out[name]["passes_selection_seconds"] >= 0 and "rejection_vs_passes" in out[name]  # ms at 400 items
    pred = mod.main(args[:-2] + ["--open-set-classes", "predicted", "--strategies", "jacobian"])["results"]["jacobian"]
    capsys.readouterr()
    assert pred["open_set_layer"] == "share-floor" and pred["open_set_weighted"]
    assert pred["open_set_candidates"] >= out["jacobian"]["open_set_candidates"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_gpu_suite_tiny_runs_every_part_and_prints_one_json(tmp_path):
    # five subprocess parts, a replicate run among them: minutes on a busy 2-core machine
    r = subprocess.run([sys.executable, str(BENCH / "gpu_suite.py"), "--tiny", "--device", "cpu", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=1100, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    suite = json.loads(r.stdout)  # the whole stdout is one JSON object
    parts = ("jacobian", "population", "population_smoke_shapes", "acquire", "replicate")
    assert list(suite["parts"]) == list(parts)
    assert suite["all_parts_ok"], {k: v.get("error") for k, v in suite["parts"].items()}
    for name in parts:
        assert suite["parts"][name]["seconds"] > 0 and (tmp_path / f"{name}.json").is_file()
    assert suite["machine"]["torch"] and "gpu" in suite["machine"] and "cuda" in suite["machine"]
    h = suite["parts"]
    assert h["population"]["headline"]["speedups"]["population_over_sequential"] > 0
    assert h["population_smoke_shapes"]["headline"]["gflop_per_s"] > 0
    assert set(h["acquire"]["headline"]["seconds"]) == {"jacobian"}
    rep = h["replicate"]["headline"]
    assert rep["n_models"] >= 6 and rep["dataset"] in ("mnist", "digits") and "C1" in rep["verdicts"]
    assert (tmp_path / "replicate" / "report.json").is_file()
    t = suite["targets"]
    assert set(t) == {"population_over_sequential", "population_over_torch_func", "jacobian_opt_in_3x_torch_func_at_1e-3",
                      "jacobian_float32_exact", "replicate_at_least_1000_models", "total_seconds"}
    assert t["jacobian_float32_exact"]["pass"] is True  # exact even at tiny sizes
    assert t["replicate_at_least_1000_models"]["pass"] is False and suite["targets_binding"] is False
    assert all(v["pass"] in (True, False) for v in t.values())  # every part ran, so every target was judged
    assert json.loads((tmp_path / "suite.json").read_text())["parts"].keys() == suite["parts"].keys()


def test_gpu_suite_refuses_a_full_run_without_mnist(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH / "gpu_suite.py"), "--device", "cpu", "--out", str(tmp_path),
                        "--mnist-npz", str(tmp_path / "absent.npz")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode != 0 and "absent.npz is not a file" in r.stderr


def test_gpu_suite_reads_mnist_from_any_npz_path(tmp_path):
    import argparse

    import numpy as np

    import jacal

    rng = np.random.default_rng(0)
    npz = tmp_path / "carried" / "MNIST-compressed.npz"  # not named mnist.npz: the suite links it as OUT/data/mnist.npz
    npz.parent.mkdir()
    np.savez_compressed(npz, x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), y_train=np.arange(30) % 10,
                        x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_test=np.arange(20) % 10)
    args = argparse.Namespace(mnist_npz=npz, data_root=None)
    found = _load("gpu_suite").resolve_mnist(args, tmp_path / "out")
    assert found.name == "mnist.npz" and found.resolve() == npz.resolve()
    data = jacal.load_dataset("mnist", root=args.data_root)
    assert len(data.x_train) == 30 and data.x_train.shape[1:] == (1, 28, 28)


@pytest.mark.slow
def test_confidence_shift_tiny_end_to_end(tmp_path, capsys):
    """The confidence-under-shift benchmark at its --tiny size (digits): JSON, table, figures, resumable."""
    mod = _load("confidence_shift")
    out = mod.main(["--tiny", "--out", str(tmp_path)])
    printed = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert printed == out
    from jacal.confidence import JACOBIAN_METHODS, METHODS

    for arch in ("mlp", "cnn"):
        t = out["table"][arch]
        assert t["seeds"] == [0, 1] and set(t["estimators"]) == set(METHODS)
        row = t["estimators"]["max-softmax"]
        assert 0 <= row["corruption_aurc"]["mean"] <= 1 and row["corruption_aurc"]["n"] == 2
        assert {"ood_auroc_uniform_noise", "ood_auroc_sample_images", "clean_ece"} <= set(row)
        assert set(t["aurc_by_corruption"]["rotate"]) == {"1", "3"}
        assert t["estimators"]["energy"]["time_ratio"] > 0
    tg = out["targets"]
    assert set(tg["pooled"]["corruption_aurc"]["vs_baseline"]) == set(JACOBIAN_METHODS)
    assert tg["pooled"]["corruption_aurc"]["vs_baseline"]["jacobian"]["n_pairs"] == 4
    assert tg["cost"]["limit"] == 2.0 and isinstance(tg["cost"]["met"], bool)
    table = (tmp_path / "table.md").read_text()
    assert all(f"`{m}`" in table for m in METHODS) and "## Targets" in table
    assert (tmp_path / "aurc_by_corruption.png").stat().st_size > 0 and (tmp_path / "aurc_delta.png").exists()
    # a rerun with the same settings reuses every per-model result
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    assert len(stamps) == 4
    again = mod.main(["--tiny", "--out", str(tmp_path)])
    capsys.readouterr()
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()} == stamps
    assert again["table"] == out["table"] and again["targets"] == out["targets"]


def test_confidence_timing_is_the_median_of_paired_rounds(monkeypatch):
    """Each estimator's ratio is the median over rounds of its time over that round's jacobian_norm time."""
    import jacal

    mod = _load("confidence_shift")
    durations = iter([1.0, 3.0, 2.0, 2.0, 4.0, 40.0])  # rounds of (jacobian_norm, max_softmax): ratios 3, 1, 10
    clock = {"t": 0.0, "start": True}

    def fake_counter():
        if not clock["start"]:
            clock["t"] += next(durations)
        clock["start"] = not clock["start"]
        return clock["t"]

    model = jacal.mlp(64, 10, width=8, depth=1, seed=0).eval()
    monkeypatch.setattr(mod, "time", types.SimpleNamespace(perf_counter=fake_counter))
    t = mod.timing(model, torch.rand(20, 64), {"max-softmax": {}}, ["max-softmax"], 8, repeats=3)
    assert t["repeats"] == 3 and t["jacobian_norm_s"] == 2.0 and t["seconds"]["max-softmax"] == 3.0
    assert t["ratio_to_jacobian_norm"]["max-softmax"] == 3.0


@pytest.mark.slow
def test_interleave_acquire_alternates_two_checkouts(tmp_path):
    """The script behind the old-vs-new 60,000-item figures: each checkout's library, in turn."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(BENCH / "interleave_acquire.sh"), str(ROOT), "margin", "2", str(tmp_path),
                        "--pool-size", "200", "--k", "5", "--triad-numbers", "65536"], capture_output=True, text=True, env=env,
                       timeout=240)
    assert r.returncode == 0, r.stderr
    assert [line.split(":")[0] for line in r.stdout.splitlines()] == ["old round 1", "new round 1", "old round 2",
                                                                      "new round 2"]
    for name in ("old-1", "new-1", "old-2", "new-2"):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["pool_size"] == 200 and result["results"]["margin"]["seconds"] > 0


def test_bench_mc_dropout_times_batched_against_per_sample(capsys):
    out = _load("bench_mc_dropout").main(["--items", "16", "--mc-samples", "3", "--batch-size", "8", "--rounds", "1"])
    assert json.loads(capsys.readouterr().out)["median_s"] == out["median_s"]
    assert set(out["median_s"]) == {"batched", "per_sample", "forward_only"} and min(out["median_s"].values()) > 0
    import jacal.features as F
    assert F.MC_BATCH_ROWS == 8192  # restored after the per-sample rounds
