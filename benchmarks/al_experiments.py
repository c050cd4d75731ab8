"""Does Jacobian acquisition pay off? The evidence behind the active-learning benchmark pages (docs/benchmarks/).

Runs ``jacal loop`` (the library's :func:`jacal.loop.run_loop`) on protocols, every strategy
paired over the same seeds (same validation split, pool, first labeled set and test set):

* ``digits``: the ``smoke`` preset (scikit-learn digits, 20 labels + 10 per round, 8 rounds);
* ``mnist-gal``: Gal et al. 2017, 20 labels + 10 per round, 30 rounds, pool of 20,000;
* ``mnist-batch100``: 100 labels + 100 per round, 10 rounds, pool of 20,000;
* ``mnist-cnn``: the batch-100 protocol with jacal's small CNN, 5 rounds, 3 seeds, a pool of 5,000 and
  fewer strategies (a CNN's Jacobians take one backward pass per row on a CPU).

and the pools teams have (:mod:`jacal.scenarios`), on real MNIST with 5 seeds each (``open-set``,
``long-tail``, ``repeated``, ``embedding-linear``, ``embedding-mlp``, ``large-batch``, ``cold-start``,
``image3-cnn``; see ``PROTOCOLS`` below for each one's numbers) and ``digits-open-set`` offline. Their
tables add the share of labels spent on items outside the label set (paired against random's), the
duplicate share of the batches and the labels of the rarest class, and compare each strategy with the
best of margin, badge and LDM-S.

Each protocol writes ``OUT/PROTOCOL/`` (loop.sqlite, curves.csv, curves.png, summary.json,
report.md); a killed run continues where it stopped when started again (always ``resume=True``).
``report`` collects the finished summaries into ``OUT/table.md`` and prints them as JSON:
AULC mean and 95% CI per strategy, paired differences against random and against the better of
margin and badge (paired t-test over seeds).

    python benchmarks/al_experiments.py run digits
    python benchmarks/al_experiments.py run mnist-gal --data-root ../shared/data --threads 1
    python benchmarks/al_experiments.py run open-set --data-root ../shared/data --threads 1
    python benchmarks/al_experiments.py report --docs docs/benchmarks/jacobian_acquisition
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_MNIST  # noqa: E402

from jacal.acquisition.strategies import (STRATEGIES, JacobianBoundary, Margin, Selection, Strategy,  # noqa: E402
                                          _BoundarySeeding, get_strategy, in_set_candidates, register_strategy,
                                          top_k)
from jacal.features import Need  # noqa: E402
from jacal.loop import LOOP_PRESETS, LoopCallbacks, run_loop, summarize  # noqa: E402
from jacal.loop.summary import aulc, paired_seeds as paired_comparison  # noqa: E402


# ---------------------------------------------------------------------------------------------------
# Study-only strategies: variants measured against the public ones, registered here (not in jacal's
# registry) so that `jacal acquire --help` lists only what a user should pick.

def _conformal_candidates(f, candidates: np.ndarray, k: int, threshold=None) -> np.ndarray:
    """A hard cut on the in-distribution score: candidates whose score reaches the conformal floor
    (the score 95% of labeled in-set items reach), else the ``k`` highest scores."""
    if f.in_distribution is None:
        return candidates
    threshold = f.in_distribution_floor if threshold is None else threshold
    s = f.in_distribution[candidates]
    keep = candidates[s >= threshold]
    return keep if len(keep) >= k else candidates[np.argsort(-s, kind="stable")[:k]]


class _LayerArm(Strategy):
    """A public strategy under a given open-pool layer: jacal's own (``off``, ``weight``,
    ``class-floor``: the arm pins ``open_set``) or a study-only one run here from the calibrated
    ``P(in)`` that the ``weight`` layer hands over: ``threshold`` (only ``P(in) >= 1/2`` are
    candidates, no weighting), ``conformal`` (:func:`_conformal_candidates`)."""

    base: str = ""
    layer: str = ""

    def __init__(self):
        self._base = get_strategy(self.base)

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        if f.in_set is not None and self.layer in ("threshold", "conformal"):
            candidates = (in_set_candidates(f.in_set, candidates, k) if self.layer == "threshold"
                          else _conformal_candidates(f, candidates, k))
            f = dataclasses.replace(f, in_set=None)
        return self._base.select(f, k, candidates=candidates, labeled_embeddings=labeled_embeddings, seed=seed)


LAYER_BASES = ("random", "margin", "badge", "ldm-s", "jacobian")
LAYERS = ("off", "weight", "class-floor", "share-floor", "threshold", "conformal")
for _b in LAYER_BASES:
    for _l in LAYERS:
        _name = f"{_b}:{_l}"
        if _name not in STRATEGIES:
            register_strategy(type(f"Arm_{_b}_{_l}".replace("-", "_"), (_LayerArm,),
                                   {"name": _name, "base": _b, "layer": _l, "needs": STRATEGIES[_b].needs,
                                    "uses_labeled": STRATEGIES[_b].uses_labeled, "weighs_in_set": True,
                                    "open_set": _l if _l in ("off", "weight", "class-floor", "share-floor") else "weight"}))


def _register_once(cls):
    return cls if STRATEGIES.get(cls.name) is not None else register_strategy(cls)


@_register_once
class JacobianBoundaryClosed(_BoundarySeeding):
    """``jacobian`` that ignores "none of these" answers (= ``jacobian:off``; the name in docs/real_pools.md)."""

    name = "jacobian-closed"
    open_set = "off"


@_register_once
class JacobianBoundaryHalf(_BoundarySeeding):
    """``jacobian`` behind a fixed cut at in-distribution score ½ (no open-pool layer)."""

    name = "jacobian-id-half"
    open_set = "weight"  # hands the in-distribution score over; the cut is made here

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        return super().select(dataclasses.replace(f, in_set=None), k, seed=seed,
                              candidates=_conformal_candidates(f, candidates, k, 0.5))


@_register_once
class JacobianBoundaryFeatures(_BoundarySeeding):
    """``[v(x), ‖v(x)‖·ĥ(x)]`` (ĥ the unit penultimate features), so items facing one boundary still differ
    by their features (a linear head's ``v`` has one direction per class pair); open pools: the conformal cut."""

    name = "jacobian-features"
    needs = frozenset({Need.BOUNDARY_EMBEDDING, Need.EMBEDDINGS})
    feature_weight = 1.0
    open_set = "weight"

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        return super().select(dataclasses.replace(f, in_set=None), k, seed=seed,
                              candidates=_conformal_candidates(f, candidates, k))


@_register_once
class MarginKNN(Margin):
    """``margin`` among the candidates of the conformal cut (= ``margin:conformal``; the name in docs/real_pools.md)."""

    name = "margin-knn"
    open_set = "weight"
    weighs_in_set = True

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        s = self.scores(f)
        idx = top_k(s, _conformal_candidates(f, candidates, k), k, seed)
        return Selection(idx, s, s[idx])


class _JacobianSeeding(Strategy):
    """LDM-S's seeding (:func:`jacal.acquisition.ldm.ldm_seeding`) with the first-order (DeepFool)
    distance to the nearest boundary, ``1/‖v(x)‖``, in place of the LDM: a bounded weight
    ``γ = exp(−max(δ − q, 0)/q)`` (``q`` the k-th smallest distance), so ``P(in)`` can weigh it, and
    diversity by cosine distance of penultimate features (``space="features"``) or of boundary
    directions ``v/‖v‖`` (``space="boundary"``)."""

    needs = frozenset({Need.BOUNDARY_EMBEDDING, Need.EMBEDDINGS})
    weighs_in_set = True
    space = "features"

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        from jacal.acquisition.ldm import ldm_seeding

        v = f.boundary_embedding
        norm = np.linalg.norm(np.asarray(v, dtype=np.float64), axis=1)
        delta = np.where(np.isfinite(norm) & (norm > 0), 1.0 / np.maximum(norm, 1e-300), np.inf)
        h = f.embeddings if self.space == "features" else v
        picks, w = ldm_seeding(delta, h, k, candidates, seed=seed, weights=f.in_set)
        return Selection(picks, norm, w)


@_register_once
class JacobianS(_JacobianSeeding):
    name = "jacobian-s"


@_register_once
class JacobianSV(_JacobianSeeding):
    name = "jacobian-sv"
    space = "boundary"


@_register_once
class JacobianFeat(JacobianBoundary):
    """``jacobian`` with its open-pool batch spread by the cosine distance between penultimate features
    (LDM-S's space) instead of boundary directions ``v/‖v‖``: the same boundary distance, layer and
    weights (``benchmarks/open_pool_div.py`` at study commit ``428dbbc``, arm ``feat``). On a closed pool
    it selects as ``jacobian`` does."""

    name = "jacobian-feat"
    needs = frozenset({Need.BOUNDARY_EMBEDDING, Need.EMBEDDINGS})

    def _open_pool_space(self, f):
        return np.nan_to_num(np.asarray(f.embeddings, dtype=np.float32))


@_register_once
class JacobianTheta(JacobianBoundary):
    """``jacobian``'s open-pool draws with the boundary distance taken in the last layer's weights
    instead of the input: ``δ_θ = (z_a − z_b) / ‖h̃‖`` (``h̃ = [h, 1]`` the penultimate features and a 1;
    ``‖∂(z_a − z_b)/∂(w, b)‖ = √2·‖h̃‖``), the first-order form of the perturbation LDM samples for. The
    same layer, weights and spread (boundary directions) as ``jacobian``; a diagnostic of where the gap
    to LDM-S comes from, not a candidate (it reads no input Jacobian for its weights). On a closed
    pool it selects as ``jacobian`` does. Per-item score: ``δ_θ``."""

    name = "jacobian-theta"
    needs = frozenset({Need.BOUNDARY_EMBEDDING, Need.EMBEDDINGS, Need.LOGITS})

    def _open_pool_distance(self, f):
        z = np.sort(np.asarray(f.logits, dtype=np.float64), axis=1)
        h = np.asarray(f.embeddings, dtype=np.float64)
        delta = (z[:, -1] - z[:, -2]) / np.sqrt((h * h).sum(1) + 1.0)
        ok = np.isfinite(delta)
        delta[~ok] = 2.0 * np.max(delta[ok]) if ok.any() else 1.0
        return delta, delta


@_register_once
class JacobianThetaFeat(JacobianTheta):
    """``jacobian-theta`` with its batch spread by penultimate features, as LDM-S spreads: LDM-S's
    seeding on the closed-form first-order distance in the last layer's weights instead of the sampled
    LDM, under ``jacobian``'s layer (a diagnostic, not a candidate)."""

    name = "jacobian-theta-feat"
    _open_pool_space = JacobianFeat._open_pool_space


def share_floor_candidates(in_set: np.ndarray, probs: np.ndarray, candidates: np.ndarray, k: int,
                           keep_likely: bool = False) -> np.ndarray:
    """Within each predicted class, drop as many of the least likely in-set items as the calibrated
    ``P(in)`` expects out of the set there (``round(Σ (1 − P(in)))`` of the class's candidates); the
    ``k`` most likely in-set when that leaves fewer than ``k``."""
    p = np.nan_to_num(in_set[candidates], nan=0.0)
    pred = np.nan_to_num(probs[candidates], nan=0.0).argmax(1)
    keep = (p >= 0.5) if keep_likely else np.zeros(len(candidates), dtype=bool)
    for c in np.unique(pred):
        m = np.flatnonzero(pred == c)
        n_keep = int(round(p[m].sum()))
        keep[m[np.argsort(-p[m], kind="stable")[:n_keep]]] = True
    out = candidates[keep]
    return out if len(out) >= k else in_set_candidates(in_set, candidates, k)


class _FloorArm(Strategy):
    """A public strategy behind a study-only candidate rule, optionally also drawing ∝ ``P(in)``
    (``weigh``): ``rule`` is ``share`` (:func:`share_floor_candidates`), ``class`` (jacal's class
    floor), ``class+conformal`` (the class floor's candidates that also reach the conformal floor)."""

    base: str = ""
    rule: str = ""
    weigh: bool = False
    open_set = "weight"
    weighs_in_set = True

    def __init__(self):
        self._base = get_strategy(self.base)

    def select(self, f, k, *, candidates, labeled_embeddings=None, seed=0):
        from jacal.acquisition.strategies import class_floor_candidates

        if f.in_set is not None:
            if self.rule == "none":
                cand = candidates
            elif self.rule in ("share", "share+half"):
                cand = share_floor_candidates(f.in_set, f.probs, candidates, k, keep_likely=self.rule == "share+half")
            else:
                cand = class_floor_candidates(f.in_set, f.probs, candidates, k)
                if self.rule == "class+conformal":
                    both = np.intersect1d(cand, _conformal_candidates(f, candidates, 0))
                    cand = both if len(both) >= k else cand
            candidates = cand
            if not self.weigh:
                f = dataclasses.replace(f, in_set=None)
        return self._base.select(f, k, candidates=candidates, labeled_embeddings=labeled_embeddings, seed=seed)


for _b in LAYER_BASES + ("jacobian-s", "jacobian-sv"):
    for _rule, _tag in (("share", "share"), ("class", "class"), ("class+conformal", "class-conformal"), ("none", "all"), ("share+half", "share-half")):
        for _w in (False, True):
            _name = f"{_b}:{_tag}{'-w' if _w else ''}"
            if _name not in STRATEGIES:
                register_strategy(type(f"Floor_{_b}_{_tag}_{_w}".replace("-", "_"), (_FloorArm,),
                                       {"name": _name, "base": _b, "rule": _rule, "weigh": _w,
                                        "needs": STRATEGIES[_b].needs, "uses_labeled": STRATEGIES[_b].uses_labeled}))

BASELINES = ("random", "margin", "entropy", "badge", "coreset", "ldm-s", "margin-knn")
STRONG = ("margin", "badge", "ldm-s")  # the baselines a Jacobian strategy must match: the best of these
JACOBIAN = ("jacobian", "jacobian-kmeans", "jacobian-topk", "jacobian-closed", "jacobian-id-half",
            "jacobian-features")
PROTOCOLS = {
    "digits": dataclasses.replace(LOOP_PRESETS["smoke"], strategies=BASELINES + JACOBIAN),
    "mnist-gal": dataclasses.replace(LOOP_PRESETS["mnist-gal"], strategies=BASELINES + JACOBIAN),
    "mnist-batch100": dataclasses.replace(LOOP_PRESETS["mnist-batch100"], strategies=BASELINES + JACOBIAN),
    "mnist-cnn": dataclasses.replace(LOOP_PRESETS["mnist-batch100"], model="cnn", rounds=4, seeds=3, pool_size=5000,
                                     strategies=("random", "margin", "badge", "jacobian", "jacobian-kmeans")),
}

# The pools teams have (jacal.scenarios), each on real MNIST with 5 seeds: the Gal et al. protocol
# (20 labels + 10 per round, 20 rounds; at most 100 epochs a round, patience 10, so that the eight
# scenarios fit a 2-core CPU) over a pool of 10,000, except where the scenario is the batch size or
# the model. Every strategy at a seed sees the same pool, split and first labeled set.
SCENARIO_STRATEGIES = ("random", "margin", "badge", "ldm-s", "jacobian")
_GAL = dataclasses.replace(LOOP_PRESETS["mnist-gal"], rounds=20, pool_size=10000, max_epochs=100, patience=10,
                           strategies=SCENARIO_STRATEGIES)
_SHORT = dataclasses.replace(_GAL, rounds=15)  # 20 labels + 10 per round to 170: the other scenarios
PROTOCOLS.update({
    "digits-open-set": dataclasses.replace(LOOP_PRESETS["smoke"], scenario="open-set", scenario_params=(("share", 0.4),),
                                           strategies=SCENARIO_STRATEGIES + ("margin-knn", "jacobian-closed")),
    # 40% of the pool outside the label set: digits 6-9 (unseen classes) and junk (noise, blank, shuffled scans)
    "open-set": dataclasses.replace(_GAL, scenario="open-set", scenario_params=(("share", 0.4),),
                                    strategies=SCENARIO_STRATEGIES + ("margin-knn", "jacobian-closed",
                                                                      "jacobian-id-half")),
    # class c keeps 10^(-c/9) of its items (largest / smallest = 10); balanced test set
    "long-tail": dataclasses.replace(_SHORT, scenario="long-tail", scenario_params=(("ratio", 10.0),)),
    # every image 3 times, each copy with its own N(0, 0.1²) noise (Repeated MNIST)
    "repeated": dataclasses.replace(_SHORT, scenario="repeated", scenario_params=(("copies", 3.0), ("noise", 0.1))),
    # a frozen 64-d embedding (whitened PCA) with a linear head, and with a one-hidden-layer MLP head
    # (a linear head learns slowly at the recipe's lr 1e-3: up to 400 epochs, patience 30, else it stops underfit)
    "embedding-linear": dataclasses.replace(_SHORT, scenario="embedding", scenario_params=(("dim", 64.0),), depth=0,
                                            dropout=0.0, max_epochs=400, patience=30, strategies=SCENARIO_STRATEGIES + ("jacobian-features",)),
    "embedding-mlp": dataclasses.replace(_SHORT, scenario="embedding", scenario_params=(("dim", 64.0),), depth=1,
                                         width=128, strategies=SCENARIO_STRATEGIES + ("jacobian-features",)),
    # batches as teams send them: 500 labels + 500 per round (to 2,500) over a pool of 20,000
    "large-batch": dataclasses.replace(_GAL, initial=500, k=500, rounds=4, pool_size=20000),
    # nothing labeled: round 0 picks by typicality (TypiClust over pixels; random stays random)
    "cold-start": dataclasses.replace(_SHORT, initial=0, cold_start="typiclust"),
    # the same with a random first batch for every strategy: what TypiClust's round 0 buys
    "cold-start-random": dataclasses.replace(_SHORT, initial=0, cold_start="random",
                                             strategies=("random", "margin", "jacobian")),
    # 3x24x24 inputs (1,728 numbers, above the exact boundary-embedding limit of 1,024: the sketched path)
    # through the small CNN; sized for a 2-core CPU: pool 3,000, 50 + 50 per round, 4 rounds, a validation
    # split of 300, at most 60 epochs (patience 8), 2,000 test images
    "image3-cnn": dataclasses.replace(LOOP_PRESETS["mnist-batch100"], scenario="image3", scenario_params=(("size", 24.0),),
                                      model="cnn", initial=50, k=50, rounds=4, pool_size=3000, val_size=300,
                                      n_test=2000, max_epochs=60, patience=8,
                                      strategies=("random", "margin", "badge", "jacobian")),
})


# ---------------------------------------------------------------------------------------------------
# Open pools (docs/benchmarks/open-pools.md): each public strategy under its own open-pool layer (its
# plain name: acquire's default, open_set="auto"), jacobian also under the class floor and without a
# layer (":off"), margin, BADGE and LDM-S also under jacobian's share floor; on near open sets (unknown
# classes only), junk only, a mix, the contamination share varied, and a closed pool. Sized for a 2-core
# CPU: MNIST, a pool of 3,000, 20 labels + 10 per round for 15 rounds (to 170 labels sent), a
# one-hidden-layer MLP (128 units, dropout 0.25; at most 40 epochs a round, patience 5), 300 validation
# and 2,000 test images, 5 seeds. Labels sent (wasted included) are the x axis.
OPEN_ARMS = ("random:off", "margin", "badge", "ldm-s", "jacobian", "jacobian:class-floor", "jacobian:off",
             "margin:share-floor", "badge:share-floor", "ldm-s:share-floor")
# the candidates for jacobian's own open-pool rule, measured beside each other on the same pools and seeds
# (docs/benchmarks/open-pools.md, "Choosing jacobian's rule"); jacobian-sv:share-w is what jacobian does now
OPEN_CANDIDATES = ("jacobian-s", "jacobian-s:all-w", "jacobian-s:class-w", "jacobian-s:share", "jacobian-s:share-w",
                   "jacobian-sv:share-w", "jacobian-sv:class-w")
# the pilot that chose the default layer (class-floor); its plain names ran under the "weight" layer
# (commit b1da1c2; `open-report --pilot` shows them as "margin:weight", ...), its random drew ∝ P(in)
PILOT_ARMS = ("random", "margin", "margin:off", "margin:threshold", "margin:class-floor", "jacobian", "jacobian:off",
              "jacobian:threshold", "jacobian:class-floor", "jacobian:conformal")
_OPEN = dataclasses.replace(LOOP_PRESETS["mnist-gal"], rounds=15, pool_size=3000, val_size=300, n_test=2000,
                            width=128, depth=1, dropout=0.25, max_epochs=40, patience=5, seeds=5,
                            strategies=OPEN_ARMS)
OPEN_POOLS = {
    # task digits 0-4; digits 5-9 make up 10% / 40% / 70% of the pool (no junk)
    "open-near-10": (("open-set", (("share", 0.1), ("known", 5.0), ("junk", 0.0)))),
    "open-near-40": (("open-set", (("share", 0.4), ("known", 5.0), ("junk", 0.0)))),
    "open-near-70": (("open-set", (("share", 0.7), ("known", 5.0), ("junk", 0.0)))),
    # task: the even digits; the odd digits 40% of the pool
    "open-even-odd-40": ("even-odd", (("share", 0.4),)),
    # all ten digits; 10% / 40% / 70% of the pool junk (noise, blank, shuffled, inverted, blurred, overlaid)
    "open-junk-10": ("junk", (("share", 0.1),)),
    "open-junk-40": ("junk", (("share", 0.4),)),
    "open-junk-70": ("junk", (("share", 0.7),)),
    # task digits 0-4; 40% of the pool out of the set, half digits 5-9, half junk (noise, blank, shuffled)
    "open-mix-40": ("open-set", (("share", 0.4), ("known", 5.0), ("junk", 0.5))),
    # closed: the layer has nothing to learn from, every strategy selects as without it
    "open-closed": ("clean", ()),
}
for _name, (_scen, _params) in OPEN_POOLS.items():
    PROTOCOLS[_name] = dataclasses.replace(_OPEN, scenario=_scen, scenario_params=_params,
                                           strategies=("random", "margin", "badge", "ldm-s", "jacobian")
                                           if _scen == "clean" else OPEN_ARMS)
    PROTOCOLS["pilot-" + _name] = dataclasses.replace(PROTOCOLS[_name], seeds=2, rounds=12, max_epochs=60, patience=6,
                                                      strategies=PILOT_ARMS)


def run(args: argparse.Namespace) -> None:
    cfg = PROTOCOLS[args.protocol]
    changes = {k: v for k, v in (("seeds", args.seeds), ("rounds", args.rounds), ("max_epochs", args.max_epochs))
               if v is not None}
    if args.strategies:
        changes["strategies"] = tuple(args.strategies.split(","))
    cfg = dataclasses.replace(cfg, **changes)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    state = {"done": 0, "total": 0}

    def on_start(total: int, done: int) -> None:
        state.update(total=total, done=done)

    def on_round(strategy: str, seed: int, rnd: int, acc: float) -> None:
        state["done"] += 1
        print(f"[{time.perf_counter() - t0:7.0f}s] {state['done']}/{state['total']} {strategy} seed {seed} "
              f"round {rnd}: {acc:.4f}", flush=True)

    summary = run_loop(Path(args.out) / args.protocol, cfg, device=args.device, data_root=args.data_root,
                       resume=True, callbacks=LoopCallbacks(on_start=on_start, on_round=on_round))
    print(json.dumps({"protocol": args.protocol, "ranking": summary["ranking"],
                      "wall_s": round(time.perf_counter() - t0, 1)}))


def _paired(a: dict, b: dict) -> dict:
    """The loop's paired comparison (:func:`jacal.loop.summary.paired_seeds`), in this table's short names."""
    d = paired_comparison(a, b)
    return {"mean": d["mean_difference"], "ci95": d["ci95_half_width"], "p": d["p_ttest"], "n": d["n_seeds"]}


def report(args: argparse.Namespace) -> None:
    import csv


    out = Path(args.out)
    result, lines, seeds_by = {}, [], {}
    for name in PROTOCOLS:
        path = out / name / "curves.csv"
        if not path.exists():
            continue
        stored = json.loads((out / name / "summary.json").read_text())["config"]  # the run's own options
        cfg = dataclasses.replace(PROTOCOLS[name], **{k: tuple(v) if isinstance(v, list) else v
                                                      for k, v in stored.items()})
        rows = [(r["strategy"], int(r["seed"]), int(r["round"]), int(r["n_labeled"]), float(r["test_accuracy"]),
                 float(r["test_loss"]), float(r["acquisition_time_s"] or "nan"), int(r["train_epochs"]))
                for r in csv.DictReader(open(path))]
        full = {}
        for r in rows:
            full.setdefault((r[0], r[1]), []).append(r)
        complete = {key for key, rs in full.items() if len(rs) == cfg.rounds + 1}
        rows = [r for r in rows if (r[0], r[1]) in complete]
        per_seed = {}
        for (s, seed) in complete:
            rs = sorted(full[(s, seed)], key=lambda r: r[2])
            per_seed.setdefault(s, {})[seed] = aulc(np.array([r[3] for r in rs], float), np.array([r[4] for r in rs]))
        summ = summarize(rows, cfg)["strategies"]
        scen = json.loads((out / name / "summary.json").read_text()).get("scenario") or {}
        strong = max((b for b in STRONG if b in per_seed), key=lambda b: summ[b]["aulc"]["mean"], default=None)
        table = {}
        for s in sorted(per_seed, key=lambda s: -summ[s]["aulc"]["mean"]):
            table[s] = {"seeds": len(per_seed[s]), "aulc": summ[s]["aulc"], "final_accuracy": summ[s]["final_accuracy"],
                        "acquisition_s_per_round": summ[s]["acquisition_time_s"]["mean"],
                        "vs_random": _paired(per_seed[s], per_seed["random"]) if "random" in per_seed and s != "random" else None,
                        "vs_strong": ({"baseline": strong, **_paired(per_seed[s], per_seed[strong])}
                                      if strong and s != strong else None),
                        "vs_margin": (_paired(per_seed[s], per_seed["margin"])
                                      if "margin" in per_seed and s != "margin" and strong != "margin" else None),
                        "scenario": scen.get(s)}
        result[name] = table
        seeds_by[name] = per_seed
        lines += [f"### {name}", "", "| strategy | seeds | AULC [95% CI] | − random (p) | − " + (strong or "–") +
                  " (p) | − margin (p) | final acc. | acq. s/round |" + (" labels wasted | − random's (p) | duplicate share | "
                                                         "rarest class labels |" if scen else ""),
                  "|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if scen else "")]

        def diff(d):
            return "–" if not d else f"{d['mean']:+.4f} ± {d['ci95']:.4f} ({d['p']:.2g})"

        for s, t in table.items():
            a = t["aulc"]
            extra = ""
            if scen and t["scenario"]:
                sc = t["scenario"]
                wr = sc.get("wasted_vs_random")
                p = None if not wr else wr["p_ttest"]
                wr_t = "–" if not wr else f"{wr['mean_difference']:+.3f} ({'–' if p is None else f'{p:.2g}'})"
                extra = (f" {sc['wasted_share']['mean']:.1%} | {wr_t} | {sc['duplicate_share']['mean']:.3f} | "
                         f"{min(sc['labels_per_class']):g} |")
            lines.append(f"| {s} | {t['seeds']} | {a['mean']:.4f} [{a['ci_low']:.4f}, {a['ci_high']:.4f}] | "
                         f"{diff(t['vs_random'])} | {diff(t['vs_strong'])} | {diff(t['vs_margin'])} | "
                         f"{t['final_accuracy']['mean']:.4f} | "
                         f"{t['acquisition_s_per_round']:.2f} |" + extra)
        lines.append("")
    # one table across protocols: each strategy's AULC minus random's (paired over seeds)
    names = [n for n in result if result[n]]
    order = list(BASELINES) + list(JACOBIAN)
    rows_ = sorted({s for n in names for s in result[n]}, key=lambda s: order.index(s) if s in order else len(order))
    head = ["", "## AULC minus random's, paired over seeds: mean ± 95% CI (paired t-test p)", "",
            "| strategy | " + " | ".join(f"{n} ({result[n]['random']['seeds'] if 'random' in result[n] else 0} seeds)"
                                       for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for st in rows_:
        cells = []
        for n in names:
            t = result[n].get(st)
            if t is None:
                cells.append("–")
            elif st == "random":
                cells.append(f"AULC {t['aulc']['mean']:.4f}")
            else:
                d = t["vs_random"]
                cells.append(f"{d['mean']:+.4f} ± {d['ci95']:.4f} ({d['p']:.2g})")
        head.append(f"| {st} | " + " | ".join(cells) + " |")
    for st in (s_ for s_ in JACOBIAN if any(s_ in result[n] for n in names)):
        cells = []
        for n in names:
            d = result[n].get(st, {}).get("vs_strong") if st in result[n] else None
            cells.append("–" if not d else f"{d['mean']:+.4f} ± {d['ci95']:.4f} ({d['p']:.2g}) vs {d['baseline']}")
        head.append(f"| **{st} − the best of margin, badge and ldm-s** | " + " | ".join(cells) + " |")
    if "cold-start" in seeds_by and "cold-start-random" in seeds_by:  # the first batch alone, paired over seeds
        a, b = seeds_by["cold-start"], seeds_by["cold-start-random"]
        both = [st for st in a if st in b and st != "random"]
        result["cold-start-first-batch"] = {st: _paired(a[st], b[st]) for st in both}
        head += ["", "## What TypiClust's first batch buys: AULC with it minus with a random first batch (same "
                 "strategy, paired over seeds)", "", "| strategy | AULC difference (p) |", "|---|---|"]
        head += [f"| {st} | {d['mean']:+.4f} ± {d['ci95']:.4f} ({d['p']:.2g}) |"
                 for st, d in result["cold-start-first-batch"].items()]
    lines = head + [""] + lines
    (out / "table.md").write_text("\n".join(lines) + "\n")
    if args.docs is not None:  # the copies docs/benchmarks/ pages read
        import shutil

        args.docs.mkdir(parents=True, exist_ok=True)
        for name in result:
            if (out / name / "curves.png").exists():
                shutil.copyfile(out / name / "curves.png", args.docs / f"curves_{name}.png")
        (args.docs / "learning_curves.md").write_text("\n".join(lines) + "\n")
        (args.docs / "learning_curves.json").write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps(result, indent=1, default=float))


def _pair(a: dict, b: dict) -> dict:
    """``a − b`` over the seeds both have: mean, 95% t half-width, paired t-test p and Wilcoxon signed-rank p."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], float)
    out = {"mean": float(d.mean()) if len(d) else float("nan"), "n": len(d)}
    if len(d) >= 2:
        out["ci95"] = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
        out["p_t"] = float(stats.ttest_1samp(d, 0.0).pvalue) if d.std() > 0 else (1.0 if d.mean() == 0 else 0.0)
        out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return out


def open_pool_numbers(path: Path, cfg, arms=None, seeds=None) -> dict:
    """Per strategy and seed, from a finished protocol's loop.sqlite: AULC over labels sent, the
    share of labels sent that came back "none of these" (at the last round), the final accuracy and
    the curve ``(labels sent, test accuracy)``. Strategies outside the protocol's own list count only
    when ``arms`` is given (any run into the directory, e.g. with ``--strategies``)."""
    from jacal.loop.store import LoopStore

    with LoopStore(path / "loop.sqlite") as store:
        rows, metrics = store.rounds(), store.metrics()
    by = {}
    for r in rows:
        by.setdefault((r[0], r[1]), []).append(r)
    out = {"aulc": {}, "wasted": {}, "final": {}, "curve": {}}
    for (st, seed), rs in by.items():
        wanted = seed < cfg.seeds if seeds is None else seed in seeds
        if (arms is None and st not in cfg.strategies) or not wanted or len(rs) != cfg.rounds + 1:
            continue
        rs = sorted(rs, key=lambda r: r[2])
        out["curve"].setdefault(st, {})[seed] = (np.array([r[3] for r in rs], float), np.array([r[4] for r in rs]))
        out["aulc"].setdefault(st, {})[seed] = aulc(np.array([r[3] for r in rs], float), np.array([r[4] for r in rs]))
        out["final"].setdefault(st, {})[seed] = rs[-1][4]
        last = metrics.get((st, seed, rs[-1][2]), {})
        out["wasted"].setdefault(st, {})[seed] = last.get("wasted_total", 0) / rs[-1][3]
    return out


FIGURE_ARMS = ("random:off", "margin", "badge", "ldm-s", "jacobian:off", "jacobian:class-floor", "jacobian")


GAP_ARMS = ("jacobian", "jacobian:class-floor", "jacobian:off", "badge:share-floor", "ldm-s:share-floor")


def _open_figures(result: dict, curves: dict, docs: Path, tag: str = "", gap_arms=None) -> None:
    """``open-pools-curves.png``: per pool, mean test accuracy against labels sent for
    :data:`FIGURE_ARMS`; ``open-pools-gap.png``: per pool, each of :data:`GAP_ARMS` minus the best of
    margin, BADGE and LDM-S (paired mean and 95% interval), the target line at −0.005. With
    ``gap_arms`` (names), the gap figure alone, for those arms."""
    from jacal._internal.plotting import pyplot, save_png

    plt = pyplot()
    pools = [p for p in result if result[p]["jacobian"]]
    if not pools:
        return
    if gap_arms:
        _gap_figure(result, pools, [st for st in gap_arms if any(st in result[p]["arms"] for p in pools)],
                    docs / f"open-pools-gap{tag}.png")
        return
    cols = min(4, len(pools))
    rows_ = -(-len(pools) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.4 * rows_), squeeze=False)
    for ax, pool in zip(axes.flat, pools):
        for i, st in enumerate(FIGURE_ARMS):
            if st not in curves[pool]:
                continue
            seeds = curves[pool][st]
            ns = next(iter(seeds.values()))[0]
            acc = np.mean([c[1] for c in seeds.values()], axis=0)
            jac = st.startswith("jacobian")
            ax.plot(ns, acc, ls="-" if jac else "--", lw=2.2 if jac else 1.2, color=f"C{i}", label=st)
        ax.set_title(pool, fontsize=10)
        ax.set_xlabel("labels sent")
        ax.set_ylabel("test accuracy")
    for ax in list(axes.flat)[len(pools):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Open pools: mean over {len(next(iter(next(iter(curves.values())).values())))} seeds", fontsize=11)
    fig.tight_layout()
    save_png(fig, docs / f"open-pools-curves{tag}.png")
    plt.close(fig)
    _gap_figure(result, pools, [st for st in GAP_ARMS if any(st in result[p]["arms"] for p in pools)],
                docs / f"open-pools-gap{tag}.png")


def _gap_figure(result: dict, pools: list, arms: list, path: Path) -> None:
    from jacal._internal.plotting import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 4.2))
    width = 0.8 / max(1, len(arms))
    for j, st in enumerate(arms):
        xs, ys, es = [], [], []
        for i, pool in enumerate(pools):
            gap = result[pool]["arms"].get(st, {}).get("vs_best")
            if gap and gap.get("n", 0) >= 2:
                xs.append(i + (j - (len(arms) - 1) / 2) * width)
                ys.append(gap["mean"])
                es.append(gap["ci95"])
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=st, color=f"C{j}")
    ax.axhline(-0.005, color="0.3", ls=":", lw=1, label="target: best − 0.005")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(range(len(pools)), pools, rotation=20, fontsize=8)
    ax.set_ylabel("AULC − best of margin, BADGE, LDM-S")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def open_report(args: argparse.Namespace) -> None:
    """Tables of the open-pool protocols (``open-*``, or ``pilot-open-*`` with ``--pilot``): per pool
    and arm AULC, final accuracy, share wasted, paired differences (t and Wilcoxon p) against random,
    against the same strategy without the layer, and jacobian's against the best of margin, badge and
    LDM-S; with ``--docs``, the figures for the seed range (:func:`_open_figures`) and the JSON. JSON on
    stdout, markdown to OUT/open-pools.md."""
    outs = [Path(o) for o in (args.out or ["runs/al"])]
    out = outs[0]
    prefix = "pilot-open-" if args.pilot else "open-"
    result, lines, curves = {}, [], {}
    seeds, tag = None, ""
    if args.seed_range:
        a, b = (int(v) for v in args.seed_range.split(":"))
        seeds = set(range(a, b))
    tag = "" if seeds is None else f"-seeds-{min(seeds)}-{max(seeds)}"
    if args.tag:
        tag = f"-{args.tag}{tag}"
    gap_arms = tuple(args.gap_arms.split(",")) if args.gap_arms else None

    def cell(d):
        if not d or d["n"] < 2:
            return "–"
        return f"{d['mean']:+.4f} ± {d['ci95']:.4f} (t {d['p_t']:.2g}, W {d['p_wilcoxon']:.2g})"

    for name in (n for n in PROTOCOLS if n.startswith(prefix)):
        found = [o for o in outs if (o / name / "loop.sqlite").exists()]
        if not found:
            continue
        cfg = PROTOCOLS[name]
        stored = found[0] / name / "summary.json"  # the run's own rounds (a smaller experiment: --rounds)
        if stored.exists():
            rounds = json.loads(stored.read_text()).get("config", {}).get("rounds", cfg.rounds)
            cfg = dataclasses.replace(cfg, rounds=int(rounds))
        nums = {"aulc": {}, "wasted": {}, "final": {}, "curve": {}}
        for o in found:  # runs of one protocol split over directories (arms added later): the same seeds
            part = open_pool_numbers(o / name, cfg, arms=True if len(outs) > 1 else None, seeds=seeds)
            for key in nums:
                for st, v in part[key].items():
                    nums[key].setdefault(st, {}).update(v)
        complete = {st for st, v in nums["aulc"].items() if len(v) == (cfg.seeds if seeds is None else len(seeds))}
        nums = {key: {st: v for st, v in d.items() if st in complete} for key, d in nums.items()}
        curves[name] = nums["curve"]
        if args.pilot:  # the pilot ran where the plain names were the weight layer (PILOT_ARMS)
            nums = {key: {(f"{st}:weight" if st in LAYER_BASES else st): v for st, v in d.items()}
                    for key, d in nums.items()}
            nums = {key: {("random" if st == "random:weight" else st): v for st, v in d.items()} for key, d in nums.items()}
        a, w = nums["aulc"], nums["wasted"]
        ref = "random" if "random" in a else "random:off"
        if ref not in a:
            continue
        strong = [s for s in STRONG if s in a]
        best = max(strong, key=lambda s: np.mean(list(a[s].values())), default=None)
        table = {}
        for st in sorted(a, key=lambda s: -np.mean(list(a[s].values()))):
            base = st.split(":")[0]
            off = f"{base}:off"
            table[st] = {"seeds": len(a[st]), "aulc": float(np.mean(list(a[st].values()))),
                         "final_accuracy": float(np.mean(list(nums["final"][st].values()))),
                         "wasted_share": float(np.mean(list(w[st].values()))),
                         "vs_random": _pair(a[st], a[ref]) if st != ref else None,
                         "wasted_vs_random": _pair(w[st], w[ref]) if st != ref else None,
                         "vs_off": _pair(a[st], a[off]) if off and ":" not in st and off in a else None,
                         "vs_best": _pair(a[st], a[best]) if best and st != best else None}
        verdict = None
        # the random is the plain draw ("random:off": it knows nothing of the answers); the
        # layer's own random is reported beside it
        plain = "random:off" if "random:off" in a else "random"
        if "jacobian" in a and best:
            j = table["jacobian"]
            verdict = {"best_baseline": best, "vs_best": _pair(a["jacobian"], a[best]),
                       "aulc_target_met": bool(j["aulc"] >= table[best]["aulc"] - 0.005),
                       "random_reference": plain,
                       "wasted_target_met": bool(j["wasted_share"] <= table[plain]["wasted_share"] + 1e-9),
                       "wasted_vs_plain_random": _pair(w["jacobian"], w[plain]) if plain != "random" else None}
            every = [s_ for s_ in a if s_.split(":")[0] in STRONG]  # with or without the layer
            best_any = max(every, key=lambda s_: table[s_]["aulc"])
            verdict.update(best_any=best_any, vs_best_any=_pair(a["jacobian"], a[best_any]),
                           aulc_target_met_any=bool(j["aulc"] >= table[best_any]["aulc"] - 0.005))
            if "margin" in a:
                gj = _pair(a["jacobian"], a[plain])["mean"]
                gm = _pair(a["margin"], a[plain])["mean"]
                verdict["gain_over_random"] = {"jacobian": gj, "margin": gm}
                verdict["gain_target_met"] = bool(gj >= gm)
        result[name] = {"config": {"scenario": cfg.scenario, "params": dict(cfg.scenario_params), "seeds": cfg.seeds,
                                   "rounds": cfg.rounds, "pool_size": cfg.pool_size}, "arms": table, "jacobian": verdict}
        lines += [f"### {name}: {cfg.scenario} {dict(cfg.scenario_params)}", "",
                  "| arm | seeds | AULC | final acc. | wasted | − random: AULC | − random: wasted | layer − no layer: AULC |",
                  "|---|---|---|---|---|---|---|---|"]
        for st, t in table.items():
            lines.append(f"| {st} | {t['seeds']} | {t['aulc']:.4f} | {t['final_accuracy']:.4f} | {t['wasted_share']:.1%} | "
                         f"{cell(t['vs_random'])} | {cell(t['wasted_vs_random'])} | {cell(t['vs_off'])} |")
        if verdict:
            lines += ["", f"jacobian − {best} (the best of margin, badge, ldm-s, with the layer): {cell(verdict['vs_best'])}: "
                          f"AULC target (>= best − 0.005) {'met' if verdict['aulc_target_met'] else 'MISSED'}; "
                          f"wasted share {table['jacobian']['wasted_share']:.1%} against {plain}'s "
                          f"{table[plain]['wasted_share']:.1%}: target {'met' if verdict['wasted_target_met'] else 'MISSED'}"
                          + (f"; gain over {plain} {verdict['gain_over_random']['jacobian']:+.4f} against margin's "
                             f"{verdict['gain_over_random']['margin']:+.4f}" if "gain_over_random" in verdict else ""),
                      "", f"jacobian − {verdict['best_any']} (the best of them with or without the layer): "
                          f"{cell(verdict['vs_best_any'])}: {'met' if verdict['aulc_target_met_any'] else 'MISSED'}"]
        lines.append("")
    pools = list(result)
    arms = sorted({st for n in pools for st in result[n]["arms"]},
                  key=lambda st: (st.split(":")[0] not in LAYER_BASES, st.split(":")[0], ":" in st, st))
    head = ["## AULC (share of labels wasted) per pool, mean over seeds", "",
            "| arm | " + " | ".join(pools) + " |", "|---" * (len(pools) + 1) + "|"]
    for st in arms:
        head.append(f"| {st} | " + " | ".join(
            (f"{result[n]['arms'][st]['aulc']:.4f} ({result[n]['arms'][st]['wasted_share']:.0%})"
             if st in result[n]["arms"] else "–") for n in pools) + " |")
    targets = ["## jacobian against the targets (paired over seeds: mean ± 95% CI, t-test p, Wilcoxon p)", "",
               "| pool | jacobian AULC | best of margin, badge, ldm-s (layer) | jacobian − it | ≥ it − 0.005 | "
               "best with or without the layer | jacobian − it | jacobian wasted | random:off wasted | ≤ | "
               "gain over random:off: jacobian / margin | ≥ |", "|---" * 12 + "|"]
    for n in pools:
        v, t = result[n]["jacobian"], result[n]["arms"]
        if not v:
            continue
        yes = {True: "yes", False: "**no**"}
        g = v.get("gain_over_random", {})
        targets.append(
            f"| {n} | {t['jacobian']['aulc']:.4f} | {v['best_baseline']} {t[v['best_baseline']]['aulc']:.4f} | "
            f"{cell(v['vs_best'])} | {yes[v['aulc_target_met']]} | {v['best_any']} {t[v['best_any']]['aulc']:.4f} | "
            f"{cell(v['vs_best_any'])} | {t['jacobian']['wasted_share']:.1%} | "
            f"{t[v['random_reference']]['wasted_share']:.1%} | {yes[v['wasted_target_met']]} | "
            + (f"{g['jacobian']:+.4f} / {g['margin']:+.4f} | {yes[v['gain_target_met']]} |" if g else "– | – |"))
    lines = head + [""] + targets + [""] + lines
    if args.docs is not None and not args.pilot and curves:
        args.docs.mkdir(parents=True, exist_ok=True)
        _open_figures(result, curves, args.docs, tag, gap_arms)
    (out / ("open-pools-pilot.md" if args.pilot else f"open-pools{tag}.md")).write_text("\n".join(lines) + "\n")
    if args.docs is not None:
        (args.docs / ("results-pilot.json" if args.pilot else f"results{tag}.json")).write_text(
            json.dumps(result, indent=1, default=float))
    print(json.dumps(result, indent=1, default=float))


def open_discovery(args: argparse.Namespace) -> None:
    """Class discovery on open pools: per run (``LABEL=DIR:ARM``) and pool, the mean number of task
    classes with no labeled item after each round (from the stored ``labels_per_class``), as JSON on
    stdout and, with ``--docs``, a figure ``open-pools-discovery.png``."""
    import sqlite3

    runs = []
    for spec in args.run:
        label, _, rest = spec.partition("=")
        # arm names hold colons too (jacobian:off): the directory ends at the first colon that ends a directory
        cut = next((i for i, ch in enumerate(rest) if ch == ":" and Path(rest[:i]).is_dir()), -1)
        where, arm = (rest[:cut], rest[cut + 1:]) if cut >= 0 else ("", "")
        if not (label and where and arm):
            raise SystemExit(f"--run: expected LABEL=DIR:ARM with DIR an existing directory, got {spec!r}")
        runs.append((label, Path(where), arm))
    result = {}
    for pool in args.pools.split(","):
        for label, where, arm in runs:
            db = where / pool / "loop.sqlite"
            if not db.exists():
                raise SystemExit(f"--run {label}: no {db}")
            with sqlite3.connect(db) as con:
                rows = con.execute("SELECT seed, round, metrics FROM round_metrics WHERE strategy = ? ORDER BY seed, round",
                                   (arm,)).fetchall()
            by_round = {}
            for seed, rnd, metrics in rows:
                if args.seed_range is None or seed in range(*(int(v) for v in args.seed_range.split(":"))):
                    counts = np.asarray(json.loads(metrics)["labels_per_class"])
                    by_round.setdefault(rnd, []).append(int((counts == 0).sum()))
            result.setdefault(pool, {})[label] = {"seeds": len(by_round.get(0, [])),
                                                   "unlabeled_classes": [float(np.mean(by_round[r])) for r in sorted(by_round)]}
    if args.docs is not None:
        from jacal._internal.plotting import pyplot, save_png

        plt = pyplot()
        pools = list(result)
        fig, axes = plt.subplots(1, len(pools), figsize=(4.6 * len(pools), 3.4), squeeze=False)
        for ax, pool in zip(axes.flat, pools):
            for i, (label, v) in enumerate(result[pool].items()):
                ax.plot(range(len(v["unlabeled_classes"])), v["unlabeled_classes"], marker="o", ms=3, color=f"C{i}", label=label)
            ax.set_title(pool, fontsize=10)
            ax.set_xlabel("round")
            ax.set_ylabel("classes with no labeled item (mean)")
        axes.flat[0].legend(fontsize=8)
        fig.tight_layout()
        args.docs.mkdir(parents=True, exist_ok=True)
        save_png(fig, args.docs / "open-pools-discovery.png")
        plt.close(fig)
    print(json.dumps(result, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run (or continue) one protocol")
    r.add_argument("protocol", choices=sorted(PROTOCOLS))
    r.add_argument("--seeds", type=int, default=None, help="override the protocol's seed count (5)")
    r.add_argument("--strategies", default=None, help="comma-separated subset")
    r.add_argument("--rounds", type=int, default=None, help="override the protocol's rounds (a smaller experiment)")
    r.add_argument("--max-epochs", type=int, default=None, help="override the epoch cap per round")
    r.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    r.add_argument("--device", default="auto")
    r.add_argument("--data-root", type=Path, default=SHARED_MNIST)
    r.add_argument("--out", default="runs/al")
    p = sub.add_parser("report", help="collect finished protocols into OUT/table.md and JSON")
    p.add_argument("--out", default="runs/al")
    p.add_argument("--docs", type=Path, default=None,
                   help="also copy each protocol's curves.png and the table here (docs/jacobian_acquisition)")
    o = sub.add_parser("open-report", help="the open-pool tables (docs/benchmarks/open-pools.md) as markdown and JSON")
    o.add_argument("--out", action="append", default=None,
                   help="a run directory (runs/al if none); repeat it to merge arms run into several directories")
    o.add_argument("--pilot", action="store_true", help="the pilot's protocols (pilot-open-*)")
    o.add_argument("--seed-range", default=None, metavar="A:B",
                   help="report seeds A..B-1 (runs made with --seeds B), e.g. 5:10 for seeds held out of a choice")
    o.add_argument("--docs", type=Path, default=None, help="write the figures and the JSON here")
    o.add_argument("--gap-arms", default=None, metavar="A,B,...",
                   help="the gap figure alone, for these arms (default: the curves and the gap of GAP_ARMS)")
    o.add_argument("--tag", default=None, help="name the figures and the JSON open-pools-gap-TAG-seeds-A-B.png, ...")
    d = sub.add_parser("open-discovery", help="classes with no labeled item, round by round, per run and open pool")
    d.add_argument("--run", action="append", required=True, metavar="LABEL=DIR:ARM",
                   help="a label for the figure, a run directory and the arm in it; repeat it")
    d.add_argument("--pools", default="open-near-70,open-junk-70", help="comma-separated open protocols")
    d.add_argument("--seed-range", default=None, metavar="A:B", help="seeds A..B-1 only")
    d.add_argument("--docs", type=Path, default=None, help="write open-pools-discovery.png here")
    args = ap.parse_args()
    {"run": run, "report": report, "open-report": open_report, "open-discovery": open_discovery}[args.cmd](args)


if __name__ == "__main__":
    main()
