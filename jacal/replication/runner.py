"""Run a replication sweep: plan, train group by group, measure, store, then report."""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from jacal._internal.io import ensure_out_dir
from jacal._internal.store import resumable_store, store_errors
from jacal._internal.validation import JacalError, check_choice
from jacal.data import DATASETS, Splits, load_dataset
from jacal.models._utils import resolve_device
from jacal.population import (PopulationMLP, population_jacobian_norm, population_transitions, train_population)
from jacal.replication.c2 import C2Ellipse, c2_ellipses, finite_params, measure_c2, plan_c2_models
from jacal.replication.config import (PRESETS, SWEEP_VERSION, PlannedModel, Preset, plan_models, plan_pairs,
                                      sweep_signature)
from jacal.replication.store import SCHEMA, ResultStore, stored_sweep_version
from jacal.sensitivity.trajectories import ellipse

__all__ = ["run_replication", "Callbacks", "prepare_dataset", "DatasetContext"]


@dataclass
class Callbacks:
    """Progress hooks (all optional)."""

    on_plan: Callable[[int, int], Any] = lambda total, done: None
    on_group_start: Callable[[str, int], Any] = lambda description, steps: None
    on_step: Callable[[int, int], Any] = lambda step, total: None
    on_group_done: Callable[[int], Any] = lambda n_models: None
    on_phase: Callable[[str], Any] = lambda text: None


@dataclass
class DatasetContext:
    """Fixed evaluation material of one dataset, shared by all its models."""

    data: Splits
    x_jac: torch.Tensor          # (N_jac, ...) test points for the model-level Jacobian norm
    y_jac: torch.Tensor
    ellipses: List[torch.Tensor]  # model-level transitions: ellipses through test points
    c2: List[C2Ellipse] = field(default_factory=list)  # the C2 experiment's ellipses


def prepare_dataset(data: Splits, preset: Preset, seed: int) -> DatasetContext:
    """Choose the fixed test subset and trajectories (seeded; documented in the report)."""
    rng = np.random.default_rng([seed, 17])
    n_test = len(data.x_test)
    idx = np.sort(rng.permutation(n_test)[: min(preset.jacobian_points, n_test)])
    x_jac, y_jac = data.x_test[idx], data.y_test[idx]
    k = preset.ellipse_points
    ellipses = []
    for _ in range(preset.n_ellipses):
        a = rng.choice(len(x_jac), 3, replace=False)
        ellipses.append(ellipse(x_jac[a[0]], x_jac[a[1]], x_jac[a[2]], k).float())
    c2 = c2_ellipses(data, preset, seed)
    return DatasetContext(data, x_jac, y_jac, ellipses, c2)


@torch.no_grad()
def measure_group(pop: PopulationMLP, members: Sequence[PlannedModel], results: Sequence[dict], ctx: DatasetContext,
                  preset: Preset) -> Tuple[List[dict], List[tuple], List[tuple]]:
    """Sensitivity measurements of a trained sweep group → rows for the store (the C2 experiment's
    trajectories come from its own models, :func:`jacal.replication.c2.measure_c2`)."""
    ok = finite_params(pop)
    if not bool(ok.all()):  # diverged models: measure a zeroed copy, report NaN
        for t in pop.parameters:
            t[~ok] = 0.0
    nan = float("nan")
    norms = population_jacobian_norm(pop, ctx.x_jac)  # (P, N)
    s = min(preset.stored_points, len(ctx.x_jac))
    dev = pop.weights[0].device
    z = pop.forward(ctx.x_jac[:s].reshape(s, -1).to(dev))
    y = ctx.y_jac[:s].to(dev)
    losses = F.cross_entropy(z.reshape(-1, z.shape[-1]), y.repeat(pop.n_models), reduction="none").reshape(pop.n_models, s).cpu()
    correct = (z.argmax(-1) == y).cpu()
    trans = torch.stack([population_transitions(pop, e).sum(1) for e in ctx.ellipses], 1).double().mean(1)  # (P,)
    model_rows, point_rows = [], []
    for p, (pm, res) in enumerate(zip(members, results)):
        good = bool(ok[p])
        cfg = pm.config
        row = {
            "model_id": pm.model_id, "dataset": pm.dataset, "group_key": json.dumps(list(pm.group_key())),
            "config": json.dumps(cfg.to_dict(), sort_keys=True), "seed": cfg.seed, "width": cfg.width,
            "depth": cfg.depth, "activation": cfg.activation, "optimizer": cfg.optimizer, "lr": cfg.lr,
            "batch_size": cfg.batch_size, "steps": res.get("steps", cfg.steps), "weight_variance": cfg.weight_variance,
            "augment": int(cfg.augment), "random_labels": int(cfg.random_labels),
            **{k: (res[k] if good else nan) for k in ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "gap")},
            "mean_jacobian": float(norms[p].mean()) if good else nan,
            "transitions": float(trans[p]) if good else nan,
            "n_params": pop.n_params(), "n_neurons": pop.n_neurons(), "wall_time_s": res["wall_time_s"],
        }
        model_rows.append(row)
        if good:
            point_rows += [(pm.model_id, i, float(norms[p, i]), float(losses[p, i]), int(correct[p, i])) for i in range(s)]
    return model_rows, point_rows, []


def resolve_preset(preset: str, overrides: Optional[Dict[str, Any]] = None, datasets: Optional[Sequence[str]] = None) -> Preset:
    """A named preset with optional overrides (e.g. ``n_groups``, ``steps``) and datasets."""
    check_choice("preset", preset, PRESETS)
    p = PRESETS[preset]
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    if datasets:
        for d in datasets:
            check_choice("dataset", d, DATASETS)
        changes["datasets"] = tuple(datasets)
    return replace(p, **changes) if changes else p


def _group_job(members: List[PlannedModel], ctx: DatasetContext, p: Preset, device: str,
               progress: Optional[Callable[[int, int], Any]] = None, c2: bool = False
               ) -> Tuple[List[dict], List[tuple], List[tuple]]:
    """One unit of work: train a group as a population and measure it (runs locally or as a Ray task);
    ``c2``: the group belongs to the C2 experiment (measured on the C2 ellipses)."""
    pop, results = train_population([pm.config for pm in members], ctx.data, device=torch.device(device),
                                    hflip=members[0].dataset.startswith("cifar"), progress=progress)
    if c2:
        return measure_c2(pop, members, results, ctx.c2)
    return measure_group(pop, members, results, ctx, p)


def _train_groups(planned: List[PlannedModel], store: ResultStore, contexts: Dict[str, Any],
                  p: Preset, dev: torch.device, cb: Callbacks, backend, gpus_per_group: float, c2: bool = False) -> None:
    """Train and measure every group of ``planned`` that the store does not hold yet."""
    groups: "OrderedDict[tuple, List[PlannedModel]]" = OrderedDict()
    for pm in planned:
        groups.setdefault(pm.group_key(), []).append(pm)
    done = store.done_ids()
    cb.on_plan(len(planned), sum(pm.model_id in done for pm in planned))
    todo = [groups[k] for k in sorted(groups, key=lambda k: json.dumps(k))
            if not all(pm.model_id in done for pm in groups[k])]
    if backend.name == "local":
        for members in todo:
            c = members[0].config
            cb.on_group_start(f"{members[0].dataset} {c.depth}×{c.width} {c.activation} {c.optimizer} "
                              f"bs={c.batch_size or 'full'} steps={c.steps} ({len(members)} models)", c.steps)
            store.write_group(*_group_job(members, contexts[members[0].dataset], p, str(dev), cb.on_step, c2))
            cb.on_group_done(len(members))
        return
    worker_device = "cuda" if gpus_per_group > 0 else "cpu"
    jobs = [(members, contexts[members[0].dataset], p, worker_device, None, c2) for members in todo]
    cb.on_group_start(f"{len(todo)} groups on Ray", len(todo))
    for n_done, (i, rows) in enumerate(backend.map_unordered(_group_job, jobs, num_gpus=gpus_per_group), 1):
        store.write_group(*rows)  # the driver writes each group once, as it arrives
        cb.on_step(n_done, len(todo))
        cb.on_group_done(len(todo[i]))


def run_replication(out: Path, *, preset: str = "smoke", datasets: Optional[Sequence[str]] = None, seed: int = 0,
                    device: str = "auto", data_root: Optional[Path] = None, download: bool = False,
                    resume: bool = False, overrides: Optional[Dict[str, Any]] = None,
                    callbacks: Optional[Callbacks] = None, write_report: bool = True, backend: str = "local",
                    address: Optional[str] = None, gpus_per_group: Optional[float] = None) -> Dict[str, Any]:
    """Train and measure a sweep into ``out/results.sqlite``; then write the report.

    ``backend="ray"`` runs each group as a Ray task (``address``: ``None`` starts a local instance,
    ``"auto"`` / ``"ray://host:port"`` joins a cluster; ``gpus_per_group``: the task's ``num_gpus``,
    default 1 when ``device`` resolves to CUDA, else 0). Results reach ``results.sqlite`` on the driver
    exactly as with the local backend.

    Returns:
        The report dict (also written to ``out/report.json``), or ``{}`` with ``write_report=False``.
    """
    cb = callbacks or Callbacks()
    out = Path(out)
    p = resolve_preset(preset, overrides, datasets)
    dev = resolve_device(device)
    ensure_out_dir(out)
    signature = sweep_signature(p, p.datasets, seed)
    # one run per folder (released on any exit, SIGKILL included); a damaged or foreign store is refused
    with resumable_store(out, "replicate", "results.sqlite", SCHEMA, resume) as (db, stamp):
        version = stored_sweep_version(db) if db.exists() else None
        if version is not None and version != SWEEP_VERSION:
            raise JacalError(f"{db} holds a sweep-version-{version} run; this jacal runs sweep version {SWEEP_VERSION} "
                             f"(the C2 and C6 measurements changed), so it cannot resume it: choose another `out`")
        # load every dataset before training anything, so a missing one fails fast
        contexts = OrderedDict()
        for name in p.datasets:
            data = load_dataset(name, root=data_root, download=download, seed=seed, n_train=p.n_train,
                                n_test=p.n_test, clamp=True)
            contexts[name] = prepare_dataset(data, p, seed)
        from jacal.backends import get_backend

        if gpus_per_group is None:
            gpus_per_group = 1.0 if dev.type == "cuda" else 0.0
        runner = get_backend(backend, address=address)
        try:
            with store_errors(db):
                return _run(out, db, stamp, p, seed, signature, contexts, dev, cb, runner, gpus_per_group,
                            write_report)
        finally:
            runner.close()


def _run(out, db, stamp, p, seed, signature, contexts, dev, cb, runner, gpus_per_group, write_report):
    shared = {name: runner.put(ctx) for name, ctx in contexts.items()}
    with ResultStore(db, stamp=stamp) as store:
        old = store.get_meta("signature")
        if old is not None and old != json.loads(json.dumps(signature, sort_keys=True)):
            raise JacalError(f"{db} holds a different run (preset, datasets or seed differ); choose another `out`")
        store.set_meta("signature", signature)
        store.set_meta("device", str(dev))
        base: Dict[str, List[PlannedModel]] = {name: plan_models(p, name, seed) for name in p.datasets}
        # phase 1: the base population; phase 2: C3 pairs on the bases that fit
        _train_groups([pm for name in p.datasets for pm in base[name]], store, shared, p, dev, cb, runner, gpus_per_group)
        fitted = {m["model_id"]: m["train_loss"] for m in store.models()  # id → training loss: bases that fit
                  if m["train_accuracy"] is not None and m["train_accuracy"] >= p.fit_threshold}
        variants: List[PlannedModel] = []
        for name in p.datasets:
            planned, pairs = plan_pairs(p, name, base[name], fitted)
            variants += planned
            store.write_pairs([{"pair_id": q.pair_id, "dataset": name, "factor": q.factor, "base_id": q.base_id,
                                "variant_id": q.variant_id} for q in pairs])
        _train_groups(variants, store, shared, p, dev, cb, runner, gpus_per_group)
        # phase 3: the C2 experiment's ReLU models, measured on its fresh ellipses
        c2_models = [pm for name in p.datasets for pm in plan_c2_models(p, name, seed)]
        _train_groups(c2_models, store, shared, p, dev, cb, runner, gpus_per_group, c2=True)
    if not write_report:
        return {}
    from jacal.replication.report import write_report as _write_report

    cb.on_phase("analysing")
    return _write_report(out, p, seed)
