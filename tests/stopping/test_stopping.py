"""jacal.stopping: every criterion against a hand computation, its state round trip, its errors."""
import json
import math

import numpy as np
import pytest
import torch

import jacal
from jacal.stopping import CRITERIA, Observation, criterion, kappa, load_state, observe, oracle_stop, save_state, \
    stop_table
from jacal.stopping.measure import summarize
from _reference import reference_boundary


def obs(pred, runner=None, k=3, probs=None, dist=None, picked=None):
    pred = np.asarray(pred)
    if probs is None:
        probs = np.full((len(pred), k), 0.1 / (k - 1))
        probs[np.arange(len(pred)), pred] = 0.9
    runner = (pred + 1) % k if runner is None else np.asarray(runner)
    return Observation(pred, np.asarray(probs, dtype=float), runner, None if dist is None else np.asarray(dist, float),
                       None if picked is None else np.asarray(picked, float))


def test_kappa_matches_a_hand_computation():
    a, b = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    # p_o = 4/6; p_e = (2·2 + 2·3 + 2·1)/36 = 1/3; κ = (2/3 − 1/3)/(1 − 1/3) = 1/2
    assert kappa(a, b) == pytest.approx(0.5)
    assert kappa([3, 3, 3], [3, 3, 3]) == 1.0  # sklearn: NaN (no chance term); identical: full agreement


def test_stabilizing_predictions_stops_after_window_rounds_of_high_kappa():
    crit = criterion("stabilizing-predictions", threshold=0.99, window=3)
    base = np.arange(300) % 3
    flip = base.copy()
    flip[:30] = (flip[:30] + 1) % 3  # κ well below 0.99
    seq = [base, flip, base, base, base, base]
    stops = [crit.step(obs(p)).stop for p in seq]
    # round 1: nothing to compare; 2, 3: big changes; 4, 5, 6: κ = 1 → stop at the third of them
    assert stops == [False, False, False, False, False, True]
    adv = crit.step(obs(base))
    assert adv.stop and adv.value == 1.0 and "≥ 0.99" in adv.reason and adv.round == 7


def test_a_low_round_resets_the_window():
    crit = criterion("stabilizing-predictions", window=2)
    base, other = np.zeros(100, int), np.r_[np.zeros(50, int), np.ones(50, int)]
    assert [crit.step(obs(p, k=2)).stop for p in [base, base, other, other, other]] == [False, False, False, False,
                                                                                         True]


def test_classification_change_is_the_changed_share():
    crit = criterion("classification-change", threshold=0.02)
    p0 = np.zeros(100, int)
    p1 = p0.copy()
    p1[:3] = 1
    assert not crit.step(obs(p0)).stop
    a = crit.step(obs(p1))
    assert a.value == pytest.approx(0.03) and not a.stop
    a = crit.step(obs(p1))
    assert a.value == 0.0 and a.stop


def test_uncertainty_criteria_use_normalized_entropy():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    h = np.array([math.log(2) / math.log(3), 0.0])
    o = obs([0, 0], probs=p)
    a = criterion("overall-uncertainty", threshold=0.4).step(o)
    assert a.value == pytest.approx(h.mean()) and a.stop  # 0.315 ≤ 0.4
    a = criterion("max-uncertainty", threshold=0.5).step(o)
    assert a.value == pytest.approx(h.max()) and not a.stop and "stop set" in a.reason
    o.picked_probs = np.array([[0.98, 0.01, 0.01]])
    a = criterion("max-uncertainty", threshold=0.5).step(o)
    assert a.stop and "picked" in a.reason


def test_budget():
    crit = criterion("budget", labels=300)
    assert not crit.step(obs([0]), labeled=200).stop
    assert crit.step(obs([0]), labeled=300).stop
    with pytest.raises(ValueError, match="`labeled`"):
        crit.step(obs([0]))
    with pytest.raises(ValueError, match="`labels`"):
        criterion("budget").step(obs([0]), labeled=5)


def test_boundary_pairs_are_unordered_and_see_runner_up_changes():
    crit = criterion("boundary-pairs", window=1)
    pred = np.array([0, 1, 2, 0] * 25)
    crit.step(obs(pred, runner=(pred + 1) % 3))
    swapped = crit.step(obs((pred + 1) % 3, runner=pred))  # same pairs {a, b}, other side
    assert swapped.value == 1.0 and swapped.stop
    turned = crit.step(obs((pred + 1) % 3, runner=(pred + 2) % 3))  # same classes, other boundary
    assert turned.value < 0.5 and not turned.stop
    stab = criterion("stabilizing-predictions", window=1)
    stab.step(obs((pred + 1) % 3))
    assert stab.step(obs((pred + 1) % 3, runner=(pred + 2) % 3)).value == 1.0  # predictions alone miss it


def test_boundary_share_fixes_delta_at_the_first_round_and_stops_when_the_share_stops_falling():
    crit = criterion("boundary-share", tolerance=0.0, window=2)
    d = np.arange(1.0, 11.0)
    a = crit.step(obs(np.zeros(10, int), dist=d))
    assert a.measured["delta"] == pytest.approx(5.5) and a.value == 0.5
    vals = []
    for shift in (2, 4, 4, 4):
        a = crit.step(obs(np.zeros(10, int), dist=d + shift))
        vals.append((a.value, a.stop))
    assert vals == [(0.3, False), (0.1, False), (0.1, False), (0.1, True)]
    with pytest.raises(ValueError, match="geometry=True"):
        crit.step(obs(np.zeros(10, int)))


def test_observe_boundary_fields_match_a_float64_reference():
    torch.manual_seed(1)
    model = jacal.mlp(20, 5, width=16, depth=2, seed=3).eval()
    x = torch.randn(12, 20)
    o = observe(model, x, geometry=True)
    runner, dist = reference_boundary(model, x)
    np.testing.assert_array_equal(o.runner_up, runner.numpy())
    np.testing.assert_allclose(o.boundary_distance, dist.numpy(), rtol=1e-3)
    np.testing.assert_array_equal(o.predictions, model(x).argmax(1).numpy())


def test_update_state_round_trip_gives_the_uninterrupted_advice(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(40, 64)
    models = [jacal.mlp(64, 10, width=16, depth=1, seed=s % 2).eval() for s in (0, 1, 1, 1, 1)]
    whole = criterion("stabilizing-predictions", window=2)
    full = [whole.update(m, x, labeled=10 * (i + 1)) for i, m in enumerate(models)]
    crit = criterion("stabilizing-predictions", window=2)
    resumed = []
    for i, m in enumerate(models):
        if i:
            crit = load_state(tmp_path / "s.json")
        resumed.append(crit.update(m, x, labeled=10 * (i + 1)))
        save_state(crit, tmp_path / "s.json")
    assert [a.to_dict() for a in resumed] == [a.to_dict() for a in full]
    assert [a.stop for a in full] == [False, False, False, True, True]  # κ = 1 from round 3, window 2
    assert json.loads((tmp_path / "s.json").read_text())["criterion"] == "stabilizing-predictions"


def test_every_criterion_answers_update_and_serializes(tmp_path):
    model = jacal.mlp(64, 10, width=16, depth=1, seed=0).eval()
    x = torch.rand(30, 64)
    for name in CRITERIA:
        crit = criterion(name, **({"labels": 50} if name == "budget" else {}))
        for r in range(2):
            a = crit.update(model, x, labeled=40 * (r + 1), picked=x[:5])
        assert isinstance(a.reason, str) and "\n" not in a.reason and a.criterion == name
        json.dumps(a.to_dict())
        save_state(crit, tmp_path / f"{name}.json")
        assert load_state(tmp_path / f"{name}.json").state_dict() == crit.state_dict()


def test_default_is_the_measured_choice():
    assert criterion().name == "settled-predictions" and criterion().config == {"lag": 3, "tolerance": 0.01,
                                                                                 "window": 2}


@pytest.mark.parametrize("call, match", [
    (lambda: criterion("nope"), "`name`"),
    (lambda: criterion("stabilizing-predictions", threshold=1.5), "`threshold`"),
    (lambda: criterion("stabilizing-predictions", window=0), "`window`"),
    (lambda: criterion("classification-change", threshold=float("nan")), "`threshold`"),
    (lambda: criterion("boundary-share", tolerance=-1), "`tolerance`"),
    (lambda: criterion("budget", labels=0), "`labels`"),
    (lambda: criterion("overall-uncertainty", window=3), "takes"),
    (lambda: criterion().step("x"), "`obs`"),
    (lambda: criterion().step(obs([0]), labeled=-1), "`labeled`"),
    (lambda: observe(jacal.mlp(4, 2, width=4, depth=1), torch.zeros(0, 4)), "`stop_set`"),
])
def test_bad_input_is_one_line_naming_the_parameter(call, match):
    with pytest.raises((ValueError, TypeError), match=match) as e:
        call()
    assert "\n" not in str(e.value)


def test_a_different_stop_set_size_is_refused():
    crit = criterion()
    crit.step(obs([0, 1, 2]))
    with pytest.raises(ValueError, match="same `stop_set`"):
        crit.step(obs([0, 1]))


def test_load_state_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_state(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not a JSON"):
        load_state(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"criterion": "x"}))
    with pytest.raises(ValueError, match="no known criterion"):
        load_state(tmp_path / "other.json")


def test_oracle_stop_and_stop_table():
    acc = [0.5, 0.8, 0.9, 0.95, 0.93, 0.955, 0.95]
    # plateau = mean(0.93, 0.955, 0.95) = 0.945; the last round below 0.935 is index 4 (0.93)
    assert oracle_stop(acc) == 5
    assert oracle_stop([0.9, 0.9, 0.9]) == 0
    assert oracle_stop([0.11, 0.32, 0.19]) == 2  # the last round below the band: never settled, charged the last
    t0 = stop_table([0, 10, 20], [0.11, 0.32, 0.19], {"x": [0, 0, 0]})
    assert t0["oracle"]["settled"] is False and t0["x"]["labels_ratio"] == 1.0
    assert math.isnan(stop_table([0, 10, 20], [0.5, 0.5, 0.5], {"x": [1, 1, 1]})["x"]["labels_ratio"])  # 0 labels
    labels = [100, 200, 300, 400, 500, 600, 700]
    t = stop_table(labels, acc, {"early": [0, 0, 1, 1, 1, 1, 1], "never": [0] * 7})
    assert t["oracle"]["labels"] == 600
    assert t["early"]["labels_ratio"] == pytest.approx(0.5)
    assert t["early"]["accuracy_lost"] == pytest.approx(0.945 - 0.9)
    assert t["never"] == {"round": 6, "labels": 700, "accuracy": 0.95, "labels_ratio": pytest.approx(700 / 600),
                          "accuracy_lost": pytest.approx(-0.005), "stopped": False}
    s = summarize([t, t])
    assert s["early"]["labels_ratio_mean"] == pytest.approx(0.5) and s["never"]["stopped"] == 0
    with pytest.raises(ValueError, match="`accuracy`"):
        oracle_stop([])
    with pytest.raises(ValueError, match="stops"):
        stop_table(labels, acc, {"x": [0]})


def test_settled_predictions_compares_lag_and_last_round_changes():
    crit = criterion("settled-predictions", lag=2, tolerance=0.0, window=1)
    n = 100
    p = [np.zeros(n, int) for _ in range(5)]
    p[1][:10] = 1  # round 2: 10 items move
    p[2][:20] = 1  # round 3: 10 more (learning: the change accumulates)
    p[3][:20] = 1
    p[4][:20] = 1
    p[3][50:55] = 1  # round 4: 5 items flip (noise) ...
    p[4][55:60] = 1  # round 5: ... and 5 others
    adv = [crit.step(obs(x, k=2)) for x in p]
    assert not adv[0].stop and not adv[1].stop and math.isnan(adv[1].value)
    # round 3: vs round 1: 20% changed, vs round 2: 10% → excess 10%
    assert adv[2].value == pytest.approx(0.10) and not adv[2].stop
    # round 4: vs round 2: 15%, vs round 3: 5% → 10%; round 5: vs round 3: 5%, vs round 4: 10% → −5%
    assert adv[3].value == pytest.approx(0.10) and not adv[3].stop
    assert adv[4].value == pytest.approx(-0.05) and adv[4].stop
    assert adv[4].measured["changed_last"] == pytest.approx(0.10)
    with pytest.raises(ValueError, match="`lag`"):
        criterion("settled-predictions", lag=1)
