"""Diversity selection (k-center greedy, k-means++ seedings, their D² samplers and paths).

The pins at the top record the picks each path and strategy makes at fixed seeds
(``tests/data/selection_picks.json``): the selection code may be reorganised, never its picks.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import jacal
from jacal.acquisition.diversity import k_center_greedy, kmeans_pp, kmeans_pp_outer, selection

PINS = Path(__file__).parent / "data" / "selection_picks.json"
K = 12


def _run(fn, path, *args, **kw):
    """Call a selection function on one path: ``"rejection"`` / ``"pass"`` (the exact k-means++ by
    rejection or by one pass per pick), ``"mcmc"``, ``"exact"`` / ``"sketch"`` (k-center)."""
    if path in ("rejection", "pass"):
        return fn(*args, method="exact", rejection=path == "rejection", **kw)
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


if __name__ == "__main__":  # records the pins (run once, on the code whose picks they keep)
    torch.set_num_threads(1)
    pins = {"functions": function_cases(), "strategies": strategy_cases(*_digits_model())}
    PINS.write_text("{\n" + ",\n".join(
        f'"{part}": {{\n' + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(cases.items())) + "\n}"
        for part, cases in pins.items()) + "\n}\n")
