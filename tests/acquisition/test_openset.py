"""Open-set acquisition: the in-distribution score against a per-point float64 reference, LDM against a
per-hypothesis reference, cold start, and acquire(out_of_set=...) over the whole matrix of inputs."""
import numpy as np
import pytest
import torch

import jacal
from jacal.acquisition.coldstart import cold_start
from jacal.acquisition.ldm import hypotheses, last_linear, ldm_seeding, least_disagree_metric
from jacal.confidence.openset import in_distribution


def _ref_in_distribution(pool, ins, outs, m):
    def unit(v):
        return v / max(np.linalg.norm(v), 1e-12)

    out = []
    for x in pool.astype(np.float64):
        q = unit(x)
        d_in = np.mean(sorted(np.linalg.norm(q - unit(b)) for b in ins.astype(np.float64))[:m])
        d_out = np.mean(sorted(np.linalg.norm(q - unit(b)) for b in outs.astype(np.float64))[:m])
        out.append(d_out / (d_in + d_out))
    return np.array(out)


@pytest.mark.parametrize("m", [1, 3])
def test_in_distribution_matches_reference(m):
    rng = np.random.default_rng(0)
    pool, ins, outs = rng.normal(size=(40, 6)), rng.normal(size=(9, 6)), rng.normal(size=(5, 6))
    got = in_distribution(pool.astype(np.float32), ins, outs, m=m)
    np.testing.assert_allclose(got, _ref_in_distribution(pool, ins, outs, m), atol=1e-5)
    assert np.array_equal(in_distribution(pool, ins, None), np.ones(40))
    pool[3] = np.nan
    got = in_distribution(pool, ins, outs, m=m)
    assert np.isnan(got[3]) and np.isfinite(np.delete(got, 3)).all()
    with pytest.raises(ValueError, match="in_embeddings"):
        in_distribution(pool, ins[:, :3], outs)


def test_in_distribution_chunks_and_edge_banks():
    """The pool is scored a chunk at a time: chunks that split the pool anywhere, NaN rows inside a chunk
    and a zero row give the reference's scores; a bank with no finite row leaves nothing to contrast."""
    from jacal.confidence.openset import _scores, _unit

    rng = np.random.default_rng(3)
    pool, ins, outs = rng.normal(size=(23, 5)), rng.normal(size=(6, 5)) + 0.5, rng.normal(size=(4, 5)) - 0.5
    pool[[4, 11]] = np.nan
    pool[7] = 0.0  # no direction: half-way (d_in = d_out)
    ref = _ref_in_distribution(np.nan_to_num(pool), ins, outs, 2)
    ref[[4, 11]] = np.nan
    for chunk in (1, 5, 23, 4096):
        got = _scores(pool.astype(np.float32), _unit(ins), _unit(outs), 2, chunk=chunk)
        np.testing.assert_allclose(got, ref, atol=1e-5)
        assert got[7] == pytest.approx(0.5)
    np.testing.assert_array_equal(in_distribution(pool, ins, np.full((3, 5), np.nan)), np.where(np.isnan(ref), np.nan, 1.0))
    np.testing.assert_array_equal(in_distribution(pool, np.full((2, 5), np.inf), outs), np.where(np.isnan(ref), np.nan, 0.5))


def test_ldm_matches_per_hypothesis_reference_and_blocks_do_not_matter():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(60, 5)).astype(np.float32)
    w, b = torch.from_numpy(rng.normal(size=(3, 5))), torch.from_numpy(rng.normal(size=3))
    got = least_disagree_metric(h, w, b, seed=2, per_sigma=2, reference_size=60)
    small = least_disagree_metric(h, w, b, seed=2, per_sigma=2, reference_size=60, block_elements=7)
    np.testing.assert_array_equal(got, small)
    _, dw, db = hypotheses(3, 5, seed=2, per_sigma=2)
    x = torch.from_numpy(h).double()
    y0 = (x @ w.T + b).argmax(1)
    ref = np.ones(60)
    for j in range(len(dw)):  # one hypothesis at a time
        yh = (x @ (w + dw[j].double()).T + (b + db[j].double())).argmax(1)
        rho = float((yh != y0).double().mean())
        for i in range(60):
            if yh[i] != y0[i]:
                ref[i] = min(ref[i], rho)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # items on the boundary have the smallest LDM
    margin = np.sort((x @ w.T + b).numpy(), axis=1)
    gap = margin[:, -1] - margin[:, -2]
    assert got[np.argmin(gap)] <= np.median(got)


def test_ldm_seeding_starts_at_the_smallest_ldm():
    rng = np.random.default_rng(2)
    ldm, h = rng.random(50), rng.normal(size=(50, 4))
    cand = np.arange(5, 50)
    picks, w = ldm_seeding(ldm, h, 8, cand, seed=0)
    assert picks[0] == cand[np.argmin(ldm[cand])] and len(set(picks)) == 8 and set(picks) <= set(cand)
    assert np.array_equal(picks, ldm_seeding(ldm, h, 8, cand, seed=0)[0])
    # the last layer: the eager one, or recovered from embeddings and logits (any model format)
    model = jacal.mlp(4, 3, width=5, depth=1, seed=0).eval()
    hh = torch.randn(30, 5).abs()
    lin = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    zz = lin(hh).detach().numpy()
    w_e, b_e = last_linear(model, hh.numpy(), zz)
    w_l, b_l = last_linear(torch.nn.ReLU(), hh.numpy(), zz)  # no nn.Linear to read: least squares
    np.testing.assert_allclose(w_l.numpy(), w_e.numpy(), atol=1e-4)
    np.testing.assert_allclose(b_l.numpy(), b_e.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="affine"):
        last_linear(torch.nn.ReLU(), hh.numpy(), np.sin(zz * 5))


def test_cold_start_methods():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(60, 3)) + 8 * c for c in range(4)])
    picks = cold_start(x, 4, method="typiclust", seed=0)
    assert sorted(int(p) // 60 for p in picks) == [0, 1, 2, 3]  # one per blob
    for method in ("kmeans++", "random"):
        p = cold_start(torch.from_numpy(x), 4, method=method, seed=1)
        assert len(set(p.tolist())) == 4 and np.array_equal(p, cold_start(x, 4, method=method, seed=1))
    with pytest.raises(ValueError, match="k"):
        cold_start(x, 500)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cold_start(x, 2)
    with pytest.raises(ValueError, match="method"):
        cold_start(x[1:], 2, method="psychic")


def _two_cluster_pool(dropout=0.0):
    """In-set items near e1 (+ noise), junk near −e1: a model that only knows the in-set region."""
    g = torch.Generator().manual_seed(0)
    ins = torch.randn(200, 8, generator=g) * 0.3 + torch.eye(8)[0] * 3
    junk = torch.randn(200, 8, generator=g) * 0.3 - torch.eye(8)[0] * 3
    return torch.cat([ins, junk]), jacal.mlp(8, 3, width=16, depth=1, dropout=dropout, seed=0).eval()


PUBLIC = ("jacobian", "jacobian-kmeans", "jacobian-topk", "ldm-s", "badge", "margin", "entropy", "least-confidence",
          "bald", "coreset", "random")


@pytest.mark.parametrize("strategy", PUBLIC)
@pytest.mark.parametrize("labeled_as", ["indices", "items"])
@pytest.mark.parametrize("with_oos", [False, True])
def test_out_of_set_matrix(strategy, labeled_as, with_oos):
    pool, model = _two_cluster_pool(dropout=0.2 if strategy == "bald" else 0.0)
    lab_idx = np.r_[0:10, 200:210]  # ten of each, sent; the second ten answered "none of these"
    oos_idx = np.arange(200, 210)
    if labeled_as == "indices":
        labeled, oos = lab_idx, (oos_idx if with_oos else None)
    else:
        labeled, oos = pool[lab_idx], (np.arange(10, 20) if with_oos else None)
    r = jacal.acquire(model, pool, 20, strategy=strategy, labeled=labeled, out_of_set=oos, seed=0)
    assert len(set(r.indices.tolist())) == 20
    if labeled_as == "indices":
        assert not set(r.indices.tolist()) & set(lab_idx.tolist())
    if with_oos:  # the weight layer keeps every strategy mostly to the in-set cluster (P(in) ≈ 0.06 on junk)
        w = jacal.acquire(model, pool, 20, strategy=strategy, labeled=labeled, out_of_set=oos, open_set="weight", seed=0)
        assert (w.indices < 200).mean() >= 0.8, w.indices


@pytest.mark.parametrize("strategy", ["jacobian", "margin", "badge"])
def test_open_set_layer_cuts_waste_against_off(strategy):
    pool, model = _two_cluster_pool()
    lab, oos = np.r_[0:10, 200:210], np.arange(200, 210)
    off = jacal.acquire(model, pool, 30, strategy=strategy, labeled=lab, out_of_set=oos, open_set="off").indices
    on = jacal.acquire(model, pool, 30, strategy=strategy, labeled=lab, out_of_set=oos, open_set="weight").indices
    assert (on >= 200).sum() < (off >= 200).sum() or (off >= 200).sum() == 0
    assert (on >= 200).sum() <= 6


def test_out_of_set_errors():
    pool, model = _two_cluster_pool()
    for kwargs, frag in [({"out_of_set": [1]}, "pass `labeled`"),
                         ({"labeled": pool[:5], "out_of_set": [7]}, r"row positions in `labeled` \(5 rows\)"),
                         ({"labeled": np.arange(5), "out_of_set": [400]}, "pool indices"),
                         ({"labeled": np.arange(5), "out_of_set": np.array([0.5])}, "integer")]:
        with pytest.raises((ValueError, TypeError), match=frag):
            jacal.acquire(model, pool, 3, strategy="jacobian", **kwargs)


def _ldm_law(ldm, h, k, w, picked):
    """The next pick's law after ``picked`` (positions in LDM order), one item at a time in float64:
    ∝ w·(γ·D)², D the cosine distance to the nearest pick (0 below 1e-5)."""
    order = np.argsort(ldm, kind="stable")
    lv = ldm[order]
    q = lv[min(k, len(lv) - 1)]
    gamma = np.array([np.exp(-max(v - q, 0.0) / q) for v in lv])
    gamma[k:] *= k / gamma[k:].sum()
    gamma = np.minimum(gamma, 1.0)
    unit = [h[i] / np.linalg.norm(h[i]) for i in order]
    ww = np.ones(len(lv)) if w is None else w[order]
    p = np.zeros(len(lv))
    for i in range(len(lv)):
        if i in picked:
            continue
        d = min(max(1.0 - float(unit[i] @ unit[j]), 0.0) for j in picked)
        d = 0.0 if d < 1e-5 else d
        p[i] = ww[i] * (gamma[i] * d) ** 2
    return order, gamma, p / p.sum()


@pytest.mark.parametrize("weighted", [False, True])
def test_ldm_seeding_by_rejection_draws_the_law_of_the_pass(weighted):
    """Rejection (the path for large pools) and the pass per pick draw the second and third picks from
    the same law, checked against the law computed one item at a time; a small rejection budget forces
    the bound's refreshes."""
    from scipy.stats import chisquare

    from jacal.acquisition.ldm import _rejection_draws

    rng = np.random.default_rng(3)
    n, k = 7, 3
    ldm, h = rng.random(n), rng.normal(size=(n, 3))
    w = rng.random(n) + 0.2 if weighted else None
    order, gamma, _ = _ldm_law(ldm, h, k, w, picked=[0])
    first = 0 if w is None else int(np.argmax(w[order] * gamma))  # the smallest LDM, weighted
    _, _, p2 = _ldm_law(ldm, h, k, w, picked=[first])
    wc = None if w is None else torch.from_numpy(w[order])
    position = np.argsort(order)  # item -> its position in LDM order
    runs = 2000
    for sampler in ("pass", "rejection", "refresh"):
        seconds, pairs = np.zeros(n), {}
        for s in range(runs):
            if sampler == "refresh":
                pos, _ = _rejection_draws(h, order, torch.from_numpy(gamma), wc, first, k, np.random.default_rng(s),
                                          batch=2, max_rejections=2)
            else:
                picks, _ = ldm_seeding(ldm, h, k, np.arange(n), seed=s, weights=w, sampler=sampler)
                pos = position[picks]
            assert pos[0] == first and len(set(pos.tolist())) == k
            seconds[pos[1]] += 1
            pairs[(pos[1], pos[2])] = pairs.get((pos[1], pos[2]), 0) + 1
        keep = p2 > 0
        assert seconds[~keep].sum() == 0
        assert chisquare(seconds[keep], p2[keep] * runs).pvalue > 1e-3, (sampler, seconds, p2 * runs)
        # the third pick given the second, for the most frequent second pick
        j = int(np.argmax(seconds))
        _, _, p3 = _ldm_law(ldm, h, k, w, picked=[first, j])
        third = np.array([pairs.get((j, i), 0) for i in range(n)])
        keep = p3 > 0
        assert third[~keep].sum() == 0
        assert chisquare(third[keep], p3[keep] * third.sum()).pvalue > 1e-3, (sampler, third, p3)


def test_ldm_seeding_reads_a_memory_mapped_pool_by_rejection(tmp_path):
    rng = np.random.default_rng(4)
    ldm, h = rng.random(400), rng.normal(size=(400, 6)).astype(np.float32)
    np.save(tmp_path / "h.npy", h)
    mapped = np.load(tmp_path / "h.npy", mmap_mode="r")
    cand = np.arange(10, 400)
    a = ldm_seeding(ldm, h, 25, cand, seed=5, sampler="rejection")
    b = ldm_seeding(ldm, mapped, 25, cand, seed=5, sampler="rejection")
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])
    assert len(set(a[0].tolist())) == 25 and set(a[0].tolist()) <= set(cand.tolist())
    with pytest.raises(ValueError, match="`sampler`"):
        ldm_seeding(ldm, h, 2, cand, sampler="fast")
