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

from jacal._io import ensure_out_dir
from jacal._model_utils import resolve_device
from jacal._store import resumable_store, store_errors
from jacal.acquisition import STRATEGIES, acquire
from jacal.data import Splits, load_dataset
from jacal.loop.config import BATCH_SIZE, LR, OPTIMIZER, LoopConfig, seed_splits, validate
from jacal.loop.store import SCHEMA, LoopStore
from jacal.models import cnn, mlp
from jacal.replication.stats import pointwise_sensitivity
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


def _run_one(cfg: LoopConfig, data: Splits, strategy: str, seed: int, last: int, labeled: np.ndarray,
             warm_state: Optional[bytes], device: str, want_check: bool,
             commit: Optional[Callable[[tuple, Optional[bytes], Optional[dict]], Any]] = None
             ) -> Tuple[List[Tuple[tuple, Optional[bytes]]], Optional[dict]]:
    """Rounds ``last + 1 .. rounds`` of one (strategy, seed): a unit of work (local, or a Ray task).

    Returns the round rows (with warm-start weights when used) and the C4 check when asked for.
    ``commit(row, warm_blob, check)`` is called after each round when given (the local backend
    commits round by round).
    """
    from jacal.backends import crash_once_for_tests

    crash_once_for_tests(f"loop-{strategy}-{seed}")
    dev = torch.device(device)
    val, pool, _ = seed_splits(data, cfg, seed)
    xv, yv = data.x_train[val], data.y_train[val]
    model = None
    if cfg.warm_start and warm_state is not None:  # continue from the stored weights of the last round
        model = build_model(cfg, data, seed)
        model.load_state_dict(torch.load(io.BytesIO(warm_state), weights_only=True))
    out: List[Tuple[tuple, Optional[bytes]]] = []
    check = None
    for rnd in range(last + 1, cfg.rounds + 1):
        if model is None or not cfg.warm_start:
            model = build_model(cfg, data, seed * 1000 + rnd if not cfg.warm_start else seed)
        epochs = train_early_stopping(model, data.x_train[labeled], data.y_train[labeled], xv, yv, cfg,
                                      seed * 1000 + rnd, dev)
        acc, loss = evaluate(model, data.x_test, data.y_test, device=dev)
        round_check = None
        if want_check and rnd == 0:
            check = round_check = pointwise_check(model, data.x_test, data.y_test, dev)
        acq_time = math.nan
        new_labeled = labeled
        if rnd < cfg.rounds:
            remaining = np.setdiff1d(pool, labeled)
            t0 = time.perf_counter()
            res = acquire(model, data.x_train[remaining], cfg.k, strategy=strategy,
                          labeled=data.x_train[labeled] if STRATEGIES[strategy].uses_labeled else None,
                          seed=seed * 1000 + rnd, device=dev)
            acq_time = time.perf_counter() - t0
            new_labeled = np.sort(np.concatenate([labeled, remaining[res.indices]]))
        row = (strategy, seed, rnd, int(len(labeled)), acc, loss, acq_time, epochs, json.dumps(new_labeled.tolist()))
        blob = None
        if cfg.warm_start:
            buf = io.BytesIO()
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buf)
            blob = buf.getvalue()
        out.append((row, blob))
        if commit is not None:
            commit(row, blob, round_check)
        labeled = new_labeled
    return out, check


def run_loop(out: Path, cfg: LoopConfig, *, device: str = "auto", data_root: Optional[Path] = None,
             download: bool = False, resume: bool = False, callbacks: Optional[LoopCallbacks] = None,
             backend: str = "local", address: Optional[str] = None) -> Dict[str, Any]:
    """Run (or resume) every (strategy, seed) and write curves.csv, summary.json, curves.png, report.md.

    ``backend="ray"`` runs each (strategy, seed) as an independent Ray task; its rounds reach
    ``loop.sqlite`` when the task returns (the local backend commits round by round).
    """
    from jacal.loop.report import write_outputs

    cb = callbacks or LoopCallbacks()
    validate(cfg)
    out = Path(out)
    dev = resolve_device(device)
    data = load_dataset(cfg.dataset, root=data_root, download=download, n_test=cfg.n_test, seed=0)
    seed_splits(data, cfg, 0)  # the sizes fit, before anything is written
    ensure_out_dir(out)
    # one run per folder (released on any exit, SIGKILL included); a damaged or foreign store is refused
    with resumable_store(out, "loop", "loop.sqlite", SCHEMA, resume) as (db, stamp):
        with store_errors(db):
            rows, check_value = _run_all(db, stamp, cfg, data, dev, cb, backend, address)
        return write_outputs(out, cfg, rows, check_value)


def _run_all(db: Path, stamp: bool, cfg: LoopConfig, data: Splits, dev: torch.device, cb: LoopCallbacks,
             backend: str, address: Optional[str]) -> Tuple[list, dict]:
    """Every (strategy, seed) not finished in ``db``; returns the store's rows and the pointwise check."""
    from jacal.backends import get_backend

    store = LoopStore(db, stamp=stamp)  # checked by run_loop under the lock
    try:
        runner = get_backend(backend, address=address)
    except BaseException:
        store.close()
        raise
    try:
        # strategies and the seed count are not part of the experiment's identity: a later run may add
        # strategies or seeds (each seed's split and labeled start depend on the seed alone, so pairing
        # stays valid), or report a subset
        store.claim(json.dumps({k: v for k, v in cfg.to_dict().items() if k not in ("strategies", "seeds")},
                               sort_keys=True))
        done = {key: r for key, r in store.last_rounds().items() if key[0] in cfg.strategies and key[1] < cfg.seeds}
        total = len(cfg.strategies) * cfg.seeds * (cfg.rounds + 1)
        cb.on_start(total, sum(r + 1 for r in done.values()))
        have_check = store.has_pointwise_check()

        def commit(row: tuple, blob: Optional[bytes], check: Optional[dict]) -> None:
            # the round, the labeled set it ends with (and warm weights), together
            store.commit_round(row, blob, check)
            cb.on_round(row[0], row[1], row[2], row[4])

        jobs = []
        first = cfg.strategies[0]
        for seed in range(cfg.seeds):
            _, _, initial = seed_splits(data, cfg, seed)
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
                _run_one(cfg, data, strategy, seed, last, labeled, warm, str(dev), want, commit)
        else:
            shared = runner.put(data)
            worker_device = "cuda" if dev.type == "cuda" else "cpu"
            args = [(cfg, shared, s, sd, last, lab, warm, worker_device, want) for s, sd, last, lab, warm, want in jobs]
            for i, (rows_, check) in runner.map_unordered(_run_one, args, num_gpus=1.0 if dev.type == "cuda" else 0.0):
                for j, (row_, blob) in enumerate(rows_):
                    commit(row_, blob, check if j == 0 else None)
        rows = [r for r in store.rounds() if r[0] in cfg.strategies and r[1] < cfg.seeds]
        check_value = store.pointwise_check()
    finally:
        store.close()
        runner.close()
    return rows, check_value
