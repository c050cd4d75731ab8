"""Diversity selection (k-center greedy, k-means++ seedings, their D² samplers and paths).

The pins at the top record the picks each path and strategy makes at fixed seeds
(``tests/data/selection_picks.json``): the selection code may be reorganised, never its picks.
The samplers' laws are tested on a brute-force float64 center set against the exact D² law; the
fronts are tested to hand the samplers exactly what that brute-force set holds (same picks at the
same seeds), so the law carries over to them without thousands of seedings through the fronts.
"""
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import jacal
from jacal.acquisition.selection import d2 as D2
from jacal.acquisition.selection import k_center_greedy, kmeans_pp, kmeans_pp_outer, memory, selection, trace
from jacal.acquisition.selection.config import current

PINS = Path(__file__).resolve().parents[1] / "data" / "selection_picks.json"
K = 12


def _run(fn, path, *args, **kw):
    """Call a selection function on one path: ``"rejection"`` / ``"pass"`` (the exact k-means++ by
    rejection or by one pass per pick), ``"mcmc"``, ``"exact"`` / ``"sketch"`` (k-center)."""
    if path in ("rejection", "pass"):
        with selection(d2_sampler=path):
            return fn(*args, method="exact", **kw)
    return fn(*args, method=path, **kw)


def _data():
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(400, 24)) * rng.pareto(2, size=(400, 1))).astype(np.float32)
    a = rng.normal(size=(400, 5))
    w = rng.random(400) * (rng.random(400) < 0.8)
    allowed = rng.random(400) < 0.75
    centers = rng.normal(size=(3, 24)).astype(np.float32)
    return x, a, w, allowed, centers


def function_cases():
    """``{name: picks}`` for every function, path, weights/allowed/centers combination."""
    x, a, w, allowed, centers = _data()
    t = torch.from_numpy
    out = {}
    for use_allowed in (False, True):
        ok = t(allowed) if use_allowed else None
        xa = t(np.where(allowed[:, None], x, np.nan)) if use_allowed else t(x)
        for use_centers in (False, True):
            c = t(centers) if use_centers else None
            for path in ("exact", "sketch"):
                picks, _ = _run(k_center_greedy, path, xa, K, centers=c, allowed=ok, seed=3, sketch_dim=8)
                out[f"k_center_greedy/{path}/allowed={use_allowed}/centers={use_centers}"] = picks
            for use_w in (False, True):
                ww = t(w) if use_w else None
                for path in ("rejection", "pass", "mcmc"):
                    picks, _ = _run(kmeans_pp, path, xa, K, centers=c, allowed=ok, seed=3, weights=ww, chain_length=20)
                    out[f"kmeans_pp/{path}/allowed={use_allowed}/centers={use_centers}/weights={use_w}"] = picks
                    if not use_centers:
                        picks, _ = _run(kmeans_pp_outer, path, t(a), t(np.nan_to_num(x)), K, allowed=ok, seed=3,
                                        weights=ww, chain_length=20)
                        out[f"kmeans_pp_outer/{path}/allowed={use_allowed}/weights={use_w}"] = picks
    origin = torch.zeros(1, 24)
    for path in ("rejection", "pass", "mcmc"):  # from the origin, as jacobian-kmeans seeds
        out[f"kmeans_pp/{path}/origin"] = _run(kmeans_pp, path, t(x), K, centers=origin, seed=5)[0]
    return {k: [int(i) for i in v] for k, v in out.items()}


STRATEGIES = ("badge", "jacobian", "jacobian-kmeans", "ldm-s", "coreset")


def strategy_cases(model, d):
    """``{strategy: picks}`` of ``jacal.acquire`` on digits, with and without a labeled set."""
    pool = d.x_test[:300]
    out = {}
    for name in STRATEGIES:
        for labeled in (None, [0, 5, 9]):
            res = jacal.acquire(model, pool, 10, strategy=name, labeled=labeled, seed=2)
            out[f"{name}/labeled={labeled is not None}"] = [int(i) for i in res.indices]
    with selection("approximate"):
        for name in ("badge", "jacobian-kmeans", "coreset"):
            res = jacal.acquire(model, pool, 10, strategy=name, labeled=[0, 5, 9], seed=2)
            out[f"{name}/approximate"] = [int(i) for i in res.indices]
    return out


def _digits_model():
    d = jacal.load_dataset("digits")
    m = jacal.mlp(64, 10, width=32, depth=1, seed=0)
    jacal.train(m, d, epochs=2, seed=0)
    return m.eval(), d


def test_functions_pick_what_they_picked():
    expected = json.loads(PINS.read_text())["functions"]
    got = function_cases()
    assert set(got) == set(expected)
    bad = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not bad, bad


def test_strategies_pick_what_they_picked():
    torch.set_num_threads(1)  # the pins were recorded on one thread (last bits of the sums move the draws)
    expected = json.loads(PINS.read_text())["strategies"]
    got = strategy_cases(*_digits_model())
    bad = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert set(got) == set(expected) and not bad, bad




# ---- helpers: brute-force float64 references


def t(a):
    return torch.from_numpy(np.asarray(a))


def brute_d2_at_pick(x, picks, centers):
    """Squared distance of each pick to the nearest of ``centers`` and the earlier picks, float64, one at a time."""
    out = []
    for i, p in enumerate(picks):
        ref = list(centers) + [x[q] for q in picks[:i]]
        out.append(min(float(((x[p] - c) ** 2).sum()) for c in ref))
    return np.array(out)


class BruteCenters:
    """A center set by the definition: float64 rows ``g (N, D)``, each distance summed on its own."""

    def __init__(self, g, start):
        self.g = np.asarray(g, dtype=np.float64)
        self.c = [np.asarray(v, dtype=np.float64) for v in start]

    def row_d2(self, rows):
        diff = self.g[np.asarray(rows, dtype=np.int64)][:, None, :] - np.array(self.c)[None, :, :]
        return torch.from_numpy((diff ** 2).sum(-1).min(1))

    def add(self, j):
        self.c.append(self.g[j])

    def all_d2(self):
        return self.row_d2(range(len(self.g)))

    def d2_to(self, j):
        return torch.tensor(((self.g - self.g[j]) ** 2).sum(1))


def _sample(name, cs, d2, k, picks, d2_at, rng, ok, w, **kw):
    """Run sampler ``name`` (``"pass"``, ``"rejection"``, ``"mcmc"``); returns ``(picks, d2_at)``."""
    if name == "pass":
        return D2.pass_per_pick(cs, d2, k, picks, d2_at, rng, ok, w)
    if name == "mcmc":
        return D2.mcmc(cs, d2, k, picks, d2_at, rng, ok, kw.get("chain_length", 30), w)
    return D2.rejection(cs, d2, k, picks, d2_at, rng, ok, w, **kw)[:2]


# ---- the samplers' law, against the exact D² law

POINTS = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.5], [0.5, 0.5], [-1.0, -1.0]])
WEIGHTS = np.array([1.0, 0.5, 0.1, 0.0, 1.0])
SEEDINGS = 2000


def joint_law(x, start, w=None):
    """Exact law ``(n, n)`` of the first two draws (∝ ``w·D²``) when ``start`` are the centers so far."""
    n = len(x)
    w = np.ones(n) if w is None else w
    d0 = np.array([min(((x[m] - c) ** 2).sum() for c in start) for m in range(n)])
    law = np.zeros((n, n))
    for i, j in itertools.permutations(range(n), 2):
        d1 = np.minimum(d0, ((x - x[i]) ** 2).sum(1))
        d1[i] = 0
        law[i, j] = w[i] * d0[i] / (w * d0).sum() * w[j] * d1[j] / (w * d1).sum()
    return law


def chi_square_p(counts, law):
    """p-value of the counts ``(n, n)`` under ``law``; no draw may land where the law is 0."""
    assert counts[law == 0].sum() == 0, counts
    pos = law > 0
    return stats.chisquare(counts[pos], law[pos] / law[pos].sum() * counts.sum()).pvalue


def tally(name, w, seedings=SEEDINGS, **kw):
    counts = np.zeros((5, 5))
    for s in range(seedings):
        cs = BruteCenters(POINTS, [np.zeros(2)])
        p, _ = _sample(name, cs, cs.all_d2(), 2, [], [], np.random.default_rng(s), torch.ones(5, dtype=torch.bool),
                       None if w is None else t(w), **kw)
        counts[p[0], p[1]] += 1
    return counts


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name, kw", [("pass", {}), ("rejection", {"batch": 2}),
                                      ("rejection", {"batch": 2, "max_rejections": 1}),
                                      ("mcmc", {"chain_length": 30})],
                         ids=["pass", "rejection", "rejection-refresh-every-batch", "mcmc"])
def test_sampler_draws_the_d2_law(name, kw, weighted):
    """Two draws from the origin on five points, 2,000 seedings: the joint law of (first, second)
    (20 cells; 16 with the weights, one row weighing 0, where no draw may land) against the exact
    ``w·D²`` law by a χ² test at α = 0.001. Power: at least 0.99 against any law at Cohen's w ≥ 0.17
    from the exact one (noncentral χ², 19 or 15 degrees of freedom, λ = 2000·w²). A rejection sampler
    that skips the acceptance step (second draw ∝ the starting D²: w = 0.25, total variation 0.034,
    which a total-variation bound of 0.04 at 4,000 seedings would pass) fails it (see the next test);
    one that ignores the weights is w = 1.4 away. ``max_rejections=1`` refreshes the bound after
    every failed batch. AFK-MC² follows the law up to the chain's mixing error, which at 30 proposals
    on five points is below what this test resolves."""
    w = WEIGHTS if weighted else None
    counts = tally(name, w, **kw)
    assert chi_square_p(counts, joint_law(POINTS, [np.zeros(2)], w)) > 1e-3


def test_the_law_test_detects_a_sampler_that_skips_acceptance():
    """The χ² test above has the power its docstring states: drawing the second pick ∝ the starting
    D² (a rejection sampler that accepts every proposal) fails it."""
    counts = np.zeros((5, 5))
    d0 = (POINTS ** 2).sum(1)
    for s in range(SEEDINGS):
        rng = np.random.default_rng(s)
        i = rng.choice(5, p=d0 / d0.sum())
        rest = np.where(np.arange(5) == i, 0, d0)
        counts[i, rng.choice(5, p=rest / rest.sum())] += 1
    assert chi_square_p(counts, joint_law(POINTS, [np.zeros(2)])) < 1e-20


# ---- the fronts hand the samplers what a brute-force center set holds


def _front_and_oracle(kind, sampler, seed):
    """``(front's picks, the sampler's picks on a BruteCenters)`` for one seeding."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 3)) * rng.pareto(2, size=(60, 1))
    ok = np.ones(60, dtype=bool)
    w = None
    if kind == "allowed":
        ok[rng.choice(60, 20, replace=False)] = False
    if kind == "weighted":
        w = rng.random(60) * (rng.random(60) < 0.8)
    kw = {"chain_length": 20} if sampler == "mcmc" else {}
    method = "mcmc" if sampler == "mcmc" else "exact"
    with selection(d2_sampler="pass" if sampler == "pass" else "rejection"):
        if kind == "outer":
            a, h = rng.normal(size=(60, 2)), x.astype(np.float32)
            g = (a[:, :, None] * h.astype(np.float64)[:, None, :]).reshape(60, -1)
            front = kmeans_pp_outer(t(a), t(h), 8, seed=seed, method=method, **kw)[0]
        else:
            g = x
            start = {"origin": np.zeros((1, 3)), "labeled": x[:2] + 0.5}.get(kind)
            front = kmeans_pp(t(np.where(ok[:, None], x, np.nan)), 8, centers=None if start is None else t(start),
                              allowed=t(ok), seed=seed, method=method, weights=None if w is None else t(w), **kw)[0]
    n2 = np.where(ok, (g ** 2).sum(1), -1.0)
    if kind in ("origin", "labeled"):
        picks, cs = [], BruteCenters(g, start)
    else:
        first = int(np.argmax(n2 if w is None else np.where(ok, w * n2, n2)))
        picks, cs = [first], BruteCenters(g, [g[first]])
    oracle = _sample(sampler, cs, cs.all_d2(), 8, picks, [], np.random.default_rng(seed), t(ok),
                     None if w is None else t(w), **kw)[0]
    return front, oracle


@pytest.mark.parametrize("sampler", ["rejection", "pass", "mcmc"])
@pytest.mark.parametrize("kind", ["origin", "labeled", "first", "outer", "weighted", "allowed"])
def test_fronts_draw_what_the_sampler_draws_on_a_brute_force_center_set(kind, sampler):
    """kmeans_pp / kmeans_pp_outer at 15 seeds give the picks of the sampler run on a float64
    brute-force center set with the same start, weights, mask and seed: their expansions, the first
    pick and the wiring add nothing to the law the sampler tests check."""
    for seed in range(15):
        front, oracle = _front_and_oracle(kind, sampler, seed)
        np.testing.assert_array_equal(front, oracle, err_msg=f"seed {seed}")


# ---- exact paths: distances, masks, duplicates


def test_k_center_greedy_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    labeled = rng.normal(size=(2, 3))
    picks, dists = k_center_greedy(torch.from_numpy(x), 6, centers=torch.from_numpy(labeled))
    centers = list(labeled)
    for i, d in zip(picks, dists):
        dmin = np.array([min(np.linalg.norm(p - c) for c in centers) for p in x])
        assert i == int(np.argmax(dmin)) and d == pytest.approx(dmin[i], rel=1e-9)
        centers.append(x[i])


def test_badge_factorized_distances_equal_explicit_embeddings():
    rng = np.random.default_rng(1)
    a, h = rng.normal(size=(30, 4)), rng.normal(size=(30, 5))
    g = np.einsum("nk,nd->nkd", a, h).reshape(30, -1)
    picks, d2 = kmeans_pp_outer(torch.from_numpy(a), torch.from_numpy(h), 5, seed=3)
    assert picks[0] == int(np.argmax((g ** 2).sum(1)))
    for j in range(1, 5):  # D² at each pick = squared distance to the nearest earlier pick
        expected = min(((g[picks[j]] - g[p]) ** 2).sum() for p in picks[:j])
        assert d2[j] == pytest.approx(expected, rel=1e-5, abs=1e-6)  # h is held in float32
    assert len(set(picks)) == 5


@pytest.mark.parametrize("centers", [None, "origin"])
def test_kmeans_pp_reports_the_squared_distance_to_the_nearest_center(centers):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 6)) * rng.uniform(0.1, 3, size=(50, 1))
    c = np.zeros((1, 6)) if centers else None
    picks, d2 = kmeans_pp(torch.from_numpy(x), 8, centers=None if c is None else torch.from_numpy(c), seed=4)
    assert len(set(picks)) == 8
    chosen = [] if c is None else list(c)
    if c is None:
        assert picks[0] == int(np.argmax((x ** 2).sum(1)))
    for j, i in enumerate(picks):
        if chosen:
            expected = min(((x[i] - q) ** 2).sum() for q in chosen)
            assert d2[j] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        chosen.append(x[i])


def test_selection_works_in_place_with_an_allowed_mask():
    """The selection functions take the whole matrix and a mask: rows outside it (NaN included) are
    never picked, and the picks equal those on the allowed rows alone."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4))
    allowed = np.ones(50, dtype=bool)
    allowed[[1, 7, 20]] = False
    x_nan = x.copy()
    x_nan[7] = np.nan
    sub = np.flatnonzero(allowed)
    p_full, d_full = k_center_greedy(t(x_nan), 6, allowed=t(allowed), seed=1)
    p_sub, d_sub = k_center_greedy(t(x[sub]), 6, seed=1)
    assert list(p_full) == list(sub[p_sub]) and np.allclose(d_full, d_sub)
    p_full, d_full = kmeans_pp(t(x_nan), 6, centers=torch.zeros(1, 4, dtype=torch.float64), allowed=t(allowed), seed=1)
    p_sub, d_sub = kmeans_pp(t(x[sub]), 6, centers=torch.zeros(1, 4, dtype=torch.float64), seed=1)
    assert list(p_full) == list(sub[p_sub]) and np.allclose(d_full, d_sub)
    a = rng.normal(size=(50, 3))
    p_full, _ = kmeans_pp_outer(t(a), t(x_nan), 6, allowed=t(allowed), seed=1)
    p_sub, _ = kmeans_pp_outer(t(a[sub]), t(x[sub]), 6, seed=1)
    assert list(p_full) == list(sub[p_sub])
    with pytest.raises(ValueError, match="boolean mask of shape \\(50,\\)"):
        kmeans_pp(t(x), 2, allowed=t(allowed[:10]))


@pytest.mark.parametrize("with_centers", [False, True])
@pytest.mark.parametrize("sampler", ["rejection", "pass"])
def test_exact_seeding_picks_are_distinct_allowed_and_their_d2_exact(with_centers, sampler):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3)) * rng.pareto(2, size=(300, 1))
    allowed = rng.random(300) < 0.7
    x_nan = np.where(allowed[:, None], x, np.nan)
    centers = rng.normal(size=(2, 3)) if with_centers else None
    with selection(d2_sampler=sampler):
        for k in (15, int(allowed.sum())):  # a batch, then every allowed row (the last picks at D² = 0 fall back)
            with trace() as calls:
                picks, d2 = kmeans_pp(t(x_nan), k, centers=t(centers) if with_centers else None, allowed=t(allowed),
                                      method="exact", seed=3)
            assert allowed[picks].all() and len(set(picks.tolist())) == k
            start = list(centers) if with_centers else [x[picks[0]]]
            ref = brute_d2_at_pick(x, picks, start) if with_centers else brute_d2_at_pick(x, picks[1:], start)
            np.testing.assert_allclose(d2 if with_centers else d2[1:], ref, rtol=1e-9, atol=1e-9)
            assert ("proposals_per_pick" in calls[0]) == (sampler == "rejection")
        a, h = rng.normal(size=(300, 4)), x.astype(np.float32)
        picks, d2 = kmeans_pp_outer(t(a), t(np.nan_to_num(h)), 20, allowed=t(allowed), seed=2)
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


def test_weighted_draws_never_take_weight_zero_items():
    from jacal.acquisition.ldm import ldm_seeding

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(60, 4)).astype(np.float32))
    w = torch.from_numpy((np.arange(60) < 30).astype(np.float64))
    for method in ("exact", "mcmc"):
        picks, _ = kmeans_pp(x, 10, centers=torch.zeros(1, 4), method=method, weights=w, seed=1)
        assert (picks < 30).all(), (method, picks)
        picks, _ = kmeans_pp_outer(x[:, :3].double(), x, 10, method=method, weights=w, seed=1)
        assert (picks < 30).all(), (method, picks)
    picks, _ = ldm_seeding(rng.random(60), x.numpy(), 10, np.arange(60), seed=1, weights=w.numpy())
    assert (picks < 30).all()


def test_bad_weights_are_named():
    with pytest.raises(ValueError, match="`weights`"):
        kmeans_pp(torch.ones(4, 2), 2, weights=torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="`weights`"):
        kmeans_pp(torch.ones(4, 2), 2, weights=torch.ones(3))


# ---- the approximate paths


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


# ---- the selection() context and the trace


def test_auto_is_exact_for_small_pools_and_approximate_above_the_threshold():
    x = t(np.random.default_rng(0).normal(size=(60, 5)))
    with trace() as calls:
        auto = kmeans_pp(x, 4, seed=2)
        exact = kmeans_pp(x, 4, seed=2, method="exact")
    assert [c["method"] for c in calls] == ["exact", "exact"]
    np.testing.assert_array_equal(auto[0], exact[0])
    with selection(exact_max_bytes=0), trace() as calls:
        kmeans_pp(x, 4, seed=2)  # the seedings stay exact under "auto" at any size
        k_center_greedy(x, 4, sketch_dim=3)
        with selection("exact"):  # the context reaches calls that pass no method
            k_center_greedy(x, 4)
        with selection("approximate"):
            kmeans_pp(x, 4, seed=2)
            kmeans_pp_outer(x[:, :2], x, 4, seed=2)
            k_center_greedy(x, 4, method="exact")  # an explicit method wins over the context
    assert [c["method"] for c in calls] == ["exact", "sketch", "exact", "mcmc", "mcmc", "exact"]
    assert all(c["bytes_per_pick"] > 0 and c["seconds"] >= 0 for c in calls)


def test_selection_contexts_nest_and_restore():
    assert current().method == "auto" and current().d2_sampler == "rejection"
    with selection("exact", d2_sampler="pass") as outer:
        assert outer.method == "exact"
        with selection(exact_max_bytes=5) as inner:  # unset settings are inherited
            assert (inner.method, inner.d2_sampler, inner.exact_max_bytes) == ("exact", "pass", 5)
        assert current().exact_max_bytes == outer.exact_max_bytes
    assert current().method == "auto" and current().d2_sampler == "rejection"


def test_methods_are_checked():
    x = torch.randn(20, 3)
    with pytest.raises(ValueError, match="method"):
        kmeans_pp(x, 2, method="fast")
    with pytest.raises(ValueError, match="does not apply"):
        kmeans_pp(x, 2, method="sketch")
    with pytest.raises(ValueError, match="does not apply"):
        k_center_greedy(x, 2, method="mcmc")
    for kw, name in (({"method": "nope"}, "`method`"), ({"d2_sampler": "fast"}, "`d2_sampler`"),
                     ({"exact_max_bytes": -1}, "`exact_max_bytes`")):
        with pytest.raises(ValueError, match=name):
            with selection(**kw):
                pass


def test_trace_counts_what_each_path_reads():
    """``bytes_per_pick`` follows memory's formulas: a pass per pick reads every row and its vectors;
    the rejection path a few rows and the centers, far less on a large pool."""
    x = torch.randn(4000, 16)
    with trace() as calls:
        with selection(d2_sampler="pass"):
            kmeans_pp(x, 10, seed=0, method="exact")
        kmeans_pp(x, 10, seed=0, method="exact")
        k_center_greedy(x, 10, method="exact")
    passes, rej, kc = calls
    assert passes["bytes_per_pick"] == 4000 * (16 * 4 + 4 + 3 * 8) and kc["bytes_per_pick"] == 4000 * (16 + 3) * 4
    assert passes["setup_bytes"] == rej["setup_bytes"] == 3 * 4000 * 64  # mean, norms, first D²; no refresh
    per_batch = (1 + 5) * 8 * 17  # the centers held on average, each d + 1 float64s
    assert rej["proposals_per_pick"] * 64 + per_batch <= rej["bytes_per_pick"]
    assert rej["bytes_per_pick"] <= rej["proposals_per_pick"] * (64 + per_batch)
    assert rej["bytes_per_pick"] < passes["bytes_per_pick"] / 20
    assert memory.row_bytes(x, torch.zeros(4000, 3, dtype=torch.float64)) == 64 + 24


def test_the_old_module_name_is_gone():
    """The move is recorded in CHANGELOG.md; no alias keeps the old name importable."""
    import importlib

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("jacal.acquisition.diversity")


def test_strategies_select_under_either_path():
    model = jacal.mlp(16, 4, width=8, depth=1, seed=0).eval()
    pool = torch.rand(50, 16)
    for method in ("exact", "approximate"):
        with selection(method):
            for name in ("jacobian", "jacobian-kmeans", "badge", "coreset"):
                res = jacal.acquire(model, pool, 6, strategy=name, labeled=[0, 1], seed=0)
                assert len(set(res.indices)) == 6 and not {0, 1} & set(res.indices)


if __name__ == "__main__":  # records the pins (run once, on the code whose picks they keep)
    torch.set_num_threads(1)
    pins = {"functions": function_cases(), "strategies": strategy_cases(*_digits_model())}
    PINS.write_text("{\n" + ",\n".join(
        f'"{part}": {{\n' + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(cases.items())) + "\n}"
        for part, cases in pins.items()) + "\n}\n")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["jacobian", "jacobian-kmeans", "badge", "ldm-s", "coreset"])
def test_more_picks_than_distinct_items_end(strategy):
    """Copies of one item: once every distinct item is a center, the copies' D² is rounding noise in
    the float32 bound; the seeding must still end, with k distinct rows."""
    import jacal

    g = torch.Generator().manual_seed(0)
    pool = torch.rand(12, 16, generator=g)
    pool = torch.cat([pool, pool[3:4].repeat(6, 1), torch.zeros(5, 16)])  # 6 copies of row 3, 5 blank rows
    model = jacal.mlp(16, 3, width=8, depth=1, seed=0).eval()
    res = jacal.acquire(model, pool, len(pool), strategy=strategy, seed=1)
    assert sorted(res.indices.tolist()) == list(range(len(pool)))


def test_rejection_sampler_ends_on_copies_with_the_exact_picks_first():
    """Rows 4..8 copy row 0: the four distinct rows are picked first (D² > 0), then the copies, each
    once, at D² of rounding size."""
    x = torch.cat([torch.eye(4) * 3, torch.eye(4)[:1].repeat(5, 1) * 3]).float()
    for seed in range(5):
        picks, d2_at = kmeans_pp(x, len(x), seed=seed)
        assert sorted(picks.tolist()) == list(range(len(x)))
        distinct = {0 if p >= 4 else p for p in picks[:4].tolist()}
        assert distinct == {0, 1, 2, 3} and (d2_at[:4] > 1).all() and (d2_at[4:] < 1e-6).all()
