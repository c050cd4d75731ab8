"""Simulated active learning: labeling rounds that compare acquisition strategies honestly.

For every (strategy, seed): start from ``initial`` labeled items (random, seeded; the same for
every strategy at a seed), then repeat ``rounds`` times: train the model on the labeled set
(documented recipe below), evaluate it on the test split, acquire ``k`` items from the remaining
pool with the strategy, reveal their labels. Every finished round is committed to ``loop.sqlite``
(with its labeled set), so ``resume=True`` continues each run at its last finished round.

Training recipe [jacal's choice]: a fresh model per round (or ``warm_start``), Adam (lr 1e-3),
mini-batches of 32, at most ``max_epochs`` epochs with early stopping on a held-out validation
split (``val_size`` items taken from the training set, never labeled, never in the pool):
stop after ``patience`` epochs without a better validation accuracy and keep the best weights.

Before the rounds, the first model (seed 0, round 0) gets the replication suite's per-point check
(claim C4 of Novak et al. 2018): on the test split, Spearman ρ between ‖J(x)‖_F and the loss and the
AUROC of ‖J‖ for detecting errors, so a user sees whether the Jacobian strategy has a basis here.
"""
from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score

from jacal._internal.io import ensure_out_dir
from jacal.models._utils import resolve_device
from jacal._internal.stats import pointwise_sensitivity
from jacal._internal.store import resumable_store, store_errors
from jacal.acquisition import STRATEGIES, acquire
from jacal.acquisition.coldstart import cold_start
from jacal.data import Splits, load_dataset
from jacal.loop.config import BATCH_SIZE, LR, OPTIMIZER, LoopConfig, seed_splits, signature, validate
from jacal.loop.source import load_source
from jacal.loop.store import SCHEMA, LoopStore
from jacal.models import cnn, mlp
from jacal.scenarios import KINDS, OUT_OF_SET, ScenarioPool, build_scenario
from jacal.stopping.measure import STOP_SET_SIZE, stop_set_record
from jacal.sensitivity.jacobian import jacobian_norm
from jacal.training import evaluate, train

__all__ = ["run_loop", "LoopCallbacks", "pointwise_check", "build_model", "train_early_stopping"]


@dataclass
class LoopCallbacks:
    on_start: Callable[[int, int], Any] = lambda total_rounds, done: None
    on_run: Callable[[str, int], Any] = lambda strategy, seed: None
    on_round: Callable[[str, int, int, float], Any] = lambda strategy, seed, rnd, acc: None


def build_model(cfg: LoopConfig, data: Splits, seed: int) -> torch.nn.Module:
    """A fresh model of the config's architecture for ``data``, initialised from ``seed``."""
    if cfg.model == "mlp":
        return mlp(data.input_dim, data.n_classes, width=cfg.width, depth=cfg.depth, dropout=cfg.dropout, seed=seed)
    return cnn(data.input_shape, data.n_classes, seed=seed)


def train_early_stopping(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor,
                         cfg: LoopConfig, seed: int, device: torch.device) -> int:
    """The training recipe (module docstring) on ``x (N, ...)``, ``y (N,)`` with the validation split
    ``xv``, ``yv``: :func:`jacal.train` with early stopping, the data order and the dropout masks
    seeded by ``seed``. The best weights are restored; returns the epochs run."""
    labeled = Splits("labeled", x, y, x[:0], y[:0], n_classes=int(torch.cat([y, yv]).max()) + 1)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout masks
        result = train(model, labeled, optimizer=OPTIMIZER, lr=LR, batch_size=BATCH_SIZE, epochs=cfg.max_epochs,
                       seed=seed, device=device, val=(xv, yv), patience=cfg.patience)
    return int(result.epochs)


def pointwise_check(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device) -> Dict[str, float]:
    """Claim C4 on one model: Spearman ρ(‖J(x)‖, loss(x)) and error-detection AUROC of ‖J‖."""
    norms = jacobian_norm(model, x, device=device).double().numpy()
    with torch.no_grad():
        z = torch.cat([model(x[i:i + 2048].to(device)).cpu() for i in range(0, len(x), 2048)])
    loss = F.cross_entropy(z.double(), y, reduction="none").numpy()
    wrong = (z.argmax(1) != y).numpy()
    r = pointwise_sensitivity(norms, loss, wrong)
    return {"n": int(len(x)), "spearman_rho_jacobian_loss": r["rho"], "p": r["p"], "error_auroc_jacobian": r["auroc"],
            "test_accuracy": float(1 - wrong.mean())}


def round_metrics(sp: ScenarioPool, model: torch.nn.Module, sent: np.ndarray, batch: np.ndarray,
                  device: torch.device) -> Dict[str, Any]:
    """What a round cost and bought beyond accuracy: the share of the batch annotators could not label
    (``wasted_share``, and by kind), the share that repeats an item already sent or earlier in the
    batch (``duplicate_share``), labels per class so far, and balanced accuracy on the test split."""
    y = sp.data.y_train.numpy()
    out: Dict[str, Any] = {}
    if len(batch):
        kinds = sp.kind[batch]
        out["wasted_share"] = float((y[batch] == OUT_OF_SET).mean())
        out["wasted_by_kind"] = {KINDS[c]: int((kinds == c).sum()) for c in np.unique(kinds) if c != 0}
        g = sp.group[batch]
        seen = set(sp.group[sent].tolist())
        dup, mine = 0, set()
        for gi in g.tolist():  # k group ids: a loop over the batch, not the pool
            dup += gi in seen or gi in mine
            mine.add(gi)
        out["duplicate_share"] = dup / len(batch)
    lab = y[sent]
    out["labels_per_class"] = np.bincount(lab[lab >= 0], minlength=sp.data.n_classes).tolist()
    out["wasted_total"] = int((lab == OUT_OF_SET).sum())
    with torch.no_grad():
        z = torch.cat([model(sp.data.x_test[i:i + 2048].to(device)).cpu() for i in range(0, len(sp.data.x_test), 2048)])
    out["balanced_accuracy"] = float(balanced_accuracy_score(sp.data.y_test.numpy(), z.argmax(1).numpy()))
    return out


def _run_one(cfg: LoopConfig, sp: ScenarioPool, strategy: str, seed: int, last: int, labeled: np.ndarray,
             warm_state: Optional[bytes], device: str, want_check: bool,
             commit: Optional[Callable[..., Any]] = None
             ) -> Tuple[List[Tuple[tuple, Optional[bytes], dict]], Optional[dict]]:
    """Rounds ``last + 1 .. rounds`` of one (strategy, seed): a unit of work (local, or a Ray task).

    ``labeled`` holds every item sent to annotators so far; those of them the scenario marks out of
    the label set cost a label and are never trained on (``acquire(..., out_of_set=...)`` hears of
    them). With nothing sent yet (``initial=0``), the first batch is the cold-start pick
    (:func:`jacal.acquisition.coldstart.cold_start`, ``cfg.cold_start``; ``random`` stays random).

    Returns the round rows (with warm-start weights when used, and the round's metrics) and the C4
    check when asked for. ``commit(row, warm_blob, check, metrics)`` is called after each round when
    given (the local backend commits round by round).
    """
    data = sp.data
    dev = torch.device(device)
    y_all = data.y_train.numpy()
    val, pool, _ = seed_splits(data, cfg, seed, sp.labelable, sp.group)
    xv, yv = data.x_train[val], data.y_train[val]
    model = None
    if cfg.warm_start and warm_state is not None:  # continue from the stored weights of the last round
        model = build_model(cfg, data, seed)
        model.load_state_dict(torch.load(io.BytesIO(warm_state), weights_only=True))
    out: List[Tuple[tuple, Optional[bytes], dict]] = []
    check = None
    for rnd in range(last + 1, cfg.rounds + 1):
        if model is None or not cfg.warm_start:
            model = build_model(cfg, data, seed * 1000 + rnd if not cfg.warm_start else seed)
        train_idx = labeled[y_all[labeled] != OUT_OF_SET]
        epochs = 0
        if len(train_idx):
            epochs = train_early_stopping(model, data.x_train[train_idx], data.y_train[train_idx], xv, yv, cfg,
                                          seed * 1000 + rnd, dev)
        model.eval()
        acc, loss = evaluate(model, data.x_test, data.y_test, device=dev)
        round_check = None
        if want_check and rnd == 0 and len(train_idx):
            check = round_check = pointwise_check(model, data.x_test, data.y_test, dev)
        acq_time = math.nan
        new_labeled, batch = labeled, np.zeros(0, dtype=np.int64)
        if rnd < cfg.rounds:
            remaining = np.setdiff1d(pool, labeled)
            t0 = time.perf_counter()
            if len(labeled) == 0:  # a cold start: nothing labeled, no model worth asking
                method = "random" if strategy == "random" else cfg.cold_start
                picks = cold_start(data.x_train[remaining], cfg.k, method=method, seed=seed * 1000 + rnd)
            else:
                wants = STRATEGIES[strategy].uses_labeled
                oos = np.flatnonzero(y_all[labeled] == OUT_OF_SET)
                picks = acquire(model, data.x_train[remaining], cfg.k, strategy=strategy,
                                labeled=data.x_train[labeled] if wants or len(oos) else None,
                                out_of_set=oos if len(oos) else None, seed=seed * 1000 + rnd, device=dev).indices
            acq_time = time.perf_counter() - t0
            batch = remaining[picks]
            new_labeled = np.sort(np.concatenate([labeled, batch]))
        metrics = round_metrics(sp, model, labeled, batch, dev)
        # the stopping criteria's view: the first test items, read without their labels
        metrics["stop_set"] = stop_set_record(model, data.x_test[:STOP_SET_SIZE], dev)
        row = (strategy, seed, rnd, int(len(labeled)), acc, loss, acq_time, epochs, json.dumps(new_labeled.tolist()))
        blob = None
        if cfg.warm_start:
            buf = io.BytesIO()
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buf)
            blob = buf.getvalue()
        out.append((row, blob, metrics))
        if commit is not None:
            commit(row, blob, round_check, metrics)
        labeled = new_labeled
    return out, check


def run_loop(out: Path, cfg: LoopConfig, *, device: str = "auto", data_root: Optional[Path] = None,
             download: bool = False, resume: bool = False, callbacks: Optional[LoopCallbacks] = None,
             backend: str = "local", address: Optional[str] = None) -> Dict[str, Any]:
    """Run (or resume) every (strategy, seed) and write curves.csv, summary.json, curves.png, report.md.

    The items are ``cfg.dataset`` under ``cfg.scenario``, or with ``cfg.source`` a team's own pool and
    annotation export (:mod:`jacal.loop.source`); then ``summary.json`` says under ``"data"`` how many
    exported labels were used and how many were left out, and why. A changed export or pool is a
    different experiment: ``resume`` refuses it.

    ``backend="ray"`` runs each (strategy, seed) as an independent Ray task; its rounds reach
    ``loop.sqlite`` when the task returns (the local backend commits round by round).
    """
    from jacal.loop.report import write_outputs

    cb = callbacks or LoopCallbacks()
    validate(cfg)
    out = Path(out)
    dev = resolve_device(device)
    provenance = None
    if cfg.source is None:
        data = load_dataset(cfg.dataset, root=data_root, download=download, n_test=cfg.n_test, seed=0)
        sp = build_scenario(cfg.scenario, data, dict(cfg.scenario_params), seed=0)
    else:  # a team's own pool and export (jacal.loop.source)
        sp, provenance = load_source(cfg.source, n_test=cfg.n_test, val_size=cfg.val_size,
                                     acquired=cfg.initial + cfg.k * cfg.rounds)
    seed_splits(sp.data, cfg, 0, sp.labelable, sp.group)  # the sizes fit, before anything is written
    ensure_out_dir(out)
    # one run per folder (released on any exit, SIGKILL included); a damaged or foreign store is refused
    with resumable_store(out, "loop", "loop.sqlite", SCHEMA, resume) as (db, stamp):
        with store_errors(db):
            rows, check_value, metrics = _run_all(db, stamp, cfg, sp, dev, cb, backend, address,
                                                  signature(cfg, provenance and provenance["digest"]))
        return write_outputs(out, cfg, rows, check_value, metrics, provenance)


def _run_all(db: Path, stamp: bool, cfg: LoopConfig, sp: ScenarioPool, dev: torch.device, cb: LoopCallbacks,
             backend: str, address: Optional[str], claim: str) -> Tuple[list, dict, dict]:
    """Every (strategy, seed) not finished in ``db`` (which must hold the experiment ``claim`` or
    none); returns the store's rows, the pointwise check and the rounds' scenario metrics."""
    from jacal.backends import get_backend

    store = LoopStore(db, stamp=stamp)  # checked by run_loop under the lock
    try:
        runner = get_backend(backend, address=address)
    except BaseException:
        store.close()
        raise
    try:
        store.claim(claim)  # strategies and seeds may be added later, or a subset reported
        done = {key: r for key, r in store.last_rounds().items() if key[0] in cfg.strategies and key[1] < cfg.seeds}
        total = len(cfg.strategies) * cfg.seeds * (cfg.rounds + 1)
        cb.on_start(total, sum(r + 1 for r in done.values()))
        have_check = store.has_pointwise_check()

        def commit(row: tuple, blob: Optional[bytes], check: Optional[dict], metrics: Optional[dict] = None) -> None:
            # the round, the labeled set it ends with (and warm weights, its metrics), together
            store.commit_round(row, blob, check, metrics)
            cb.on_round(row[0], row[1], row[2], row[4])

        jobs = []
        first = cfg.strategies[0]
        for seed in range(cfg.seeds):
            _, _, initial = seed_splits(sp.data, cfg, seed, sp.labelable, sp.group)
            for strategy in cfg.strategies:
                last = done.get((strategy, seed), -1)
                if last >= cfg.rounds:
                    continue
                labeled, warm = initial.copy(), None
                if last >= 0:
                    labeled = store.labeled(strategy, seed, last)
                    if cfg.warm_start:
                        warm = store.warm_state(strategy, seed)
                want = not have_check and seed == 0 and strategy == first
                jobs.append((strategy, seed, last, labeled, warm, want))
        if runner.name == "local":
            for strategy, seed, last, labeled, warm, want in jobs:
                cb.on_run(strategy, seed)
                _run_one(cfg, sp, strategy, seed, last, labeled, warm, str(dev), want, commit)
        else:
            shared = runner.put(sp)
            worker_device = "cuda" if dev.type == "cuda" else "cpu"
            args = [(cfg, shared, s, sd, last, lab, warm, worker_device, want) for s, sd, last, lab, warm, want in jobs]
            for i, (rows_, check) in runner.map_unordered(_run_one, args, num_gpus=1.0 if dev.type == "cuda" else 0.0):
                for j, (row_, blob, m_) in enumerate(rows_):
                    commit(row_, blob, check if j == 0 else None, m_)
        rows = [r for r in store.rounds() if r[0] in cfg.strategies and r[1] < cfg.seeds]
        check_value = store.pointwise_check()
        metrics = {key: m for key, m in store.metrics().items() if key[0] in cfg.strategies and key[1] < cfg.seeds}
    finally:
        store.close()
        runner.close()
    return rows, check_value, metrics
