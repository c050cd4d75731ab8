"""The C2 experiment: where along ellipses a trained ReLU net is sensitive.

The paper's §4.1 (Figs. 2-3) trains piecewise-linear nets to near-zero training loss and follows
three kinds of ellipse: a *random* one (far from the data), one through three training points of
*different* classes and one through three of the *same* class. jacal runs this as its own small
experiment in every preset (sizes in :mod:`jacal.replication.config`):

* ``c2_seeds`` ReLU models of each architecture in ``c2_architectures``, kept when their final
  training loss is ≤ ``c2_max_train_loss``;
* ``c2_ellipses`` fresh ellipses of each kind per dataset (random: as many per construction of
  ``random_constructions``), ``ellipse_points`` points each, shared by the models;
* per model and ellipse: ‖J(x)‖_F at every :data:`JACOBIAN_STRIDE`-th point (the anchors among
  them; the Jacobian costs about as much as training, transitions far less), transitions per step counted exactly
  (:func:`jacal.sensitivity.transitions.exact_transitions_affine`) and by sampling (the paper's
  count, kept to show the undercount), and the ellipse's length in input units.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch

from jacal.data import Splits
from jacal.population import ModelConfig, PopulationMLP, population_jacobian_norm, population_transitions
from jacal.replication.config import PlannedModel, Preset
from jacal.sensitivity.trajectories import closed_length, ellipse, random_ellipse
from jacal.sensitivity.transitions import exact_transitions_affine

__all__ = ["C2Ellipse", "plan_c2_models", "c2_ellipses", "measure_c2", "is_c2_model", "anchor_positions",
           "angular_distance_to_anchors", "jacobian_stride", "DATA_KINDS", "JACOBIAN_STRIDE"]

DATA_KINDS = ("different-class", "same-class")
JACOBIAN_STRIDE = 4  # ‖J‖ at every 4th sample (k/4 per ellipse, anchors included) when k is a multiple of 24
_TAG = "-c2-"


@dataclass(frozen=True)
class C2Ellipse:
    """One ellipse of the C2 experiment: ``kind`` is ``"random"`` (with its ``construction``) or one
    of :data:`DATA_KINDS` (construction ``""``); ``points`` ``(k, D)`` float64."""

    kind: str
    construction: str
    index: int
    points: torch.Tensor
    length: float


def is_c2_model(model_id: str) -> bool:
    """True for the C2 experiment's models (kept out of the sweep's population claims)."""
    return _TAG in model_id


def plan_c2_models(preset: Preset, dataset: str, seed: int) -> List[PlannedModel]:
    """The C2 models of ``dataset``: ``c2_seeds`` ReLU models per architecture (deterministic)."""
    out = []
    for width, depth in preset.c2_architectures:
        for s in range(preset.c2_seeds):
            cfg = ModelConfig(width=width, depth=depth, activation="relu", optimizer="adam", lr=preset.c2_lr,
                              batch_size=preset.c2_batch_size, steps=preset.c2_steps, weight_variance=2.0,
                              seed=seed * 1_000_000 + 500_000 + 1_000 * width + 100 * depth + s)
            out.append(PlannedModel(f"{dataset}{_TAG}w{width}d{depth}-s{s}", dataset, cfg))
    return out


def jacobian_stride(k: int) -> int:
    """Every how many samples ‖J‖ is measured: :data:`JACOBIAN_STRIDE`, or less so the anchors
    (at k/6, k/2, 5k/6) stay among the measured samples."""
    for s in range(JACOBIAN_STRIDE, 0, -1):
        if k % (6 * s) == 0:
            return s
    return 1


def anchor_positions(k: int) -> List[int]:
    """Indices of the anchors among the k samples (angles π/3, π, 5π/3)."""
    return [k // 6, k // 2, 5 * k // 6]


def angular_distance_to_anchors(k: int) -> np.ndarray:
    """``(k,)``: angular distance (radians) from the midpoint of step j (sample j → j+1) to the
    nearest anchor angle, the x axis of the paper's V-shaped transition profile (C2d)."""
    mid = 2 * math.pi * (np.arange(k) + 0.5) / k
    anchors = np.array([math.pi / 3, math.pi, 5 * math.pi / 3])
    d = np.abs(mid[:, None] - anchors[None, :])
    return np.minimum(d, 2 * math.pi - d).min(axis=1)


def c2_ellipses(data: Splits, preset: Preset, seed: int) -> List[C2Ellipse]:
    """``c2_ellipses`` fresh ellipses of each kind (seeded; independent of the sweep's ellipses)."""
    k = preset.ellipse_points
    if k % 6:
        raise ValueError(f"Expected `ellipse_points` to be a multiple of 6 (the anchors are samples), got {k}.")
    rng = np.random.default_rng([seed, 22])
    x = data.x_train
    flat = x.reshape(len(x), -1)
    y = data.y_train.numpy()
    classes = np.unique(y)
    out: List[C2Ellipse] = []

    def add(kind, construction, i, pts):
        pts = pts.reshape(k, -1).double()
        out.append(C2Ellipse(kind, construction, i, pts, closed_length(pts)))

    for c_i, construction in enumerate(preset.random_constructions):
        for i in range(preset.c2_ellipses):
            add("random", construction, i, random_ellipse(flat, k, seed=seed * 10_000 + 1_000 * c_i + i,
                                                          construction=construction))
    for i in range(preset.c2_ellipses):
        cls = rng.choice(classes, 3, replace=False)
        idx = [int(rng.choice(np.flatnonzero(y == c))) for c in cls]
        add("different-class", "", i, ellipse(*(flat[j] for j in idx), k))
    for i in range(preset.c2_ellipses):
        c = int(rng.choice(classes))
        idx = rng.choice(np.flatnonzero(y == c), 3, replace=False)
        add("same-class", "", i, ellipse(*(flat[int(j)] for j in idx), k))
    return out


@torch.no_grad()
def measure_c2(pop: PopulationMLP, members: Sequence[PlannedModel], results: Sequence[dict],
               ellipses: Sequence[C2Ellipse]) -> Tuple[List[dict], List[tuple], List[tuple]]:
    """Store rows ``(models, points, trajectories)`` for a trained group of C2 models.

    Each trajectory row: ``(model_id, kind, construction, index, ‖J‖ at every JACOBIAN_STRIDE-th point (k/stride,), exact
    transitions per step (k,), sampled transitions per step (k,), length, anchor positions)``
    (arrays as JSON). Diverged members get a model row (NaN metrics) and no trajectories.
    """
    models, ok = model_rows(pop, members, results)
    if not ellipses or not bool(ok.any()):
        return models, [], []
    if not bool(ok.all()):  # measure a zeroed copy of diverged members; their rows are dropped below
        for t in pop.parameters:
            t[~ok] = 0.0
    dev = pop.weights[0].device
    k = ellipses[0].points.shape[0]
    z = torch.stack([e.points for e in ellipses])  # (E, k, D) float64
    zj = z[:, ::jacobian_stride(k)]
    jac = population_jacobian_norm(pop, zj.reshape(-1, z.shape[-1]).float()).reshape(pop.n_models, len(ellipses), -1)
    sampled = torch.stack([population_transitions(pop, e.points.float()) for e in ellipses], 1)  # (P, E, k)
    anchors = json.dumps(anchor_positions(k))
    rows = []
    for p, pm in enumerate(members):
        if not bool(ok[p]):
            continue
        weights = [w[p].to(dev) for w in pop.weights]
        biases = [b[p, 0].to(dev) for b in pop.biases]
        exact = exact_transitions_affine(weights, biases, pop._act, z.to(dev))  # (E, k)
        for e_i, e in enumerate(ellipses):
            rows.append((pm.model_id, e.kind, e.construction, e.index, json.dumps([round(float(v), 6) for v in jac[p, e_i]]),
                         json.dumps(exact[e_i].tolist()), json.dumps(sampled[p, e_i].tolist()), e.length, anchors))
    return models, [], rows


def finite_params(pop: PopulationMLP) -> torch.Tensor:
    """``(P,)`` True where every parameter of the member is finite."""
    ok = torch.ones(pop.n_models, dtype=torch.bool, device=pop.weights[0].device)
    for t in pop.parameters:
        ok &= torch.isfinite(t.reshape(pop.n_models, -1)).all(dim=1)
    return ok


def model_rows(pop: PopulationMLP, members: Sequence[PlannedModel], results: Sequence[dict]) -> Tuple[List[dict], torch.Tensor]:
    """Model-table rows of C2 models (their sweep metrics are not measured: NaN)."""
    ok = finite_params(pop)
    nan = float("nan")
    rows = []
    for p, (pm, res) in enumerate(zip(members, results)):
        cfg = pm.config
        good = bool(ok[p])
        rows.append({
            "model_id": pm.model_id, "dataset": pm.dataset, "group_key": json.dumps(list(pm.group_key())),
            "config": json.dumps(cfg.to_dict(), sort_keys=True), "seed": cfg.seed, "width": cfg.width,
            "depth": cfg.depth, "activation": cfg.activation, "optimizer": cfg.optimizer, "lr": cfg.lr,
            "batch_size": cfg.batch_size, "steps": res.get("steps", cfg.steps), "weight_variance": cfg.weight_variance,
            "augment": int(cfg.augment), "random_labels": int(cfg.random_labels),
            **{key: (res[key] if good else nan) for key in ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "gap")},
            "mean_jacobian": nan, "transitions": nan, "n_params": pop.n_params(), "n_neurons": pop.n_neurons(),
            "wall_time_s": res["wall_time_s"],
        })
    return rows, ok
