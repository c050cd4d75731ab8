"""The open-pool layer: closed-pool picks pinned, the layer on every public strategy, its calibration
against a float64 reference, and bad input."""
import numpy as np
import pytest
import torch

import jacal

# Picks of every public strategy on a closed pool (seed 5, 8 picks, the first ten items labeled): on a closed
# pool (``out_of_set`` absent or empty) no open-pool layer touches the selection.
PINNED = {"random": [296, 76, 173, 94, 209, 13, 282, 85], "margin": [152, 210, 120, 26, 294, 38, 169, 52],
          "entropy": [223, 88, 187, 49, 31, 21, 11, 177], "least-confidence": [223, 88, 187, 21, 152, 120, 49, 294],
          "bald": [228, 22, 251, 278, 192, 266, 273, 70], "badge": [278, 245, 160, 123, 250, 73, 185, 27],
          "coreset": [261, 251, 266, 192, 30, 22, 228, 119], "ldm-s": [26, 62, 150, 294, 210, 52, 169, 38],
          "jacobian": [210, 152, 26, 38, 22, 169, 120, 262], "jacobian-kmeans": [245, 160, 45, 248, 214, 178, 97, 130],
          "jacobian-topk": [109, 49, 209, 291, 134, 43, 247, 162]}


def _closed_pool():
    g = torch.Generator().manual_seed(3)
    return torch.randn(300, 8, generator=g), jacal.mlp(8, 4, width=16, depth=1, dropout=0.2, seed=0).eval()


@pytest.mark.parametrize("strategy", sorted(PINNED))
@pytest.mark.parametrize("oos", [None, "empty"])
def test_closed_pool_picks_unchanged(strategy, oos):
    pool, model = _closed_pool()
    out_of_set = np.zeros(0, dtype=np.int64) if oos == "empty" else None
    r = jacal.acquire(model, pool, 8, strategy=strategy, labeled=np.arange(10), out_of_set=out_of_set, seed=5)
    assert r.indices.tolist() == PINNED[strategy]


# --- the calibration, against float64 references -------------------------------------------------------

def _ref_loo(ins, outs, m):
    """Per item, float64: its score with itself left out of its own bank."""
    def unit(v):
        return v / max(np.linalg.norm(v), 1e-12)

    def mean_near(q, bank):
        d = sorted(np.linalg.norm(unit(q) - unit(b)) for b in bank)
        return np.mean(d[:m])

    ins, outs = ins.astype(np.float64), outs.astype(np.float64)
    s_in = [mean_near(x, outs) / (mean_near(x, np.delete(ins, i, 0)) + mean_near(x, outs)) for i, x in enumerate(ins)]
    s_out = [mean_near(x, np.delete(outs, i, 0)) / (mean_near(x, ins) + mean_near(x, np.delete(outs, i, 0)))
             for i, x in enumerate(outs)]
    return np.array(s_in), np.array(s_out)


@pytest.mark.parametrize("m", [1, 3])
def test_leave_one_out_scores_match_reference(m):
    from jacal.confidence.openset import in_distribution_floor, leave_one_out_scores

    rng = np.random.default_rng(1)
    ins, outs = rng.normal(size=(12, 5)) + 1.0, rng.normal(size=(7, 5)) - 1.0
    s_in, s_out = leave_one_out_scores(ins, outs, m=m)
    r_in, r_out = _ref_loo(ins, outs, m)
    np.testing.assert_allclose(s_in, r_in, atol=1e-5)
    np.testing.assert_allclose(s_out, r_out, atol=1e-5)
    # the conformal floor is the 5% quantile of the same in-set scores
    assert in_distribution_floor(ins, outs, m=m) == pytest.approx(np.quantile(r_in, 0.05, method="lower"), abs=1e-5)
    # one item alone in its bank: nothing to contrast it with
    assert np.array_equal(leave_one_out_scores(ins, outs[:1], m=m)[1], [0.5])


def _ref_logistic(a, b, C):
    """Penalised logistic regression on logit(s) by scipy's optimizer, float64: 0.5·slope² + C·Σ log-loss."""
    from scipy.optimize import minimize

    def logit(s):
        s = np.clip(s, 1e-3, 1 - 1e-3)
        return np.log(s / (1 - s))

    x = logit(np.r_[a, b])
    y = np.r_[np.ones(len(a)), np.zeros(len(b))]

    def loss(theta):
        z = theta[0] + theta[1] * x
        return 0.5 * theta[1] ** 2 + C * np.sum(np.logaddexp(0, z) - y * z)

    return minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x


@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
def test_calibration_matches_a_reference_logistic_fit(C):
    from jacal.confidence.openset import calibrate_in_set

    rng = np.random.default_rng(2)
    a, b = rng.beta(5, 2, size=40), rng.beta(2, 4, size=15)
    cal = calibrate_in_set(a, b, C=C)
    ref = _ref_logistic(a, b, C)
    assert cal.intercept == pytest.approx(ref[0], abs=2e-3) and cal.slope == pytest.approx(ref[1], abs=2e-3)
    s = np.linspace(0.01, 0.99, 7)
    np.testing.assert_allclose(cal(s), 1 / (1 + np.exp(-(ref[0] + ref[1] * np.log(s / (1 - s))))), atol=1e-3)


def test_calibration_falls_back_to_the_share_of_in_set_answers():
    from jacal.confidence.openset import calibrate_in_set

    # scores that do not separate (out-of-set items score higher): no slope, P = the smoothed in-set share
    cal = calibrate_in_set([0.2, 0.3, 0.25], [0.8, 0.9])
    assert cal.slope == 0 and np.allclose(cal([0.1, 0.9]), 3.5 / 6)
    assert np.allclose(calibrate_in_set([0.5, 0.6], [])([0.1]), 2.5 / 3)
    assert np.isnan(cal([np.nan]))[0]


def test_in_set_probability_is_the_calibrated_score():
    from jacal.confidence.openset import (calibrate_in_set, in_distribution, in_distribution_floor, in_set_probability,
                                          leave_one_out_scores)

    rng = np.random.default_rng(3)
    pool, ins, outs = rng.normal(size=(50, 6)), rng.normal(size=(10, 6)) + 0.5, rng.normal(size=(6, 6)) - 0.5
    r = in_set_probability(pool, ins, outs, spread=False)
    np.testing.assert_allclose(r["score"], in_distribution(pool, ins, outs))
    np.testing.assert_allclose(r["probability"], calibrate_in_set(*leave_one_out_scores(ins, outs))(r["score"]))
    assert r["spread"] is None
    assert r["floor"] == pytest.approx(in_distribution_floor(ins, outs))
    # answers with no finite row: nothing to contrast, the same floor as in_distribution_floor's
    nan_outs = np.full((4, 6), np.nan)
    assert in_set_probability(pool, ins, nan_outs, spread=False)["floor"] == in_distribution_floor(ins, nan_outs) == 0.0
    closed = in_set_probability(pool, ins, None)
    assert np.array_equal(closed["probability"], np.ones(50)) and closed["calibration"] is None


# --- the layer's pieces ------------------------------------------------------------------------------

def test_weighted_key_is_probability_times_percentile_rank():
    from jacal.acquisition.strategies import weighted_key

    s = np.array([3.0, -1.0, 2.0, 2.0, np.nan, 5.0])
    p = np.array([0.5, 1.0, 1.0, 0.2, 1.0, 0.0])
    cand = np.array([0, 1, 2, 3, 5])
    got = weighted_key(s, p, cand)
    ranks = {0: 4, 1: 1, 2: 2.5, 3: 2.5, 5: 5}  # ranks among the five candidates, ties averaged
    for i in cand:
        assert got[i] == pytest.approx(p[i] * ranks[i] / 5)
    assert np.isnan(got[4])


# --- the layer on every public strategy ----------------------------------------------------------------

def _open_pool():
    """In-set items near +e1, out-of-set items near −e1 and a model that has seen neither: 20 sent,
    the second ten answered "none of these"."""
    g = torch.Generator().manual_seed(0)
    ins = torch.randn(150, 8, generator=g) * 0.4 + torch.eye(8)[0] * 2
    outs = torch.randn(150, 8, generator=g) * 0.4 - torch.eye(8)[0] * 2
    return (torch.cat([ins, outs]), jacal.mlp(8, 3, width=16, depth=1, dropout=0.2, seed=1).eval(),
            np.r_[0:10, 150:160], np.arange(150, 160))


def _ref_class_floor(p, pred, candidates, k):
    """Per candidate, one class at a time: kept when P(in) >= 1/2 or >= its predicted class's median P(in)."""
    keep = []
    for i in candidates:
        same = [p[j] for j in candidates if pred[j] == pred[i]]
        if p[i] >= 0.5 or p[i] >= np.median(same):
            keep.append(i)
    return set(keep) if len(keep) >= k else None


def _ref_share_floor(p, pred, candidates, k, labeled_pred=None, n_classes=None):
    """One class at a time: its round(Σ P(in)) most likely in-set candidates (ties by position); the
    class floor while a class is missing from ``labeled_pred`` (the labeled in-set items' predicted classes)."""
    if labeled_pred is not None and any(c not in set(labeled_pred.tolist()) for c in range(n_classes)):
        return _ref_class_floor(p, pred, candidates, k)
    keep = []
    for c in sorted({int(pred[i]) for i in candidates}):
        members = [i for i in candidates if pred[i] == c]
        n_keep = int(round(sum(float(p[i]) for i in members)))
        keep += sorted(members, key=lambda i: (-float(p[i]), i))[:n_keep]
    return set(keep) if len(keep) >= k else None


@pytest.mark.parametrize("strategy", sorted(PINNED))
def test_layer_on_every_strategy(strategy):
    from jacal.confidence.openset import in_set_probability
    from jacal.features import Need, extract_features

    pool, model, sent, oos = _open_pool()
    picks = {layer: jacal.acquire(model, pool, 20, strategy=strategy, labeled=sent, out_of_set=oos, open_set=layer,
                                  seed=2).indices for layer in ("class-floor", "share-floor", "weight", "off", "auto")}
    for p in picks.values():
        assert len(set(p.tolist())) == 20 and not set(p.tolist()) & set(sent.tolist())
    # "off" ignores the answers: the closed-pool selection over the same candidates
    assert np.array_equal(picks["off"], jacal.acquire(model, pool, 20, strategy=strategy, labeled=sent, seed=2).indices)
    # the default layer selects among the class-floor candidates, from the calibrated probability
    f = extract_features(model, pool, need={Need.EMBEDDINGS})
    ins = np.setdiff1d(sent, oos)
    prob = in_set_probability(f.embeddings, f.embeddings[ins], f.embeddings[oos])["probability"]
    allowed = _ref_class_floor(prob, f.probs.argmax(1), np.setdiff1d(np.arange(len(pool)), sent), 20)
    assert set(picks["class-floor"].tolist()) <= allowed
    share = _ref_share_floor(prob, f.probs.argmax(1), np.setdiff1d(np.arange(len(pool)), sent), 20,
                             f.probs[ins].argmax(1), f.probs.shape[1])
    assert share is not None and set(picks["share-floor"].tolist()) <= share
    # "auto": jacobian's own layer is the share floor, every other public strategy's the class floor
    assert np.array_equal(picks["auto"], picks["share-floor" if strategy == "jacobian" else "class-floor"])
    wasted = {layer: int((p >= 150).sum()) for layer, p in picks.items()}
    assert max(wasted["class-floor"], wasted["share-floor"], wasted["weight"]) <= wasted["off"], wasted


def test_a_custom_select_strategy_runs_under_every_layer():
    from jacal.acquisition.strategies import STRATEGIES, Selection, Strategy
    from jacal.confidence.openset import in_set_probability
    from jacal.features import Need, extract_features

    class Last(Strategy):  # takes the highest candidate indices: all out of the set here, unless a layer steps in
        name = "test-last-candidates"

        def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
            idx = np.sort(candidates)[-k:][::-1].copy()
            return Selection(idx, np.zeros(len(f.finite)), np.zeros(k))

    pool, model, sent, oos = _open_pool()

    def picks(layer):
        return jacal.acquire(model, pool, 10, strategy=Last(), labeled=sent, out_of_set=oos, open_set=layer).indices

    assert (picks("off") >= 150).all()
    assert (picks("weight") < 150).all()  # it does not weigh: the calibrated threshold P(in) >= 1/2
    f = extract_features(model, pool, need={Need.EMBEDDINGS})
    prob = in_set_probability(f.embeddings, f.embeddings[np.setdiff1d(sent, oos)], f.embeddings[oos])["probability"]
    allowed = _ref_class_floor(prob, f.probs.argmax(1), np.setdiff1d(np.arange(len(pool)), sent), 10)
    got = picks("class-floor")
    assert set(got.tolist()) <= allowed and got.tolist() == sorted(allowed)[-10:][::-1]
    assert np.array_equal(picks("auto"), got)  # a strategy that names no layer runs under the class floor
    ins = np.setdiff1d(sent, oos)
    share = _ref_share_floor(prob, f.probs.argmax(1), np.setdiff1d(np.arange(len(pool)), sent), 10,
                             f.probs[ins].argmax(1), f.probs.shape[1])
    assert picks("share-floor").tolist() == sorted(share)[-10:][::-1]  # it does not weigh: the floor alone
    assert "test-last-candidates" not in STRATEGIES


def test_share_floor_follows_the_expected_share_per_class():
    from jacal.acquisition.strategies import share_floor_candidates

    rng = np.random.default_rng(4)
    p = rng.random(200)
    probs = np.eye(3)[rng.integers(0, 3, 200)]
    cand = np.flatnonzero(rng.random(200) < 0.8)
    got = share_floor_candidates(p, probs, cand, 5)
    assert set(got.tolist()) == _ref_share_floor(p, probs.argmax(1), cand, 5)
    for c in range(3):  # each class keeps round(Σ P(in)) of its candidates
        members = cand[probs[cand].argmax(1) == c]
        assert np.isin(got, members).sum() == round(p[members].sum())
    # fewer than k left: the k most likely in-set
    low = np.full(200, 0.01)
    assert len(share_floor_candidates(low, probs, cand, 5)) == 5


def test_share_floor_keeps_the_class_floor_until_every_class_is_labeled():
    """A class missing from the labeled in-set items: the class floor's candidates (a class nobody has
    labeled yet scores as far from the set as the unknown items, and a deep cut keeps it unlabeled);
    every class present, or no classes given: the share floor."""
    from jacal.acquisition.strategies import class_floor_candidates, share_floor_candidates

    rng = np.random.default_rng(5)
    p = rng.random(300) * 0.6  # a pool mostly out of the set: the share floor cuts deeper than the class floor
    probs = np.eye(4)[rng.integers(0, 4, 300)]
    cand = np.flatnonzero(rng.random(300) < 0.9)
    share = _ref_share_floor(p, probs.argmax(1), cand, 5)
    klass = _ref_class_floor(p, probs.argmax(1), cand, 5)
    assert len(share) < len(klass)
    assert set(share_floor_candidates(p, probs, cand, 5).tolist()) == share
    assert set(share_floor_candidates(p, probs, cand, 5, labeled_classes=np.array([0, 1, 2, 3, 3])).tolist()) == share
    for seen in (np.array([0, 1, 3, 3]), np.array([2]), np.zeros(0, dtype=int)):
        got = share_floor_candidates(p, probs, cand, 5, labeled_classes=seen)
        assert set(got.tolist()) == klass and np.array_equal(got, class_floor_candidates(p, probs, cand, 5))
    for bad in (np.array([0, 4]), np.array([-1, 2]), np.array([0.5, 1.0])):
        with pytest.raises(ValueError, match="`labeled_classes`"):
            share_floor_candidates(p, probs, cand, 5, labeled_classes=bad)


def test_jacobian_keeps_an_unlabeled_class_within_reach_on_an_open_pool():
    """Through acquire: labeled in-set items the model predicts as only some of its classes, so the
    share floor defers to the class floor; once they cover every class, the share floor cuts."""
    from jacal.acquisition.strategies import Selection, Strategy
    from jacal.confidence.openset import in_set_probability
    from jacal.features import Need, extract_features

    pool, _, _, oos = _open_pool()
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(8, 3))  # the class follows features 2 and 3
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[0, 1], model[1].weight[1, 1], model[1].weight[2, 2] = 1.0, -1.0, 1.5
    f = extract_features(model, pool, need={Need.EMBEDDINGS})
    pred = f.probs.argmax(1)
    two = np.flatnonzero(pred[:150] < 2)[:6]  # labeled in-set items of classes 0 and 1 only
    third = np.flatnonzero(pred[:150] == 2)[:1]
    assert len(two) == 6 and len(third) == 1 and set(pred[two].tolist()) == {0, 1}
    class Last(Strategy):  # the highest candidate indices (out of the set here), to read the candidates off
        name = "test-last-candidates"

        def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
            return Selection(np.sort(candidates)[-k:][::-1].copy(), np.zeros(len(f.finite)), np.zeros(k))

    for labeled_in, floor in ((two, _ref_class_floor), (np.union1d(two, third), _ref_share_floor)):
        sent = np.union1d(labeled_in, oos)
        prob = in_set_probability(f.embeddings, f.embeddings[labeled_in], f.embeddings[oos])["probability"]
        free = np.setdiff1d(np.arange(len(pool)), sent)
        want = floor(prob, pred, free, 10)
        share, klass = _ref_share_floor(prob, pred, free, 10), _ref_class_floor(prob, pred, free, 10)
        assert sorted(share)[-10:] != sorted(klass)[-10:]  # the two floors hand Last different picks
        last = jacal.acquire(model, pool, 10, strategy=Last(), labeled=sent, out_of_set=oos, open_set="share-floor")
        assert last.indices.tolist() == sorted(want)[-10:][::-1]
        got = jacal.acquire(model, pool, 10, strategy="jacobian", labeled=sent, out_of_set=oos, seed=1).indices
        assert set(got.tolist()) <= want
        # the labeled items passed as an array: their classes come from the model's predictions alike
        by_rows = jacal.acquire(model, pool[free], 10, strategy="jacobian", labeled=pool[sent],
                                out_of_set=np.flatnonzero(np.isin(sent, oos)), seed=1).indices
        assert set(free[by_rows].tolist()) <= want


def test_jacobian_on_an_open_pool_weighs_by_the_in_set_probability():
    """Under the share floor the draws are ∝ P(in)·(γ·D)²: an item with P(in) = 0 is never picked, and
    the first pick is the largest P(in)·γ."""
    import dataclasses

    from jacal.acquisition.strategies import get_strategy
    from jacal.features import Need, extract_features

    pool, model, sent, oos = _open_pool()
    f = extract_features(model, pool, need={Need.BOUNDARY_EMBEDDING, Need.EMBEDDINGS})
    w = np.where(np.arange(len(pool)) < 150, 1.0, 0.0)
    cand = np.setdiff1d(np.arange(len(pool)), sent)
    sel = get_strategy("jacobian").select(dataclasses.replace(f, in_set=w), 30, candidates=cand, seed=0)
    assert (sel.indices < 150).all()
    closed = get_strategy("jacobian").select(f, 30, candidates=cand, seed=0)
    assert (closed.indices >= 150).any()  # without P(in) the same pool's draws reach the out-of-set half
    norm = np.linalg.norm(f.boundary_embedding.astype(np.float64), axis=1)
    np.testing.assert_allclose(sel.scores, norm)


def test_layer_bad_input():
    from jacal.confidence.openset import calibrate_in_set

    pool, model, sent, oos = _open_pool()
    with pytest.raises(ValueError, match="open_set"):
        jacal.acquire(model, pool, 5, labeled=sent, out_of_set=oos, open_set="soft")
    with pytest.raises(ValueError, match="`C`"):
        calibrate_in_set([0.9], [0.1], C=0)


def test_study_strategies_are_not_public():
    import subprocess
    import sys

    names = ["jacobian-closed", "jacobian-id-half", "jacobian-features", "margin-knn", "margin:off"]
    # registering them is the benchmark's business (a fresh interpreter: this one may have imported it)
    code = f"import jacal; print(sorted(set({names!r}) & set(jacal.STRATEGIES)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_every_public_strategy_says_when_to_use_it():
    from jacal.acquisition.strategies import STRATEGIES

    for name in PINNED:
        text = STRATEGIES[name].use_when
        assert text and "\n" not in text and len(text) < 140, name


def test_jacobian_on_an_open_pool_takes_items_with_no_boundary_in_reach():
    """Items whose boundary embedding is 0 (the gradient of the logit gap vanishes) count as farther
    than every other item: the draws stay defined even when they fill the k nearest places."""
    import dataclasses

    from jacal.acquisition.strategies import get_strategy
    from jacal.features import Need, extract_features

    pool, model, sent, oos = _open_pool()
    f = extract_features(model, pool, need={Need.BOUNDARY_EMBEDDING, Need.EMBEDDINGS})
    v = f.boundary_embedding.copy()
    v[20:] = 0.0  # all but 20 items
    f = dataclasses.replace(f, boundary_embedding=v, in_set=np.ones(len(pool)))
    sel = get_strategy("jacobian").select(f, 40, candidates=np.arange(len(pool)), seed=0)
    assert len(set(sel.indices.tolist())) == 40 and np.isfinite(sel.selection_scores).all()


# --- label spreading of the answers (spread_in_set) ---------------------------------------------------

def _unit_rows(e):
    e = np.asarray(e, dtype=np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _chain_pool(rng, n=60, d=5):
    """Two separated chains of items; answers only at one end of each: in at chain A's, out at chain B's."""
    t = np.linspace(0, 1, n)[:, None]
    a = np.c_[np.ones((n, 1)), 2 * t, np.zeros((n, d - 2))] + 0.01 * rng.normal(size=(n, d))
    b = np.c_[-np.ones((n, 1)), np.zeros((n, 1)), 2 * t, np.zeros((n, d - 3))] + 0.01 * rng.normal(size=(n, d))
    return np.r_[a, b], a[:3] + 0.001, b[:3] + 0.001


def test_spread_in_set_is_scikit_learns_label_spreading_on_a_small_pool():
    from sklearn.semi_supervised import LabelSpreading

    from jacal.confidence.openset import spread_in_set

    rng = np.random.default_rng(0)
    pool, ins, outs = rng.normal(size=(80, 6)), rng.normal(size=(9, 6)) + 0.4, rng.normal(size=(5, 6)) - 0.4
    x = np.r_[_unit_rows(pool), _unit_rows(ins), _unit_rows(outs)]
    y = np.r_[np.full(80, -1), np.ones(9), np.zeros(5)].astype(int)
    d = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.8, max_iter=100).fit(x, y).label_distributions_[:80]
    np.testing.assert_allclose(spread_in_set(pool, ins, outs), d[:, 1] / d.sum(1), atol=1e-5)


def test_spread_in_set_beyond_max_exact_takes_the_mean_of_the_nearest_anchors():
    """Reference: scikit-learn's spreading on the drawn anchors and the answers, then each other row,
    one at a time in float64, the mean share of its ``n_neighbors`` nearest rows of that set."""
    from sklearn.semi_supervised import LabelSpreading

    from jacal.confidence.openset import spread_in_set

    rng = np.random.default_rng(1)
    pool, ins, outs = rng.normal(size=(120, 6)), rng.normal(size=(7, 6)) + 0.4, rng.normal(size=(6, 6)) - 0.4
    got = spread_in_set(pool, ins, outs, max_exact=50, anchors=40, dim=6, seed=4)
    anchors = np.sort(np.random.default_rng(4).choice(np.arange(120), 40, replace=False))
    x = np.r_[_unit_rows(pool[anchors]), _unit_rows(ins), _unit_rows(outs)]
    y = np.r_[np.full(40, -1), np.ones(7), np.zeros(6)].astype(int)
    d = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.8, max_iter=100).fit(x, y).label_distributions_
    share = d[:, 1] / d.sum(1)
    np.testing.assert_allclose(got[anchors], share[:40], atol=1e-5)
    for i in np.setdiff1d(np.arange(120), anchors):
        sims = x @ _unit_rows(pool[i:i + 1])[0]
        assert got[i] == pytest.approx(share[np.argsort(-sims)[:10]].mean(), abs=1e-5)


def test_spread_carries_an_answer_along_its_cluster_and_keeps_the_pool_total():
    from jacal.confidence.openset import in_set_probability, spread_in_set

    rng = np.random.default_rng(2)
    pool, ins, outs = _chain_pool(rng)
    ls = spread_in_set(pool, ins, outs)
    assert ls[:60].min() > 0.5 > ls[60:].max()  # each chain takes its end's answer, far ends included
    plain, spread = in_set_probability(pool, ins, outs, spread=False), in_set_probability(pool, ins, outs)
    assert spread["probability"].sum() == pytest.approx(plain["probability"].sum(), rel=1e-6)
    assert spread["probability"][:60].min() > spread["probability"][60:].max()
    np.testing.assert_allclose(spread["spread"], ls)


def test_spread_in_set_projected_path_ranks_like_the_exact_one():
    """Beyond ``max_exact`` rows (features projected to ``dim``, spreading on anchors) the chains keep their sides."""
    from jacal.confidence.openset import spread_in_set

    rng = np.random.default_rng(3)
    pool, ins, outs = _chain_pool(rng, n=400, d=40)
    approx = spread_in_set(pool, ins, outs, max_exact=100, anchors=150, dim=16)
    assert np.isfinite(approx).all()
    assert np.median(approx[:400]) > 0.5 > np.median(approx[400:])


def test_spread_in_set_keeps_nan_rows_and_one_kind_of_answer():
    from jacal.confidence.openset import spread_in_set

    rng = np.random.default_rng(5)
    pool = rng.normal(size=(30, 4))
    pool[3] = np.nan
    got = spread_in_set(pool, rng.normal(size=(4, 4)), rng.normal(size=(3, 4)))
    assert np.isnan(got[3]) and np.isfinite(np.delete(got, 3)).all()
    assert np.nanmin(spread_in_set(pool, rng.normal(size=(4, 4)), np.zeros((0, 4)))) == 1.0
    assert np.nanmax(spread_in_set(pool, np.zeros((0, 4)), rng.normal(size=(3, 4)))) == 0.0


@pytest.mark.parametrize("kwargs, match", [
    ({"pool_embeddings": np.zeros(5)}, "pool_embeddings"),
    ({"in_embeddings": np.zeros((3, 2))}, "in_embeddings"),
    ({"out_embeddings": np.zeros((3, 2, 1))}, "out_embeddings"),
    ({"n_neighbors": 0}, "n_neighbors"),
    ({"alpha": 1.0}, "alpha"),
])
def test_spread_in_set_refuses_bad_input(kwargs, match):
    from jacal.confidence.openset import spread_in_set

    rng = np.random.default_rng(6)
    args = {"pool_embeddings": rng.normal(size=(20, 4)), "in_embeddings": rng.normal(size=(3, 4)),
            "out_embeddings": rng.normal(size=(3, 4))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        spread_in_set(**args)
