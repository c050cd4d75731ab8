"""Selection below the memory wall (AFK-MC² seeding, sketched k-center) against the exact paths, and
bald's MC samples batched through the model against a per-sample reference."""
import itertools

import numpy as np
import pytest
import torch
from torch import nn

import jacal
from jacal import features as F
from jacal.acquisition import diversity as D
from jacal.acquisition.diversity import k_center_greedy, kmeans_pp, kmeans_pp_outer, selection, trace
from jacal.acquisition.scores import bald as bald_score


def t(a):
    return torch.from_numpy(np.asarray(a))


def brute_d2_at_pick(x, picks, centers):
    """Squared distance of each pick to the nearest of ``centers`` and the earlier picks, float64, one at a time."""
    out = []
    for i, p in enumerate(picks):
        ref = list(centers) + [x[q] for q in picks[:i]]
        out.append(min(float(((x[p] - c) ** 2).sum()) for c in ref))
    return np.array(out)


def test_auto_is_exact_for_small_pools_and_approximate_above_the_threshold(monkeypatch):
    x = t(np.random.default_rng(0).normal(size=(60, 5)))
    with trace() as calls:
        auto = kmeans_pp(x, 4, seed=2)
        exact = kmeans_pp(x, 4, seed=2, method="exact")
    assert [c["method"] for c in calls] == ["exact", "exact"]
    np.testing.assert_array_equal(auto[0], exact[0])
    monkeypatch.setattr(D, "AUTO_EXACT_MAX_BYTES", 0)
    with trace() as calls:
        kmeans_pp(x, 4, seed=2)  # the seedings stay exact under "auto" (AUTO_MCMC off)
        k_center_greedy(x, 4, sketch_dim=3)
        with selection("exact"):  # the context reaches calls that pass no method
            k_center_greedy(x, 4)
        with selection("approximate"):
            kmeans_pp(x, 4, seed=2)
            kmeans_pp_outer(x[:, :2], x, 4, seed=2)
    assert [c["method"] for c in calls] == ["exact", "sketch", "exact", "mcmc", "mcmc"]
    monkeypatch.setattr(D, "AUTO_MCMC", True)
    with trace() as calls:
        kmeans_pp(x, 4, seed=2)
    assert calls[0]["method"] == "mcmc"
    assert all(c["bytes_per_pick"] > 0 and c["seconds"] >= 0 for c in calls)


def test_methods_are_checked():
    x = torch.randn(20, 3)
    with pytest.raises(ValueError, match="method"):
        kmeans_pp(x, 2, method="fast")
    with pytest.raises(ValueError, match="does not apply"):
        kmeans_pp(x, 2, method="sketch")
    with pytest.raises(ValueError, match="does not apply"):
        k_center_greedy(x, 2, method="mcmc")
    with pytest.raises(ValueError, match="method"):
        with selection("nope"):
            pass


def test_mcmc_seeding_follows_d2_sampling():
    """Two picks from the origin on four points: the chain's joint law of (first, second) against the
    exact D² probabilities, over 3,000 seeds."""
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.5], [0.5, 0.5]])
    n2 = (x ** 2).sum(1)
    exact = np.zeros((4, 4))
    for i, j in itertools.permutations(range(4), 2):
        d2j = min(n2[j], ((x[j] - x[i]) ** 2).sum())
        rest = sum(min(n2[m], ((x[m] - x[i]) ** 2).sum()) for m in range(4) if m != i)
        exact[i, j] = n2[i] / n2.sum() * d2j / rest
    got = np.zeros((4, 4))
    for s in range(3000):  # the chain itself (kmeans_pp's wiring is tested below), with the origin as a center
        centers = [np.zeros(2)]

        def to_centers(rows):
            return ((x[rows][:, None, :] - np.array(centers)[None]) ** 2).sum(-1).min(1)

        p, _ = D._mcmc_sampling(t(n2), to_centers, lambda j: centers.append(x[j]), None, 2, [], [],
                                np.random.default_rng(s), torch.ones(4, dtype=torch.bool), 30)
        got[p[0], p[1]] += 1
    got /= got.sum()
    assert 0.5 * np.abs(got - exact).sum() < 0.04  # total variation (~0.02 expected at 3,000 draws); uniform: 0.3
    p, _ = kmeans_pp(t(x), 2, centers=torch.zeros(1, 2, dtype=torch.float64), method="mcmc", seed=0)
    assert len(set(p)) == 2


@pytest.mark.parametrize("with_centers", [False, True])
def test_mcmc_picks_are_distinct_allowed_and_their_d2_exact(with_centers):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    allowed = np.zeros(40, dtype=bool)
    allowed[rng.choice(40, 12, replace=False)] = True
    x_nan = np.where(allowed[:, None], x, np.nan)  # rows that are not allowed may hold NaN
    centers = x[:0] if not with_centers else rng.normal(size=(2, 3))
    picks, d2 = kmeans_pp(t(x_nan), 12, centers=t(centers) if with_centers else None, allowed=t(allowed),
                          method="mcmc", chain_length=5, seed=3)  # every allowed row: the last picks fall back
    assert sorted(picks) == sorted(np.flatnonzero(allowed))
    start = list(centers) if with_centers else [x[picks[0]]]
    ref = brute_d2_at_pick(x, picks[1:], start) if not with_centers else brute_d2_at_pick(x, picks, start)
    np.testing.assert_allclose(d2[1:] if not with_centers else d2, ref, rtol=1e-9, atol=1e-12)


def test_mcmc_outer_matches_explicit_gradient_embeddings():
    rng = np.random.default_rng(2)
    a, h = rng.normal(size=(30, 4)), rng.normal(size=(30, 6)).astype(np.float32)
    g = (a[:, :, None] * h.astype(np.float64)[:, None, :]).reshape(30, -1)
    picks, d2 = kmeans_pp_outer(t(a), t(h), 8, method="mcmc", seed=5)
    assert picks[0] == int(np.argmax((g ** 2).sum(1))) and len(set(picks)) == 8
    np.testing.assert_allclose(d2[1:], brute_d2_at_pick(g, picks[1:], [g[picks[0]]]), rtol=1e-5, atol=1e-6)


def test_sketched_k_center_reports_exact_distances_and_keeps_separated_clusters():
    rng = np.random.default_rng(3)
    means = rng.normal(size=(6, 40)) * 20
    x = (means[np.repeat(np.arange(6), 30)] + rng.normal(size=(180, 40))).astype(np.float32)
    allowed = np.ones(180, dtype=bool)
    allowed[::7] = False
    picks, dists = k_center_greedy(t(x), 6, allowed=t(allowed), method="sketch", sketch_dim=16, seed=0)
    assert len(set(picks // 30)) == 6 and allowed[picks].all()  # one pick per cluster, as the exact greedy
    assert set(picks // 30) == set(k_center_greedy(t(x), 6, allowed=t(allowed), method="exact")[0] // 30)
    mean = x[allowed].astype(np.float64).mean(0)
    np.testing.assert_allclose(dists ** 2, brute_d2_at_pick(x.astype(np.float64), picks, [mean]), rtol=1e-5)
    labeled = x[:3]
    picks, dists = k_center_greedy(t(x), 4, centers=t(labeled), method="sketch", sketch_dim=16)
    np.testing.assert_allclose(dists ** 2, brute_d2_at_pick(x.astype(np.float64), picks, labeled.astype(np.float64)),
                               rtol=1e-5)
    wide = k_center_greedy(t(x), 5, method="sketch", sketch_dim=40, seed=1)  # no narrower than d: the exact path
    np.testing.assert_array_equal(wide[0], k_center_greedy(t(x), 5, method="exact", seed=1)[0])


def test_strategies_select_under_either_path():
    model = jacal.mlp(16, 4, width=8, depth=1, seed=0).eval()
    pool = torch.rand(50, 16)
    for method in ("exact", "approximate"):
        with selection(method):
            for name in ("jacobian", "jacobian-kmeans", "badge", "coreset"):
                res = jacal.acquire(model, pool, 6, strategy=name, labeled=[0, 1], seed=0)
                assert len(set(res.indices)) == 6 and not {0, 1} & set(res.indices)


# ---- bald: the MC samples batched through the model


class _Recorder:
    """Forward hook on a dropout layer: each pass's mask (output / (input / (1 − p)), 1 where the input is 0)."""

    def __init__(self, layer):
        self.masks, self.p = [], layer.p
        layer.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        if module.training:
            x = inputs[0]
            self.masks.append(torch.where(x != 0, output * (1 - self.p) / torch.where(x != 0, x, 1), 1.0).round())


@pytest.mark.parametrize("rows", [8192, 12])  # all samples in one pass; 3 samples of a 4-item chunk per pass
def test_batched_mc_dropout_equals_a_per_sample_reference_with_its_masks(monkeypatch, rows):
    monkeypatch.setattr(F, "MC_BATCH_ROWS", rows)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Dropout(0.4), nn.Linear(7, 3)).eval()
    rec = _Recorder(model[2])
    x = torch.randn(10, 5)
    f = F.extract_features(model, x, need={"mc", "bald"}, batch_size=4, mc_samples=7, seed=3)
    assert f.mc_probs.shape == (7, 10, 3)
    # reassemble: per chunk (4, 4, 2 items) the passes' masks, sample-major
    by_chunk, i = [], 0
    for b in (4, 4, 2):
        parts = []
        while sum(p.shape[0] for p in parts) < 7 * b:
            parts.append(rec.masks[i])
            i += 1
        by_chunk.append(torch.cat(parts).reshape(7, b, 7))
    assert i == len(rec.masks)
    mask = torch.cat(by_chunk, dim=1).double()  # (T, N, 7)
    w1, b1, w2, b2 = (p.detach().double() for p in (model[0].weight, model[0].bias, model[3].weight, model[3].bias))
    ref = np.empty((7, 10, 3))
    for s in range(7):  # one sample, one point at a time, float64
        for n in range(10):
            hid = torch.relu(x[n].double() @ w1.T + b1) * mask[s, n] / 0.6
            ref[s, n] = torch.softmax(hid @ w2.T + b2, dim=0).numpy()
    np.testing.assert_allclose(f.mc_probs, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f.bald, bald_score(ref), rtol=1e-4, atol=1e-6)
    assert not model.training and not model[2].training  # modes restored


def test_batched_mc_dropout_has_the_per_sample_loops_distribution():
    """Masks independent across samples and items: the batched samples' mean and spread per item and
    class match T separate passes (the old loop) within Monte Carlo error."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)).eval()
    x = torch.randn(5, 6)
    T = 600
    batched = F.extract_features(model, x, need={"mc"}, mc_samples=T, seed=0).mc_probs
    model[2].train()
    torch.manual_seed(123)
    with torch.no_grad():
        loop = np.stack([torch.softmax(model(x).double(), dim=1).numpy() for _ in range(T)])
    model[2].eval()
    se = np.sqrt(batched.var(0) / T + loop.var(0) / T)
    assert (np.abs(batched.mean(0) - loop.mean(0)) < 5 * se + 1e-9).all()
    np.testing.assert_allclose(batched.std(0), loop.std(0), rtol=0.25, atol=1e-3)
    corr = np.corrcoef(batched[:, 0, 0], batched[:, 1, 0])[0, 1]  # items' masks independent
    assert abs(corr) < 0.2


@pytest.mark.parametrize("method", ["mlp", "vjp", "projection"])
@pytest.mark.parametrize("numpy_in", [False, True])
def test_jacobian_norm_returns_the_predictions_of_its_own_pass(method, numpy_in):
    model = jacal.mlp(12, 4, width=8, depth=2, seed=0).eval()
    x = torch.randn(37, 12)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    norms, pred = jacal.jacobian_norm(model, x.numpy() if numpy_in else x, method=method, batch_size=10,
                                      return_predictions=True)
    assert len(calls) == (4 if method == "vjp" else 0)  # vjp: one forward per chunk; mlp: the closed form's own
    with torch.no_grad():
        np.testing.assert_array_equal(np.asarray(pred), model(x).argmax(1).numpy())
    np.testing.assert_allclose(np.asarray(norms), np.asarray(jacal.jacobian_norm(model, x, method=method, batch_size=10)))


def _joint_law(x, start):
    """Exact law of the (second, third) D² picks when ``start`` (list of vectors) are the centers so far."""
    n = len(x)
    d0 = np.array([min(((x[m] - c) ** 2).sum() for c in start) for m in range(n)])
    law = np.zeros((n, n))
    for i, j in itertools.permutations(range(n), 2):
        d1 = np.minimum(d0, ((x - x[i]) ** 2).sum(1))
        d1[i] = 0
        law[i, j] = d0[i] / d0.sum() * d1[j] / d1.sum()
    return law


@pytest.mark.slow  # thousands of seeded seedings: minutes on two cores
@pytest.mark.parametrize("max_rejections", [256, 1])
def test_rejection_sampler_draws_exactly_the_d2_law(max_rejections):
    """Two D² picks from the origin on five points, 4,000 seeds: the sampler's joint law against the
    exact probabilities (``max_rejections=1``: a refresh of the bound after every failed batch)."""
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.5], [0.5, 0.5], [-1.0, -1.0]])
    law = _joint_law(x, [np.zeros(2)])
    got = np.zeros((5, 5))
    for s in range(4000):
        centers = [np.zeros(2)]

        def row_d2(rows):
            c = np.array(centers)
            return t(((x[rows.numpy()][:, None, :] - c[None]) ** 2).sum(-1).min(1))

        def refresh():
            return row_d2(torch.arange(5))

        sampler = D._Rejection(t((x ** 2).sum(1)), row_d2, lambda j: centers.append(x[j]), refresh,
                               torch.ones(5, dtype=torch.bool), batch=2, max_rejections=max_rejections)
        p, _ = sampler.sample(2, [], [], np.random.default_rng(s))
        got[p[0], p[1]] += 1
    got /= got.sum()
    assert 0.5 * np.abs(got - law).sum() < 0.04  # total variation (~0.02 expected at 4,000 draws)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["labeled", "first", "outer"])
def test_rejection_seeding_is_wired_to_the_d2_law(kind):
    """kmeans_pp / kmeans_pp_outer by rejection, two picks after the start on five points, 1,000
    seeds, against the exact law (uniform picks would be ~0.3 away in total variation)."""
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.5], [0.5, 0.5], [-1.0, -1.0]])
    a = np.array([[1.0], [0.5], [2.0], [1.0], [0.8]])  # outer: g_i = a_i h_i, a scaled copy of each row
    g = a * x
    if kind == "outer":
        law = _joint_law(g, [g[int(np.argmax((g ** 2).sum(1)))]])
    elif kind == "first":
        law = _joint_law(x, [x[int(np.argmax((x ** 2).sum(1)))]])
    else:
        law = _joint_law(x, [np.array([1.0, 1.0])])
    got = np.zeros((5, 5))
    for s in range(1000):
        if kind == "outer":
            p = kmeans_pp_outer(t(a), t(x.astype(np.float32)), 3, seed=s, method="exact")[0][1:]
        elif kind == "first":
            p = kmeans_pp(t(x), 3, seed=s, method="exact")[0][1:]
        else:
            p = kmeans_pp(t(x), 2, centers=t(np.array([[1.0, 1.0]])), seed=s, method="exact")[0]
        got[p[0], p[1]] += 1
    assert 0.5 * np.abs(got / got.sum() - law).sum() < 0.1


@pytest.mark.parametrize("with_centers", [False, True])
@pytest.mark.parametrize("rejection", [True, False])
def test_exact_seeding_picks_are_distinct_allowed_and_their_d2_exact(with_centers, rejection):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3)) * rng.pareto(2, size=(300, 1))
    allowed = rng.random(300) < 0.7
    x_nan = np.where(allowed[:, None], x, np.nan)
    centers = rng.normal(size=(2, 3)) if with_centers else None
    for k in (15, int(allowed.sum())):  # a batch, then every allowed row (the last picks at D² = 0 fall back)
        with trace() as calls:
            picks, d2 = kmeans_pp(t(x_nan), k, centers=t(centers) if with_centers else None, allowed=t(allowed),
                                  method="exact", seed=3, rejection=rejection)
        assert allowed[picks].all() and len(set(picks.tolist())) == k
        start = list(centers) if with_centers else [x[picks[0]]]
        ref = brute_d2_at_pick(x, picks, start) if with_centers else brute_d2_at_pick(x, picks[1:], start)
        np.testing.assert_allclose(d2 if with_centers else d2[1:], ref, rtol=1e-9, atol=1e-9)
        if rejection:
            assert calls[0]["proposals_per_pick"] >= 1
    a, h = rng.normal(size=(300, 4)), x.astype(np.float32)
    picks, d2 = kmeans_pp_outer(t(a), t(np.nan_to_num(h)), 20, allowed=t(allowed), seed=2, rejection=rejection)
    gm = (a[:, :, None] * np.nan_to_num(h).astype(np.float64)[:, None, :]).reshape(300, -1)
    assert allowed[picks].all() and len(set(picks.tolist())) == 20
    np.testing.assert_allclose(d2[1:], brute_d2_at_pick(gm, picks[1:], [gm[picks[0]]]), rtol=1e-5, atol=1e-5)


def test_rejection_refreshes_its_bound_when_the_cost_falls_far_and_handles_duplicates():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(40, 8)) * 100
    x = t(np.repeat(centers, 25, axis=0) + rng.normal(size=(1000, 8)) * 0.01)  # 40 tight clusters far apart
    with trace() as calls:
        picks, d2 = kmeans_pp(x, 60, centers=torch.zeros(1, 8, dtype=torch.float64), seed=0, method="exact")
    assert calls[0]["refreshes"] >= 1  # the cost falls by ~10⁸ once each cluster has a center
    assert len(set(np.searchsorted(np.arange(0, 1000, 25), picks, side="right"))) == 40  # every cluster
    np.testing.assert_allclose(d2, brute_d2_at_pick(x.numpy(), picks, [np.zeros(8)]), rtol=1e-7, atol=1e-9)
    same = torch.ones(30, 4)
    picks, d2 = kmeans_pp(same, 30, seed=0, method="exact")  # after the first pick every D² is 0
    assert sorted(picks.tolist()) == list(range(30)) and np.all(d2[1:] == 0)
