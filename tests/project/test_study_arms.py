"""The open-pool study arms of benchmarks/al_experiments.py that isolate where `jacobian`'s gap to LDM-S
comes from: `jacobian-feat` (the batch spread by penultimate features), `jacobian-theta` (the
boundary distance taken in the last layer's weights) and `jacobian-theta-feat` (both). Each selects as
`jacobian` on a closed pool; `jacobian-theta`'s distance is checked against a float64 reference
computed one item at a time."""
import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import jacal
from jacal.acquisition.strategies import STRATEGIES, get_strategy
from jacal.features import Need, extract_features

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def arms():
    """The study module's arm classes by name; jacal's registry is restored afterwards (importing the
    module registers a few hundred study arms, which other tests that list the strategies must not see)."""
    import sys

    saved = dict(STRATEGIES)
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("_al_experiments_study", BENCH / "al_experiments.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield {"jacobian-feat": mod.JacobianFeat, "jacobian-theta": mod.JacobianTheta,
               "jacobian-theta-feat": mod.JacobianThetaFeat}
    finally:
        sys.path.remove(str(BENCH))
        STRATEGIES.clear()
        STRATEGIES.update(saved)


def _pool():
    g = torch.Generator().manual_seed(0)
    pool = torch.cat([torch.randn(150, 8, generator=g) * 0.4 + torch.eye(8)[0] * 2,
                      torch.randn(150, 8, generator=g) * 0.4 - torch.eye(8)[0] * 2])
    return pool, jacal.mlp(8, 3, width=16, depth=1, dropout=0.2, seed=1).eval()


NEED = {Need.BOUNDARY_EMBEDDING, Need.EMBEDDINGS, Need.LOGITS}


@pytest.mark.parametrize("arm", ["jacobian-feat", "jacobian-theta", "jacobian-theta-feat"])
def test_closed_pool_selects_as_jacobian(arms, arm):
    pool, model = _pool()
    f = extract_features(model, pool, need=NEED)
    cand = np.arange(20, len(pool))
    got = arms[arm]().select(f, 12, candidates=cand, seed=3)
    want = get_strategy("jacobian").select(f, 12, candidates=cand, seed=3)
    assert got.indices.tolist() == want.indices.tolist()


@pytest.mark.parametrize("arm", ["jacobian-feat", "jacobian-theta", "jacobian-theta-feat"])
def test_open_pool_draws_only_labelable_candidates(arms, arm):
    """Draws ∝ P(in)·(γ·D)²: an item with P(in) = 0 is never drawn; picks are distinct candidates."""
    pool, model = _pool()
    f = extract_features(model, pool, need=NEED)
    w = np.where(np.arange(len(pool)) < 150, 0.9, 0.0)
    cand = np.arange(20, len(pool))
    sel = arms[arm]().select(dataclasses.replace(f, in_set=w), 30, candidates=cand, seed=0)
    assert len(set(sel.indices.tolist())) == 30
    assert np.isin(sel.indices, cand).all() and (sel.indices < 150).all()


def test_theta_distance_matches_a_float64_reference(arms):
    """δ_θ = (z_a − z_b) / ‖∂(z_a − z_b)/∂(W, b)‖ · √2 for the last linear layer, by autograd on a float64
    copy of the model, one item at a time."""
    pool, model = _pool()
    f = extract_features(model, pool, need=NEED)
    sel = arms["jacobian-theta"]().select(dataclasses.replace(f, in_set=np.ones(len(pool))), 5,
                                          candidates=np.arange(len(pool)), seed=0)
    m64 = jacal.mlp(8, 3, width=16, depth=1, dropout=0.2, seed=1).double().eval()
    m64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    last = [mod for mod in m64.modules() if isinstance(mod, torch.nn.Linear)][-1]
    for i in range(0, len(pool), 37):
        z = m64(pool[i:i + 1].double())[0]
        a, b = z.topk(2).indices.tolist()
        gap = z[a] - z[b]
        gw, gb = torch.autograd.grad(gap, [last.weight, last.bias])
        ref = gap.item() / (torch.cat([gw.flatten(), gb]).norm().item() / np.sqrt(2.0))
        np.testing.assert_allclose(sel.scores[i], ref, rtol=1e-5)
