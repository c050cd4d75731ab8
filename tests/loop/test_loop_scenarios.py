"""jacal loop on scenario pools at a tiny size: what is stored is what the labeled sets say, a cold start
picks before any model is trained, a killed run resumes, and the CLI reports the scenario."""
import dataclasses
import json
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from jacal.cli.app import app
from jacal.data import load_dataset
from jacal.loop import LOOP_PRESETS, run_loop
from jacal.loop.config import seed_splits
from jacal.scenarios import OUT_OF_SET, build_scenario

TINY = dataclasses.replace(LOOP_PRESETS["smoke"], seeds=2, rounds=2, max_epochs=3, patience=2, val_size=60,
                           strategies=("random", "margin", "jacobian"))


def _stored(out):
    con = sqlite3.connect(out / "loop.sqlite")
    rows = con.execute("SELECT strategy, seed, round, n_labeled, labeled FROM rounds ORDER BY 1, 2, 3").fetchall()
    met = {(s, sd, r): json.loads(m) for s, sd, r, m in con.execute("SELECT * FROM round_metrics")}
    con.close()
    return rows, met


@pytest.mark.parametrize("scenario,params", [("open-set", (("share", 0.4),)), ("repeated", (("copies", 2.0),)),
                                             ("long-tail", (("ratio", 5.0),))])
def test_round_metrics_are_what_the_labeled_sets_say(tmp_path, scenario, params):
    cfg = dataclasses.replace(TINY, scenario=scenario, scenario_params=params)
    summary = run_loop(tmp_path, cfg, device="cpu")
    sp = build_scenario(scenario, load_dataset("digits"), dict(params))
    y = sp.data.y_train.numpy()
    rows, met = _stored(tmp_path)
    prev = {}
    for s, seed, rnd, n, lab in rows:
        lab = np.array(json.loads(lab))  # the set this round ends with
        before = prev.get((s, seed), seed_splits(sp.data, cfg, seed, sp.labelable, sp.group)[2])
        m = met[(s, seed, rnd)]
        assert n == len(before)
        assert m["wasted_total"] == int((y[before] == OUT_OF_SET).sum())
        assert m["labels_per_class"] == np.bincount(y[before][y[before] >= 0], minlength=sp.data.n_classes).tolist()
        batch = np.setdiff1d(lab, before)
        if rnd < cfg.rounds:
            assert len(batch) == cfg.k
            assert m["wasted_share"] == pytest.approx((y[batch] == OUT_OF_SET).mean())
            seen = set(sp.group[before].tolist())
            g = sp.group[batch]
            fresh = [x for x in g.tolist() if x not in seen]
            assert m["duplicate_share"] == pytest.approx((len(g) - len(set(fresh))) / len(g))
        else:
            assert len(batch) == 0 and "wasted_share" not in m
        assert 0 <= m["balanced_accuracy"] <= 1
        prev[(s, seed)] = lab
    sc = summary["scenario"]
    assert set(sc) == set(cfg.strategies)
    if scenario == "open-set":
        assert sc["random"]["wasted_share"]["mean"] > 0
        assert "wasted_vs_random" in sc["jacobian"]
    assert (tmp_path / "curves.png").stat().st_size > 0 and "What the labels bought" in (tmp_path / "report.md").read_text()


def test_validation_split_is_labelable():
    sp = build_scenario("open-set", load_dataset("digits"))
    val, pool, initial = seed_splits(sp.data, TINY, 0, sp.labelable)
    assert sp.labelable[val].all() and not set(val) & set(pool) and set(initial) <= set(pool)
    assert not sp.labelable[pool].all()  # the pool keeps its out-of-set items
    # the pool and the first labeled set are random draws: their out-of-set shares are the scenario's
    assert abs((~sp.labelable[pool]).mean() - 0.4) < 0.08
    cfg = dataclasses.replace(TINY, initial=100, pool_size=600)
    _, pool, initial = seed_splits(sp.data, cfg, 1, sp.labelable)
    assert len(pool) == 600 and 0.2 < (~sp.labelable[initial]).mean() < 0.6


def test_a_capped_pool_keeps_every_copy():
    sp = build_scenario("repeated", load_dataset("digits"), {"copies": 3})
    cfg = dataclasses.replace(TINY, pool_size=300, initial=30)
    val, pool, initial = seed_splits(sp.data, cfg, 0, sp.labelable, sp.group)
    counts = np.bincount(sp.group[pool])
    assert len(pool) == 300 and set(counts[counts > 0].tolist()) <= {1, 2, 3} and (counts == 3).sum() >= 95
    assert len(set(sp.group[initial])) >= 25  # the first labeled set is a random draw, not a few groups' copies
    assert not set(val) & set(pool) and np.array_equal(seed_splits(sp.data, cfg, 0, sp.labelable, sp.group)[1], pool)


def test_cold_start_then_resume(tmp_path):
    cfg = dataclasses.replace(TINY, initial=0, cold_start="typiclust", scenario="open-set")
    first = run_loop(tmp_path, dataclasses.replace(cfg, strategies=("random", "margin")), device="cpu")
    rows, met = _stored(tmp_path)
    r0 = [r for r in rows if r[2] == 0]
    assert all(r[3] == 0 for r in r0)  # nothing labeled before round 0
    lab = {(r[0], r[1]): json.loads(r[4]) for r in r0}
    assert lab[("margin", 0)] != lab[("random", 0)]  # typicality, not the random draw
    # a later run adds a strategy: the stored rounds stay, the new one runs, margin's cold start equals jacobian's
    again = run_loop(tmp_path, cfg, device="cpu", resume=True)
    rows2, _ = _stored(tmp_path)
    assert set(rows) <= set(rows2)
    lab2 = {(r[0], r[1]): json.loads(r[4]) for r in rows2 if r[2] == 0}
    assert lab2[("jacobian", 0)] == lab2[("margin", 0)]
    assert set(again["strategies"]) == {"random", "margin", "jacobian"} and set(first["strategies"]) == {"random", "margin"}


def test_cli_loop_scenario_json(tmp_path):
    r = CliRunner().invoke(app, ["loop", "--out", str(tmp_path / "o"), "--scenario", "open-set", "--scenario-params",
                                 "share=0.3", "--rounds", "1", "--seeds", "2", "--max-epochs", "2", "--strategies",
                                 "random,jacobian", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out["scenario"]) == {"random", "jacobian"} and out["scenario"]["random"]["wasted_share"]["mean"] > 0


def test_metric_bands_and_panel_choice():
    from jacal.loop.figures import metric_bands, panel_metric

    rows = [(s, seed, r, 20 + 10 * r, 0.5, 1.0, 0.1, 3) for s in ("random", "jacobian") for seed in (0, 1)
            for r in (0, 1)]
    met = {}
    for s, seed, r, n, *_ in rows:
        wasted = {"random": 8 + 4 * r, "jacobian": 8 + r}[s] + seed  # labels spent on out-of-set items so far
        m = {"wasted_total": wasted, "labels_per_class": [n - wasted, 0], "balanced_accuracy": 0.5}
        if r == 0:
            m.update(wasted_share=0.4 if s == "random" else 0.1 * seed, duplicate_share=0.0)
        met[(s, seed, r)] = m
    cum = metric_bands(rows, met, "wasted_cumulative")
    ns, mean, lo, hi = cum["jacobian"]
    assert ns.tolist() == [20, 30]
    np.testing.assert_allclose(mean, [(8 / 20 + 9 / 20) / 2, (9 / 30 + 10 / 30) / 2])
    assert (lo >= 0).all() and (hi <= 1).all()  # a 2-seed t band is wide: clipped to what a share can be
    ns, mean, _, _ = metric_bands(rows, met, "wasted_share")["jacobian"]
    assert ns.tolist() == [20] and mean.tolist() == [pytest.approx(0.05)]  # the last round has no next batch
    assert panel_metric(TINY, met) == "wasted_cumulative"
    clean = {key: {**m, "wasted_total": 0} for key, m in met.items()}
    assert panel_metric(dataclasses.replace(TINY, scenario="long-tail"), clean) == "rarest_class_labels"
    assert panel_metric(TINY, clean) is None and panel_metric(TINY, None) is None
