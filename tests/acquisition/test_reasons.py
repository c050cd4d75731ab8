"""Every pick carries a reason: its fields against a float64 per-item reference, and every writer formats them."""
import csv
import json

import numpy as np
import pytest
import torch

import jacal
from jacal import io as jio
from jacal.acquisition.reasons import REASON_FIELDS
from _reference import reference_boundary

STRATEGIES = sorted(jacal.STRATEGIES)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = jacal.mlp(30, 6, width=24, depth=2, dropout=0.1, seed=2).eval()
    return model, torch.randn(150, 30)


@pytest.mark.parametrize("strategy", ["jacobian"])  # the strategy that selects by boundary distance
def test_jacobian_reason_fields_match_a_float64_reference(setup, strategy):
    model, pool = setup
    res = jacal.acquire(model, pool, 10, strategy=strategy, seed=1)
    runner, dist = reference_boundary(model, pool[res.indices])
    np.testing.assert_array_equal(res.reason_fields["runner_up"], runner.numpy())
    np.testing.assert_allclose(res.reason_fields["boundary_distance"], dist.numpy(), rtol=1e-3)
    # what the strategy used: its per-item score is ‖v‖ = 1 / distance
    np.testing.assert_allclose(res.reason_fields["boundary_distance"], 1 / res.scores[res.indices], rtol=1e-6)
    for r, i in enumerate(res.indices):
        a, b = int(res.predicted[i]), int(runner[r])
        assert res.reasons[r].startswith(f"between {a} and {b}, {dist[r].item():.3g} from the boundary")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_gives_every_pick_a_one_line_reason(setup, strategy):
    model, pool = setup
    res = jacal.acquire(model, pool, 7, strategy=strategy, labeled=np.arange(5), seed=0)
    assert len(res.reasons) == 7 and all(isinstance(s, str) and s and "\n" not in s for s in res.reasons)
    assert set(res.reason_fields) <= set(REASON_FIELDS) | {"predicted", "confidence"}
    assert all(len(v) == 7 for v in res.reason_fields.values())
    p = torch.softmax(model(pool[res.indices]).double(), 1).detach().numpy()
    top2 = np.sort(p, axis=1)[:, -2:]
    np.testing.assert_allclose(res.reason_fields["margin"], top2[:, 1] - top2[:, 0], atol=1e-6)  # float32 logits, other batch
    np.testing.assert_array_equal(res.reason_fields["predicted"], res.predicted[res.indices])
    assert (res.reason_fields["runner_up"] != res.reason_fields["predicted"]).all()
    np.testing.assert_array_equal(res.reason_fields["selection_score"], res.selection_scores)
    if strategy == "bald":  # the score the strategy ranked by
        np.testing.assert_allclose(res.reason_fields["mutual_information"], res.scores[res.indices])
        assert res.reasons[0].startswith("mutual information")
    if strategy == "margin":
        assert "margin" in res.reasons[0]


def test_open_set_reason_names_the_in_distribution_score_and_floor(setup):
    model, pool = setup
    res = jacal.acquire(model, pool, 5, strategy="jacobian", labeled=np.arange(30), out_of_set=np.arange(8), seed=0)
    f = res.reason_fields
    assert {"in_distribution", "in_distribution_floor"} <= set(f)
    for r in range(5):
        s, fl = f["in_distribution"][r], f["in_distribution_floor"][r]  # the layer is soft: an item may sit below
        assert f"in-distribution {s:.2f} {'≥' if s >= fl else '<'} floor {fl:.2f}" in res.reasons[r]
    closed = jacal.acquire(model, pool, 5, strategy="jacobian", seed=0)
    assert "in_distribution" not in closed.reason_fields and "in-distribution" not in closed.reasons[0]


def test_writers_carry_the_reasons(setup, tmp_path):
    model, pool = setup
    res = jacal.acquire(model, pool, 4, strategy="jacobian", seed=0)
    ids = [f"item{i}" for i in range(len(pool))]
    names = list("abcdef")
    jio.write_batch(tmp_path / "b.csv", res, ids, fmt="csv")
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert [r["reason"] for r in rows] == res.reasons
    np.testing.assert_allclose([float(r["boundary_distance"]) for r in rows], res.reason_fields["boundary_distance"])
    jio.write_batch(tmp_path / "b.jsonl", res, ids, fmt="jsonl")
    lines = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [x["runner_up"] for x in lines] == res.reason_fields["runner_up"].tolist()
    tasks = jio.label_studio_tasks(res, ids, label_names=names)
    assert [t["data"]["al_reason"] for t in tasks] == res.reasons
    assert [t["data"]["al_runner_up"] for t in tasks] == [names[b] for b in res.reason_fields["runner_up"]]
    assert all(isinstance(t["data"]["al_boundary_distance"], float) for t in tasks)
    recs = jio.argilla_records(res, ids, label_names=names)
    assert [r["metadata"]["al_reason"] for r in recs] == res.reasons
    assert recs[0]["metadata"]["al_margin"] == pytest.approx(res.reason_fields["margin"][0])


def test_batch_summary_counts_the_picks_by_class_pair(setup, tmp_path):
    from jacal.acquisition.reasons import batch_figure, batch_summary

    model, pool = setup
    res = jacal.acquire(model, pool, 20, strategy="jacobian", seed=0)
    s = batch_summary(res)
    a, b = res.reason_fields["predicted"], res.reason_fields["runner_up"]
    counts = np.zeros((6, 6), int)
    for i, j in zip(a, b):
        counts[i, j] += 1
    assert s["pairs"] == counts.tolist() and s["k"] == 20
    und = {(min(i, j), max(i, j)) for i, j in zip(a, b)}
    assert s["pairs_covered"] == len(und) and s["pairs_possible"] == 15
    assert sum(c for _, c in s["top_pairs"]) <= 20 and s["top_pairs"][0][1] == max(
        sum((min(i, j), max(i, j)) == p for i, j in zip(a, b)) for p in und)
    assert s["boundary_distance_median"] == pytest.approx(np.median(res.reason_fields["boundary_distance"]))
    assert batch_figure(res, tmp_path / "b.png") == s and (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="`result`"):
        batch_summary(object())
