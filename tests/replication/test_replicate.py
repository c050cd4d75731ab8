import json
import random
import signal
import sqlite3
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from _helpers import (INTERRUPTED_RESUMABLE, REPLICATE_TINY, cli, fsize_limit, integrity, kill_at_random_moment,
                      one_line_error, one_line_failure, signal_after_rows)
from jacal.cli.app import app
from jacal.replication.analysis import analyse

TINY = REPLICATE_TINY


def _tables(db):
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(models)") if r[1] != "wall_time_s"]
    models = con.execute(f"SELECT {', '.join(cols)} FROM models ORDER BY model_id").fetchall()
    points = con.execute("SELECT * FROM points ORDER BY model_id, point_index").fetchall()
    trajs = con.execute("SELECT * FROM trajectories ORDER BY model_id, kind, construction, traj_index").fetchall()
    pairs = con.execute("SELECT * FROM pairs ORDER BY pair_id").fetchall()
    con.close()
    return models, points, trajs, pairs


def test_outputs_and_report(uninterrupted):
    out, summary = uninterrupted
    report = json.loads((out / "report.json").read_text())
    ids = [c["id"] for c in report["claims"]]
    assert ids[:2] == ["C1", "C2a"] and "C4" in ids and "C6" in ids and len(ids) == 12
    for c in report["claims"]:
        assert c["verdict"] in ("replicated", "not replicated", "inconclusive", "not tested") and c["reason"]
        assert c["rule_sources"] and set(c["rule_sources"]) <= {"[paper]", "[ours]"}
    by = {c["id"]: c for c in report["claims"]}
    c2c = by["C2c"]["statistic"]
    assert set(c2c["activations"]) <= {"relu"} and set(c2c["constructions"]) == {"data-matched", "standard-normal"}
    assert c2c["n_ellipses"] == {"random (data-matched)": 6, "random (standard-normal)": 6, "different-class": 6,
                                 "same-class": 6}  # the tiny run's --c2-ellipses
    assert set(c2c["mean_density_per_length"]) == set(c2c["mean_density"])
    assert report["exclusions"]["c2_models"] == 3  # --c2-seeds 1 × three architectures
    assert "n_ellipses" in by["C2d"]["statistic"] and "activations" in by["C2d"]["statistic"]
    assert by["C6"]["verdict"] == "not tested" and by["C6"]["statistic"]["param_decades"] < 3
    assert report["sweep_version"] == 4
    assert {c["id"] for c in summary["claims"]} == set(ids)
    for name in report["figures"]:
        png = out / name
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(report["figures"]) == 6
    md = (out / "report.md").read_text()
    assert md.index("## Claims") < md.index("## Figures") < md.index("## Protocol")
    models, points, trajs, pairs = _tables(out / "results.sqlite")
    assert len(models) == report["n_models"] and len(points) > 0 and len(trajs) > 0
    assert report["exclusions"]["fit_threshold"] == 0.995
    assert not list(out.glob(".*tmp"))


def _same(a_tables, b_tables):
    """Two stores hold the same rows (floats to 1e-9), none missing or duplicated."""
    assert [m[0] for m in a_tables[0]] == [m[0] for m in b_tables[0]]
    for a, b in zip(a_tables, b_tables):
        assert len(a) == len(b)
        for ra, rb in zip(a, b):
            assert len(ra) == len(rb)
            for va, vb in zip(ra, rb):
                if isinstance(va, float) and isinstance(vb, float):
                    assert va == pytest.approx(vb, rel=1e-9, abs=1e-12)
                else:
                    assert va == vb


def _keeps(before, after):
    """Every model row committed ``before`` is still in ``after``, unchanged."""
    now = {m[0]: m for m in after[0]}
    assert all(now.get(m[0]) == m for m in before[0]), "a committed row was lost or changed"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # several subprocess runs; their time follows the machine's load
def test_faults_then_resume_give_the_uninterrupted_results(uninterrupted, tmp_path):
    """A full disk, then Ctrl-C, then SIGKILLs at random moments; --resume ends with exactly the
    uninterrupted run's store, and no fault loses a committed row."""
    full_out, _ = uninterrupted
    full = _tables(full_out / "results.sqlite")
    out = tmp_path / "faulted"
    db = out / "results.sqlite"
    cmd = cli("replicate", "--out", out, *TINY, "--resume")
    # 1. the disk fills up part-way: sqlite's write fails, the transaction rolls back
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=fsize_limit(300_000))
    one_line_failure(r, f"cannot write {db}")
    assert "--resume" in r.stderr and integrity(db) == "ok"
    seen = _tables(db)
    assert 0 < len(seen[0]) < len(full[0]), "the full disk should stop the run part-way"
    # 2. Ctrl-C once another group is committed: exit 130, one line, the group in progress abandoned
    n, proc = signal_after_rows(cmd, db, "models", signal.SIGINT, min_rows=len(seen[0]) + 1)
    assert n is not None and n < len(full[0]), "could not interrupt the run part-way"
    assert proc.returncode == 130 and proc.stderr.strip() == INTERRUPTED_RESUMABLE, proc.stderr
    now = _tables(db)
    _keeps(seen, now)
    seen = now
    # 3. SIGKILLs at random moments (start-up, training, commits, the report)
    rng = random.Random(15)
    for _ in range(2):
        kill_at_random_moment(cmd, rng, 2.0, 10.0)
        assert integrity(db) == "ok"
        now = _tables(db)
        _keeps(seen, now)
        seen = now
    # 4. resume
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _same(_tables(db), full)
    assert json.loads((out / "report.json").read_text())["n_models"] == len(full[0])
    assert not list(out.glob(".*.tmp")), "a killed run's temporary files were left behind"


def test_replicate_bad_input(tmp_path, uninterrupted):
    run = CliRunner().invoke
    one_line_error(run(app, ["replicate", "--dataset", "svhn", "--out", str(tmp_path / "a")]), "svhn")
    one_line_error(run(app, ["replicate", "--dataset", "mnist", "--data-root", str(tmp_path / "none"),
                              "--out", str(tmp_path / "b")]), "does not exist")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(run(app, ["replicate", "--out", str(blocker / "sub")]), "cannot create output folder")
    one_line_error(run(app, ["replicate", "--out", str(uninterrupted[0]), *TINY]), "--resume")
    one_line_error(run(app, ["replicate", "--out", str(uninterrupted[0]), *TINY[:-4], "--steps", "99", "--resume"]),
                    "different run")
    one_line_error(run(app, ["replicate", "--groups", "0", "--out", str(tmp_path / "c")]), "--groups")
    one_line_error(run(app, ["replicate", "--preset", "huge"]), "huge")


def _synthetic(n, rho_sign, seed=0):
    rng = np.random.default_rng(seed)
    jac = np.exp(rng.normal(size=n))
    gap = rho_sign * np.log(jac) * 0.02 + 0.05 + 0.002 * rng.normal(size=n)
    models = []
    for i in range(n):
        models.append(dict(model_id=f"m{i:03d}", dataset="digits", random_labels=0, train_accuracy=1.0,
                           test_accuracy=1 - gap[i], gap=gap[i], mean_jacobian=jac[i], transitions=10.0 * (i % 4 + 1),
                           n_neurons=64 * (i % 4 + 1), n_params=1000 * (i % 4 + 1), train_loss=1e-3 * (1 + i % 3),
                           width=64, depth=i % 4 + 1, activation="relu"))
    return models


def test_analysis_known_answers_on_synthetic_store():
    pos = analyse(_synthetic(40, +1), [], [], [], fit_threshold=0.995)
    c1 = next(c for c in pos["claims"] if c["id"] == "C1")
    assert c1["verdict"] == "replicated" and c1["statistic"]["rho"] > 0.9
    neg = analyse(_synthetic(40, -1), [], [], [], fit_threshold=0.995)
    assert next(c for c in neg["claims"] if c["id"] == "C1")["verdict"] == "not replicated"
    few = analyse(_synthetic(6, +1), [], [], [], fit_threshold=0.995)
    assert next(c for c in few["claims"] if c["id"] == "C1")["verdict"] == "inconclusive"
    c5 = next(c for c in pos["claims"] if c["id"] == "C5")
    assert c5["verdict"] == "replicated" and c5["statistic"]["rho"] == pytest.approx(1.0)
    # unfitted models are excluded from gap analyses and counted
    models = _synthetic(30, +1)
    for m in models[:10]:
        m["train_accuracy"] = 0.9
    res = analyse(models, [], [], [], fit_threshold=0.995)
    assert res["exclusions"]["not_fitting_training_set"] == 10
    assert next(c for c in res["claims"] if c["id"] == "C1")["statistic"]["n"] == 20
    # C3 pairs: variants with 10× the base Jacobian norm → replicated for random labels
    models = _synthetic(20, +1)
    pairs = []
    for i in range(10):
        v = dict(models[i], model_id=f"v{i}", random_labels=1, mean_jacobian=models[i]["mean_jacobian"] * 10, gap=0.9)
        models.append(v)
        pairs.append(dict(pair_id=f"p{i}", factor="random_labels", base_id=models[i]["model_id"], variant_id=f"v{i}"))
    c3 = next(c for c in analyse(models, pairs, [], [], fit_threshold=0.995)["claims"] if c["id"] == "C3-random_labels")
    assert c3["verdict"] == "replicated" and c3["statistic"]["sign_p"] == pytest.approx(0.5 ** 10)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # several subprocess runs; their time follows the machine's load
def test_replicate_on_colour_images_with_flips(tmp_path, monkeypatch):
    """The CIFAR path (3 channels, translations + horizontal flips, 3,072 inputs) on fake CIFAR-10 files."""
    import pickle

    import torchvision

    from jacal.replication import run_replication

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (30, 3072), dtype=np.uint8),
                         "labels": list(rng.integers(0, 10, 30))}, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    report = run_replication(tmp_path / "out", preset="smoke", datasets=["cifar10"], data_root=tmp_path,
                             device="cpu", overrides={"n_groups": 1, "models_per_group": 2, "pairs_per_factor": 1,
                                                      "steps": 30, "full_batch_steps": 30, "ellipse_points": 12,
                                                      "jacobian_points": 40, "stored_points": 30, "c2_ellipses": 2,
                                                      "c2_steps": 30, "c2_architectures": ((16, 1),)})
    models = _tables(tmp_path / "out" / "results.sqlite")[0]
    assert len(models) >= 2 and report["preset"]["datasets"] == ["cifar10"]
    assert all(m[1] == "cifar10" for m in models)


def test_pairs_differ_in_one_factor_and_train_until_fit():
    """Version-2 pairs: two fresh models of the base's config, one factor changed, both trained until
    they fit under the declared caps."""
    from jacal.replication.config import FACTORS, PRESETS, plan_models, plan_pairs

    p = PRESETS["smoke"]
    base = plan_models(p, "digits", 0)
    fitted = {b.model_id: 0.01 * ((7 * i) % 11) for i, b in enumerate(base[::2])}  # id → training loss
    planned, pairs = plan_pairs(p, "digits", base, fitted)
    by_id = {m.model_id: m for m in planned}
    src = {b.model_id: b for b in base}
    assert {q.factor for q in pairs} == set(FACTORS) and len(planned) == 2 * len(pairs)
    for q in pairs:
        b, v = by_id[q.base_id].config, by_id[q.variant_id].config
        assert b.until_fit == v.until_fit == p.fit_threshold
        changed = {k for k in b.to_dict() if b.to_dict()[k] != v.to_dict()[k]} - {"steps"}
        assert changed == {"random_labels": {"random_labels"}, "augmentation": {"augment"},
                           "full_batch": {"batch_size"}, "saturating": {"activation"}}[q.factor]
        origin = next(s for s in src.values() if s.config.seed == b.seed)
        assert origin.model_id in fitted and {**origin.config.to_dict(), "steps": 0, "until_fit": 0} == \
            {**b.to_dict(), "steps": 0, "until_fit": 0}
        cap = {"random_labels": p.steps * p.random_label_steps_factor, "full_batch": p.full_batch_steps}
        assert v.steps == cap.get(q.factor, p.steps * p.variant_steps_factor)
    # bases: the lowest training losses first, at most ceil(pairs / 4) (or pairs / groups) per group
    for factor in FACTORS:
        ids = [next(s.model_id for s in src.values() if s.config.seed == by_id[q.base_id].config.seed)
               for q in pairs if q.factor == factor]
        pool = [i for i in fitted if factor != "saturating" or src[i].config.activation == "relu"]
        n_groups = len({i.rsplit("-m", 1)[0] for i in pool})
        per_group = max(-(-p.pairs_per_factor // 4), -(-p.pairs_per_factor // n_groups))
        counts = {}
        for i in ids:
            counts[i.rsplit("-m", 1)[0]] = counts.get(i.rsplit("-m", 1)[0], 0) + 1
        assert max(counts.values()) <= per_group and len(ids) == min(p.pairs_per_factor, len(pool))
        assert [fitted[i] for i in ids] == sorted(fitted[i] for i in ids)  # taken in order of training loss
        for i in set(pool) - set(ids):  # a skipped candidate that fits more comfortably had a full group
            if (fitted[i], i) < max((fitted[j], j) for j in ids):
                assert counts.get(i.rsplit("-m", 1)[0], 0) == per_group


def _c2_rows(models, *, random_density, same_density, diff_density, k=24, n=20, constructions=("data-matched", "standard-normal"),
             v_shape=True, seed=0):
    """Synthetic C2 trajectories: exact transitions per step drawn around the given per-kind densities
    (random: one density per construction), ‖J‖ 1e3 on random ellipses and 1 at data anchors."""
    rng = np.random.default_rng(seed)
    anchors = [k // 6, k // 2, 5 * k // 6]
    from jacal.replication.c2 import angular_distance_to_anchors

    ang = angular_distance_to_anchors(k)
    rows = []
    for m in models:
        for c, dens in zip(constructions, random_density):
            for i in range(n):
                rows.append(dict(model_id=m, kind="random", construction=c, traj_index=i,
                                 jacobian=list(1e3 * np.exp(rng.normal(0, 0.1, k // 4))),
                                 transitions=list(rng.poisson(dens, k)), sampled=list(rng.poisson(dens, k)),
                                 length=100.0, anchors=anchors))
        for kind, dens in (("different-class", diff_density), ("same-class", same_density)):
            for i in range(n):
                lam = dens * (0.2 + 1.6 * ang / ang.max()) if (v_shape and kind == "different-class") else np.full(k, dens)
                jac = np.exp(rng.normal(0, 0.1, k // 4)) * (3.0 if kind == "different-class" else 1.5)
                jac[[a // 4 for a in anchors]] = 1.0
                rows.append(dict(model_id=m, kind=kind, construction="", traj_index=i, jacobian=list(jac),
                                 transitions=list(rng.poisson(lam)), sampled=list(rng.poisson(lam)), length=2.0,
                                 anchors=anchors))
    return rows


def _c2_models(n, loss=1e-3):
    return [dict(model_id=f"digits-c2-w64d1-s{i}", dataset="digits", activation="relu", train_loss=loss, random_labels=0,
                 train_accuracy=1.0) for i in range(n)]


def test_c2_known_answers_and_construction_dependence():
    from jacal.replication.c2_claims import c2_claims

    models = _c2_models(4)
    ids = [m["model_id"] for m in models]
    claims, ex = c2_claims(_c2_rows(ids, random_density=(4.0, 4.0), same_density=0.5, diff_density=2.0), models,
                           max_train_loss=0.01, constructions=("data-matched", "standard-normal"))
    got = {cid: (stat, v) for cid, stat, v in claims}
    for cid in ("C2a", "C2b", "C2c", "C2d"):
        assert got[cid][1]["verdict"] == "replicated", (cid, got[cid][1])
    c2c = got["C2c"][0]
    assert c2c["n_ellipses"]["random (data-matched)"] == 20 and c2c["activations"] == ["relu"]
    assert c2c["mean_density"]["same-class"] == pytest.approx(0.5, rel=0.2)
    # per length: the data ellipses are 50× shorter, so per unit length random (4·24/100) is below same-class (0.5·24/2)
    assert c2c["mean_density_per_length"]["random (data-matched)"] < c2c["mean_density_per_length"]["same-class"]
    assert c2c["per_length"]["verdict"] == "not replicated"
    assert set(c2c["constructions"]) == {"data-matched", "standard-normal"} and not c2c["depends_on_construction"]
    assert c2c["constructions"]["data-matched"]["mean_length"] == pytest.approx(100.0)
    assert got["C2d"][0]["pooled_median_rho"] > 0.2 and got["C2d"][0]["n_ellipses"]["different-class"] == 20
    # the primary random ellipse below same-class, the alternative above: the verdict follows the primary
    # and says that it depends on the construction
    claims, _ = c2_claims(_c2_rows(ids, random_density=(0.1, 4.0), same_density=0.5, diff_density=2.0), models,
                          max_train_loss=0.01, constructions=("data-matched", "standard-normal"))
    stat, v = next((s, v) for cid, s, v in claims if cid == "C2c")
    assert v["verdict"] == "not replicated" and "depends on the random ellipse's construction" in v["reason"]
    assert stat["depends_on_construction"] and stat["constructions"]["standard-normal"]["verdict"] == "replicated"
    # a flat different-class profile: no dip at the anchors → C2d not replicated (20 ellipses)
    claims, _ = c2_claims(_c2_rows(ids, random_density=(4.0, 4.0), same_density=0.5, diff_density=2.0, v_shape=False),
                          models, max_train_loss=0.01, constructions=("data-matched", "standard-normal"))
    assert next(v for cid, _, v in claims if cid == "C2d")["verdict"] == "not replicated"
    # models above the loss threshold are left out and listed; none kept → inconclusive
    claims, ex = c2_claims(_c2_rows(ids, random_density=(4.0, 4.0), same_density=0.5, diff_density=2.0),
                           _c2_models(4, loss=0.5), max_train_loss=0.01, constructions=("data-matched", "standard-normal"))
    assert ex["c2_models_kept"] == 0 and len(ex["c2_models_not_near_zero_loss"]) == 4
    assert all(v["verdict"] == "inconclusive" for _, _, v in claims)


def test_c6_by_size_decade_and_not_tested_below_three_decades():
    rng = np.random.default_rng(0)
    models = []
    for i in range(40):
        n_params = int(10 ** (3.2 + 3.3 * i / 39))  # 1.6e3 … 3.2e6: 3.3 decades
        gap = 0.3 - 0.04 * np.log10(n_params) + 0.01 * rng.random()
        models.append(dict(model_id=f"digits-g{i:02d}-m00", dataset="digits", random_labels=0, train_accuracy=1.0,
                           test_accuracy=1 - gap, gap=gap, mean_jacobian=1.0, transitions=1.0, n_neurons=10,
                           n_params=n_params, train_loss=10 ** rng.uniform(-4, -2), width=8, depth=1, activation="relu"))
    c6 = next(c for c in analyse(models, [], [], [], fit_threshold=0.995)["claims"] if c["id"] == "C6")
    assert c6["verdict"] == "replicated", c6["reason"]
    assert c6["statistic"]["param_decades"] == pytest.approx(3.3, abs=0.01)
    assert c6["statistic"]["lowest_gap_in_top_decade"] and c6["statistic"]["rho_decade_best_gap"] == pytest.approx(-1.0)
    # the biggest models generalize worst → not replicated
    flipped = [dict(m, gap=0.5 - m["gap"]) for m in models]
    assert next(c for c in analyse(flipped, [], [], [], fit_threshold=0.995)["claims"] if c["id"] == "C6")["verdict"] \
        == "not replicated"
    # training loss that predicts the gap → not replicated
    lossy = [dict(m, train_loss=10 ** (-6 + 10 * m["gap"])) for m in models]
    assert next(c for c in analyse(lossy, [], [], [], fit_threshold=0.995)["claims"] if c["id"] == "C6")["verdict"] \
        == "not replicated"
    # under 3 decades: not tested, the span in the reason
    narrow = [m for m in models if m["n_params"] < 10 ** 5.5]
    c6 = next(c for c in analyse(narrow, [], [], [], fit_threshold=0.995)["claims"] if c["id"] == "C6")
    assert c6["verdict"] == "not tested" and "decades of parameter count" in c6["reason"]
    assert c6["statistic"]["param_decades"] < 3


def test_transition_claims_use_piecewise_linear_models_only():
    models = _synthetic(30, +1)
    for m in models[:10]:
        m["activation"] = "tanh"
        m["transitions"] = 1e6  # would break C5's correlation if counted
    res = analyse(models, [], [], [], fit_threshold=0.995)
    c5 = next(c for c in res["claims"] if c["id"] == "C5")
    assert c5["statistic"]["n"] == 20 and c5["statistic"]["rho"] == pytest.approx(1.0)
    assert res["exclusions"]["smooth_activation_models_excluded_from_transition_claims"] == 10


def test_resume_refuses_a_version_3_store_untouched(tmp_path):
    from jacal._internal.store import open_store
    from jacal.replication.store import SCHEMA

    out = tmp_path / "v3"
    out.mkdir()
    db = out / "results.sqlite"
    v3_schema = SCHEMA.split("CREATE TABLE IF NOT EXISTS trajectories")[0] + (
        "CREATE TABLE IF NOT EXISTS trajectories (model_id TEXT NOT NULL, kind TEXT NOT NULL, traj_index INTEGER NOT NULL, "
        "jacobian TEXT NOT NULL, transitions TEXT NOT NULL, anchors TEXT NOT NULL, PRIMARY KEY (model_id, kind, traj_index));")
    con = open_store(db, "replicate", v3_schema)
    with con:
        con.execute("INSERT INTO meta VALUES ('signature', ?)", (json.dumps({"version": 3, "seed": 0}),))
    con.close()
    before = db.read_bytes()
    result = CliRunner().invoke(app, ["replicate", "--out", str(out), "--resume", "--device", "cpu"])
    one_line_error(result, "sweep-version-3")
    assert "choose another --out" in result.stderr and db.read_bytes() == before
