import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import jacal
from jacal.acquisition import scores as S

ALL = sorted(jacal.STRATEGIES)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = jacal.mlp(12, 4, width=16, depth=2, dropout=0.3, weight_variance=4.0, seed=0).eval()
    pool = torch.rand(60, 12) * 3
    return model, pool


def test_array_scores_against_direct_formulas():
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(S.least_confidence(p), [0.3, 0.6, 2 / 3])
    np.testing.assert_allclose(S.margin(p), [-0.5, -0.05, 0.0], atol=1e-12)
    np.testing.assert_allclose(S.entropy(p), [-sum(v * np.log(v) for v in row) for row in p])
    # BALD: identical MC samples carry no information; disagreeing confident samples carry log 2
    same = np.stack([p, p])
    np.testing.assert_allclose(S.bald(same), 0.0, atol=1e-12)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(S.bald(disagree), [np.log(2)])
    with pytest.raises(ValueError, match="probabilities"):
        S.entropy(np.array([[0.5, 0.7]]))
    with pytest.raises(ValueError, match="NaN"):
        S.margin(np.array([[np.nan, 0.5]]))


def test_each_strategy_scores_match_direct_computation(setup):
    model, pool = setup
    with torch.no_grad():
        probs = torch.softmax(model(pool).double(), 1).numpy()
    direct = {"least-confidence": 1 - probs.max(1), "margin": -(np.sort(probs, 1)[:, -1] - np.sort(probs, 1)[:, -2]),
              "entropy": -(probs * np.log(probs)).sum(1),
              "jacobian-topk": jacal.jacobian_norm(model, pool).double().numpy()}
    for name, expected in direct.items():
        res = jacal.acquire(model, pool, 5, strategy=name)
        np.testing.assert_allclose(res.scores, expected, rtol=1e-5, atol=1e-12)
        top = np.argsort(-expected, kind="stable")[:5]
        assert set(res.indices) == set(top)


def test_retired_strategy_names_its_replacement(setup):
    model, pool = setup
    with pytest.raises(ValueError, match=r"'jacobian-diverse' was retired .*use 'jacobian'"):
        jacal.acquire(model, pool, 5, strategy="jacobian-diverse")


def test_bald_uses_mc_dropout_and_needs_dropout(setup):
    model, pool = setup
    res = jacal.acquire(model, pool, 5, strategy="bald", mc_samples=30, seed=1)
    assert np.all(res.scores >= 0) and res.scores.max() > 0
    assert not any(m.training for m in model.modules())  # dropout switched back off
    no_dropout = jacal.mlp(12, 4, width=8, depth=1, seed=0).eval()
    with pytest.raises(ValueError, match="dropout"):
        jacal.acquire(no_dropout, pool, 5, strategy="bald")


def test_jacobian_kmeans_samples_from_jacobian_embeddings(setup):
    model, pool = setup
    res = jacal.acquire(model, pool, 8, strategy="jacobian-kmeans", seed=3)
    np.testing.assert_allclose(res.scores, jacal.jacobian_norm(model, pool).double().numpy(), rtol=1e-5)
    # selection scores are the sketched Jacobian distance to the nearest earlier pick (the origin first)
    emb = jacal.jacobian_embedding(model, pool, sketch_dim=64, seed=3).flatten(1).double()
    centers = [torch.zeros(emb.shape[1], dtype=torch.float64)]
    for i, d in zip(res.indices, res.selection_scores):
        assert d == pytest.approx(min(float((emb[i] - c).norm()) for c in centers), rel=1e-4)
        centers.append(emb[i])


def test_jacobian_boundary_scores_are_inverse_deepfool_distances(setup):
    model, pool = setup
    res = jacal.acquire(model, pool, 6, strategy="jacobian", seed=1)
    m = __import__("copy").deepcopy(model).double()
    for n in range(0, 60, 7):  # float64, one point at a time
        x = pool[n:n + 1].double().requires_grad_(True)
        z = m(x)[0]
        a, b = z.topk(2).indices
        (g,) = torch.autograd.grad(z[a] - z[b], x)
        distance = float((z[a] - z[b]).detach() / g.norm())
        assert res.scores[n] == pytest.approx(1 / distance, rel=1e-4)


@pytest.mark.parametrize("strategy", ALL)
def test_acquire_contract(setup, strategy):
    model, pool = setup
    labeled = [0, 3, 7, 11]
    res = jacal.acquire(model, pool, 10, strategy=strategy, labeled=labeled, seed=2)
    assert res.indices.shape == (10,) and len(set(res.indices)) == 10
    assert not set(res.indices) & set(labeled)
    assert res.scores.shape == (60,) and res.strategy == strategy
    again = jacal.acquire(model, pool, 10, strategy=strategy, labeled=labeled, seed=2)
    assert np.array_equal(res.indices, again.indices)
    # NaN items are reported and never chosen
    bad = pool.clone()
    bad[[1, 2]] = float("nan")
    res = jacal.acquire(model, bad, 10, strategy=strategy, seed=2)
    assert res.invalid.tolist() == [1, 2] and not {1, 2} & set(res.indices)


def test_random_depends_on_seed_and_ties_are_seeded(setup):
    model, pool = setup
    a = jacal.acquire(model, pool, 10, strategy="random", seed=0).indices
    b = jacal.acquire(model, pool, 10, strategy="random", seed=1).indices
    assert not np.array_equal(a, b)
    flat = jacal.mlp(12, 4, width=4, depth=1, seed=0).eval()
    with torch.no_grad():
        for p in flat.parameters():
            p.zero_()  # every item scores the same: ties everywhere
    t0 = jacal.acquire(flat, pool, 5, strategy="entropy", seed=0).indices
    t1 = jacal.acquire(flat, pool, 5, strategy="entropy", seed=0).indices
    t2 = jacal.acquire(flat, pool, 5, strategy="entropy", seed=5).indices
    assert np.array_equal(t0, t1) and not np.array_equal(t0, t2)


def test_pool_containers_agree(setup):
    model, pool = setup
    ref = jacal.acquire(model, pool, 5, strategy="coreset").indices
    assert np.array_equal(jacal.acquire(model, pool.numpy(), 5, strategy="coreset").indices, ref)
    ds = TensorDataset(pool, torch.zeros(len(pool)))
    assert np.array_equal(jacal.acquire(model, ds, 5, strategy="coreset", batch_size=7).indices, ref)
    assert np.array_equal(jacal.acquire(model, DataLoader(ds, batch_size=9), 5, strategy="coreset").indices, ref)
    with pytest.raises(ValueError, match="shuffle"):
        jacal.acquire(model, DataLoader(ds, batch_size=9, shuffle=True), 5)


def test_labeled_features_anchor_coreset(setup):
    model, pool = setup
    res = jacal.acquire(model, pool, 3, strategy="coreset", labeled=pool[:10])
    # items identical to a labeled one have distance 0 to the labeled set, so they are not picked first
    # (float32 embeddings: "zero" is zero up to rounding, far below every other item's distance)
    assert res.scores[:10].max() < 0.01 * np.median(res.scores[10:])
    assert not set(res.indices) & set(range(10))


def test_bad_inputs(setup):
    model, pool = setup
    with pytest.raises(ValueError, match="no larger than the valid pool items after exclusions \\(56\\)"):
        jacal.acquire(model, pool, 57, labeled=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        jacal.acquire(model, torch.zeros(0, 12), 1)
    with pytest.raises(ValueError, match="`strategy`"):
        jacal.acquire(model, pool, 1, strategy="magic")
    with pytest.raises(ValueError, match="rejected pool items"):
        jacal.acquire(model, torch.rand(5, 7), 1, strategy="entropy")
    with pytest.raises(ValueError, match="`labeled` indices"):
        jacal.acquire(model, pool, 1, labeled=[100])


def test_modal_adapter(setup):
    """modAL's contract: ``(indices, scores)`` like modAL's own strategies (its learner unpacks the pair)."""
    model, pool = setup
    q = jacal.modal_query_strategy("jacobian")
    ref = jacal.acquire(model, pool, 4, strategy="jacobian")
    idx, scores = q(model, pool.numpy(), n_instances=4)
    assert np.array_equal(idx, ref.indices) and np.array_equal(scores, ref.scores[ref.indices])

    class Learner:  # modAL ActiveLearner around a skorch-like estimator
        class estimator:
            module_ = model

    assert np.array_equal(q(Learner(), pool.numpy(), 4)[0], idx)
    query_result, query_metrics = q(Learner(), pool.numpy(), 2)  # what modAL's BaseLearner.query unpacks
    assert len(query_result) == 2 and len(query_metrics) == 2

    class SklearnOnly:
        def predict_proba(self, X):
            return np.c_[np.linspace(0.5, 1, len(X)), 1 - np.linspace(0.5, 1, len(X))]

    idx, scores = jacal.modal_query_strategy("margin")(SklearnOnly(), np.zeros((10, 2)), 2)
    assert idx.tolist() == [0, 1] and scores[0] >= scores[1]
    with pytest.raises(ValueError, match="needs a torch model"):
        jacal.modal_query_strategy("badge")(SklearnOnly(), np.zeros((10, 2)), 2)


def test_modal_adapter_scores_in_eval_mode_and_gives_the_mode_back(setup):
    """A skorch net is in train mode after fit: the adapter scores it in eval mode (no force_eval) and
    leaves it in train mode, dropout included."""
    _, pool = setup
    net = torch.nn.Sequential(torch.nn.Linear(pool.shape[1], 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(16, 3))
    torch.manual_seed(0)
    net.train()
    idx, _ = jacal.modal_query_strategy("jacobian")(net, pool.numpy(), n_instances=3)
    assert net.training and all(m.training for m in net.modules())
    assert np.array_equal(idx, jacal.acquire(net.eval(), pool, 3, strategy="jacobian").indices)
    net[2].train()  # a mixed state is given back as it was
    jacal.modal_query_strategy("margin")(net, pool.numpy(), n_instances=2)
    assert [m.training for m in net.modules()] == [False, False, False, True, False]


def test_custom_strategy_registers():
    from jacal.acquisition import Strategy, register_strategy

    @register_strategy
    class FirstItems(Strategy):
        name = "test-first"

        def scores(self, f):
            return -np.arange(len(f.finite), dtype=float)

    try:
        model = jacal.mlp(3, 2, width=4, depth=1, seed=0).eval()
        assert jacal.acquire(model, torch.rand(10, 3), 3, strategy="test-first").indices.tolist() == [0, 1, 2]
    finally:
        jacal.STRATEGIES.pop("test-first")


@pytest.mark.parametrize("name", ALL)
def test_every_strategy_returns_a_selection(setup, name):
    from jacal.acquisition import Selection, get_strategy
    from jacal.features import extract_features

    model, pool = setup
    strat = get_strategy(name)
    f = extract_features(model, pool, need=set(strat.needs), seed=0)
    out = strat.select(f, 5, candidates=np.arange(len(pool)), seed=0)
    assert isinstance(out, Selection)
    assert out.indices.shape == (5,) and out.scores.shape == (len(pool),) and out.selection_scores.shape == (5,)


@pytest.mark.parametrize("bad, message", [
    (lambda f, k: (np.arange(k), np.zeros(len(f.finite)), np.zeros(k), 0), "must return a Selection"),
    (lambda f, k: (np.zeros(k, dtype=np.int64), np.zeros(len(f.finite)), np.zeros(k)), "distinct candidates"),
    (lambda f, k: (np.arange(k) + len(f.finite), np.zeros(len(f.finite)), np.zeros(k)), "distinct candidates"),
    (lambda f, k: (np.arange(k)[:-1], np.zeros(len(f.finite)), np.zeros(k)), "expected 3 integer indices"),
    (lambda f, k: (np.arange(k) * 1.0, np.zeros(len(f.finite)), np.zeros(k)), "expected 3 integer indices"),
    (lambda f, k: (np.arange(k), np.zeros(len(f.finite) - 1), np.zeros(k)), "scores of shape"),
    (lambda f, k: (np.arange(k), np.zeros(len(f.finite)), np.zeros(k + 1)), "scores of shape"),
])
def test_a_custom_strategy_that_breaks_the_contract_is_named(bad, message):
    from jacal.acquisition import Strategy, register_strategy

    @register_strategy
    class Broken(Strategy):
        name = "test-broken"

        def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
            return bad(f, k)

    try:
        model = jacal.mlp(3, 2, width=4, depth=1, seed=0).eval()
        with pytest.raises((ValueError, TypeError), match=f"strategy 'test-broken'.*{message}"):
            jacal.acquire(model, torch.rand(10, 3), 3, strategy="test-broken")
        # a labeled item is not a candidate: selecting it breaks the contract too
        Broken.select = lambda self, f, k, **kw: (np.arange(k), np.zeros(len(f.finite)), np.zeros(k))
        with pytest.raises(ValueError, match="distinct candidates"):
            jacal.acquire(model, torch.rand(10, 3), 3, strategy="test-broken", labeled=[0])
    finally:
        jacal.STRATEGIES.pop("test-broken")


def test_feature_names_are_checked_and_need_members_are_strings(setup):
    from jacal.features import NEEDS, Need, extract_features

    model, pool = setup
    assert Need.JACOBIAN == "jacobian" and {str(n) for n in Need} == NEEDS
    assert all(set(map(str, jacal.STRATEGIES[s].needs)) <= NEEDS for s in ALL)
    with pytest.raises(ValueError, match=r"among .*got \['jacobain'\]"):
        extract_features(model, pool, need={"jacobain"})
    with pytest.raises(TypeError, match="set of names"):
        extract_features(model, pool, need="jacobian")
    a = extract_features(model, pool, need={Need.JACOBIAN})
    b = extract_features(model, pool, need={"jacobian"})
    assert np.array_equal(a.jacobian, b.jacobian)


def test_registering_a_taken_or_retired_name_fails_loudly():
    from jacal.acquisition.strategies import Strategy

    for taken in ("margin", "jacobian-diverse"):
        with pytest.raises(ValueError, match=f"{taken}.*already registered"):
            jacal.register_strategy(type("Mine", (Strategy,), {"name": taken}))
    assert jacal.STRATEGIES["margin"].__name__ == "Margin"


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_memory_mapped_pool_is_read_chunk_by_chunk(setup, tmp_path, dtype):
    """A read-only memory-mapped .npy (float or integer) gives every strategy the picks of the same
    array in memory, and is converted a chunk at a time: no allocation of the pool's size."""
    import tracemalloc

    model, _ = setup
    rng = np.random.default_rng(0)
    arr = (rng.random((3000, 12)) * 3).astype(np.float32) if dtype == np.float32 else \
        rng.integers(0, 4, size=(3000, 12)).astype(np.uint8)
    np.save(tmp_path / "pool.npy", arr)
    mapped = np.load(tmp_path / "pool.npy", mmap_mode="r")
    for strategy in ALL:
        got = jacal.acquire(model, mapped, 7, strategy=strategy, labeled=[0, 5], seed=2, batch_size=128)
        ref = jacal.acquire(model, np.array(arr), 7, strategy=strategy, labeled=[0, 5], seed=2, batch_size=128)
        assert list(got.indices) == list(ref.indices), strategy
    wide = jacal.mlp(400, 4, width=8, depth=1, seed=0).eval()
    np.save(tmp_path / "wide.npy", np.ones((3000, 400), dtype=dtype))
    wide_pool = np.load(tmp_path / "wide.npy", mmap_mode="r")  # 4.8 MB as float32
    for strategy in ("margin", "coreset"):
        tracemalloc.start()  # numpy registers its allocations here (torch's are not: the test sees copies in numpy)
        jacal.acquire(wide, wide_pool, 7, strategy=strategy, batch_size=128)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 3000 * 400 * 4 / 4, (strategy, peak)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_boundary_embedding_from_one_pass_matches_a_per_point_float64_reference(dtype):
    """A fully-connected net's boundary embedding comes with the logits of its own forward pass (the
    pass runs once); both against autograd on one point at a time in float64, and the fused pass
    against the unfused one (embeddings requested too)."""
    from jacal.features import extract_features

    model = jacal.mlp(12, 4, width=16, depth=2, seed=1).eval().to(dtype)
    x = torch.randn(37, 12, dtype=dtype)
    x[5] = float("nan")  # a bad row stays NaN, the others are unaffected
    fused = extract_features(model, x, need={"boundary-embedding"}, batch_size=10)
    both = extract_features(model, x, need={"boundary-embedding", "embeddings"}, batch_size=10)
    ref64 = model.double()
    for i in [0, 3, 17, 36]:
        xi = x[i].double().clone().requires_grad_(True)
        z = ref64(xi[None])[0]
        a, b = z.topk(2).indices.tolist()
        (g,) = torch.autograd.grad(z[a] - z[b], xi)
        v = (g / (z[a] - z[b])).detach()
        # the embedding is v in the first layer's rotated basis: equal norms and inner products
        assert np.linalg.norm(fused.boundary_embedding[i]) == pytest.approx(float(v.norm()), rel=1e-4)
        np.testing.assert_allclose(fused.probs[i], torch.softmax(z.detach(), 0).numpy(), rtol=1e-5, atol=1e-7)
    assert np.isnan(fused.boundary_embedding[5]).all() and not fused.finite[5]
    np.testing.assert_allclose(fused.boundary_embedding, both.boundary_embedding, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.probs, both.probs, rtol=1e-6, atol=1e-9, equal_nan=True)
    e0, e1 = fused.boundary_embedding[0].astype(np.float64), fused.boundary_embedding[3].astype(np.float64)
    vs = []
    for i in (0, 3):
        xi = x[i].double().clone().requires_grad_(True)
        z = ref64(xi[None])[0]
        a, b = z.topk(2).indices.tolist()
        (g,) = torch.autograd.grad(z[a] - z[b], xi)
        vs.append((g / (z[a] - z[b])).detach().numpy())
    assert float(e0 @ e1) == pytest.approx(float(vs[0] @ vs[1]), rel=1e-4, abs=1e-6)


def test_uint8_pools_are_pixels_scaled_like_image_folders(setup):
    """One rule: uint8 items are [0, 255] pixels read as [0, 1] (as image folders are), so a uint8 pool
    and the same pool divided by 255 give the same picks and scores."""
    model, _ = setup
    pixels = np.random.default_rng(0).integers(0, 256, size=(60, 12)).astype(np.uint8)
    for strategy in ("margin", "jacobian"):
        a = jacal.acquire(model, pixels, 5, strategy=strategy)
        b = jacal.acquire(model, pixels.astype(np.float32) / 255, 5, strategy=strategy)
        assert list(a.indices) == list(b.indices)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    with pytest.warns(UserWarning, match=r"whole numbers in \[0, 255\].*uint8 or divide by 255"):
        jacal.acquire(model, pixels.astype(np.float32), 5, strategy="margin")


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, bool])
def test_integer_token_pools_are_refused_in_one_line(setup, dtype):
    model, _ = setup
    tokens = np.random.default_rng(0).integers(0, 2, size=(20, 12)).astype(dtype)
    for pool in (tokens, torch.from_numpy(tokens)):
        with pytest.raises(TypeError, match=r"^`pool` holds \w+ values: integer token inputs \(text models\) are not "
                                            r"supported; pass continuous inputs") as err:
            jacal.acquire(model, pool, 3, strategy="margin")
        assert "\n" not in str(err.value)


def test_default_chunk_follows_the_item_size_and_never_changes_the_picks(monkeypatch):
    """Big images get small chunks by default (a budget of input numbers per chunk), with the picks
    of any other chunk size."""
    import jacal.acquisition.engine as engine
    import jacal.features as features

    assert engine.default_batch_size(np.zeros((5, 1, 28, 28), np.float32)) == 256
    assert engine.default_batch_size(torch.zeros(5, 3, 224, 224)) == 27  # 4M numbers
    assert engine.default_batch_size(torch.zeros(5, 3, 2048, 2048)) == 1
    model = jacal.cnn((3, 40, 40), 4, channels=(4,), hidden=16, seed=0).eval()
    pool = torch.rand(70, 3, 40, 40)
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 3 * 40 * 40 * 16)  # a 16-item default chunk at this size
    chunks = []
    real_iter = features.iter_pool
    monkeypatch.setattr(features, "iter_pool", lambda p, b: (chunks.append(b), real_iter(p, b))[1])
    for strategy in ("margin", "jacobian", "badge"):
        chunks.clear()
        picks = jacal.acquire(model, pool, 6, strategy=strategy, seed=1)
        assert chunks and set(chunks) == {16}, chunks
        for batch_size in (7, 70):
            other = jacal.acquire(model, pool, 6, strategy=strategy, seed=1, batch_size=batch_size)
            assert list(other.indices) == list(picks.indices), (strategy, batch_size)
            np.testing.assert_allclose(other.scores, picks.scores, rtol=1e-4, atol=1e-7)
