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

import copy
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from jacal._io import ensure_out_dir
from jacal._store import check_store, open_store, run_lock, store_errors
from jacal._model_utils import resolve_device
from jacal._validation import JacalError, check_choice, check_positive_int
from jacal.acquisition import STRATEGIES, acquire
from jacal.acquisition.strategies import get_strategy
from jacal.data import Splits, load_dataset
from jacal.models import cnn, mlp
from jacal.replication.stats import pointwise_sensitivity
from jacal.sensitivity.jacobian import jacobian_norm
from jacal.training import evaluate

__all__ = ["LoopConfig", "LOOP_PRESETS", "run_loop", "LoopCallbacks", "summarize"]


@dataclass(frozen=True)
class LoopConfig:
    """A simulated active-learning experiment (see the module docstring)."""

    dataset: str = "digits"
    strategies: Tuple[str, ...] = ("jacobian", "jacobian-kmeans", "jacobian-topk", "margin", "entropy",
                                   "least-confidence", "bald", "coreset", "badge", "random")
    initial: int = 20
    k: int = 10
    rounds: int = 8
    seeds: int = 3
    model: str = "mlp"
    width: int = 128
    depth: int = 2
    dropout: float = 0.25
    max_epochs: int = 100
    patience: int = 10
    val_size: int = 200
    n_test: Optional[int] = None
    pool_size: Optional[int] = None
    warm_start: bool = False
    thresholds: Tuple[float, ...] = (0.8, 0.9, 0.95)

    def to_dict(self) -> dict:
        return asdict(self)


LOOP_PRESETS: Dict[str, LoopConfig] = {
    "smoke": LoopConfig(seeds=5),
    # Gal et al. 2017 / BatchBALD: MNIST, 20 initial labels, +10 per round (to 320 here), a pool of
    # 20,000 training images so a run fits a 2-core CPU
    "mnist-gal": LoopConfig(dataset="mnist", initial=20, k=10, rounds=30, seeds=5, val_size=1000, n_test=10000,
                            max_epochs=200, patience=20, width=256, depth=2, dropout=0.5, pool_size=20000),
    # a larger-batch protocol: +100 per round
    "mnist-batch100": LoopConfig(dataset="mnist", initial=100, k=100, rounds=10, seeds=5, val_size=1000,
                                 n_test=10000, max_epochs=200, patience=20, width=256, depth=2, dropout=0.5,
                                 pool_size=20000),
}


@dataclass
class LoopCallbacks:
    on_start: Callable[[int, int], Any] = lambda total_rounds, done: None
    on_run: Callable[[str, int], Any] = lambda strategy, seed: None
    on_round: Callable[[str, int, int, float], Any] = lambda strategy, seed, rnd, acc: None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    strategy TEXT NOT NULL, seed INTEGER NOT NULL, round INTEGER NOT NULL, n_labeled INTEGER NOT NULL,
    test_accuracy REAL, test_loss REAL, acquisition_time_s REAL, train_epochs INTEGER, labeled TEXT NOT NULL,
    PRIMARY KEY (strategy, seed, round));
CREATE TABLE IF NOT EXISTS warm (strategy TEXT NOT NULL, seed INTEGER NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (strategy, seed));
"""


def _build_model(cfg: LoopConfig, data: Splits, seed: int) -> torch.nn.Module:
    if cfg.model == "mlp":
        return mlp(data.input_dim, data.n_classes, width=cfg.width, depth=cfg.depth, dropout=cfg.dropout, seed=seed)
    return cnn(data.input_shape, data.n_classes, seed=seed)


def _train_early_stopping(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor,
                          cfg: LoopConfig, seed: int, device: torch.device) -> int:
    """Adam, batch 32, early stopping on validation accuracy; restores the best weights. Returns epochs run."""
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    x, y = x.to(device), y.to(device)
    best_acc, best_state, since, epoch = -1.0, None, 0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout masks
        for epoch in range(1, cfg.max_epochs + 1):
            model.train()
            order = torch.randperm(len(x), generator=gen).to(device)
            for s in range(0, len(x), 32):
                idx = order[s:s + 32]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            acc, _ = evaluate(model, xv, yv, device=device)
            if acc > best_acc:
                best_acc, best_state, since = acc, copy.deepcopy(model.state_dict()), 0
            else:
                since += 1
                if since >= cfg.patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    return epoch


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


def _splits(data: Splits, cfg: LoopConfig, seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(validation indices, pool indices, initial labeled indices) into the training set, for a seed."""
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(data.x_train))
    if cfg.val_size + cfg.initial + cfg.k * cfg.rounds > len(order):
        raise ValueError(f"the training set ({len(order)}) is too small for val_size + initial + k·rounds "
                         f"({cfg.val_size} + {cfg.initial} + {cfg.k}·{cfg.rounds}).")
    val = np.sort(order[:cfg.val_size])
    pool = order[cfg.val_size:]
    if cfg.pool_size is not None:
        pool = pool[:cfg.pool_size]
    initial = np.sort(pool[:cfg.initial])
    return val, np.sort(pool), initial


def _validate(cfg: LoopConfig) -> None:
    for name in ("initial", "k", "seeds", "max_epochs", "patience", "val_size"):
        check_positive_int(name, getattr(cfg, name))
    if isinstance(cfg.rounds, bool) or not isinstance(cfg.rounds, int) or cfg.rounds < 0:
        raise ValueError(f"Expected `rounds` to be a non-negative int, got {cfg.rounds!r}.")
    if cfg.pool_size is not None:
        check_positive_int("pool_size", cfg.pool_size)
    if not cfg.strategies:
        raise ValueError("Expected at least one strategy.")
    for s in cfg.strategies:
        get_strategy(s)  # a one-line error for unknown or retired names
    check_choice("model", cfg.model, ("mlp", "cnn"))
    if "bald" in cfg.strategies and cfg.model == "mlp" and cfg.dropout <= 0:
        raise ValueError("strategy 'bald' needs dropout: set dropout > 0.")


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
    val, pool, _ = _splits(data, cfg, seed)
    xv, yv = data.x_train[val], data.y_train[val]
    model = None
    if cfg.warm_start and warm_state is not None:  # continue from the stored weights of the last round
        model = _build_model(cfg, data, seed)
        model.load_state_dict(torch.load(io.BytesIO(warm_state), weights_only=True))
    out: List[Tuple[tuple, Optional[bytes]]] = []
    check = None
    for rnd in range(last + 1, cfg.rounds + 1):
        if model is None or not cfg.warm_start:
            model = _build_model(cfg, data, seed * 1000 + rnd if not cfg.warm_start else seed)
        epochs = _train_early_stopping(model, data.x_train[labeled], data.y_train[labeled], xv, yv, cfg,
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
    cb = callbacks or LoopCallbacks()
    _validate(cfg)
    out = Path(out)
    dev = resolve_device(device)
    data = load_dataset(cfg.dataset, root=data_root, download=download, n_test=cfg.n_test, seed=0)
    _splits(data, cfg, 0)  # the sizes fit, before anything is written
    ensure_out_dir(out)
    db = out / "loop.sqlite"
    with run_lock(out, "loop"):  # one run per folder; released on any exit, SIGKILL included
        # a damaged or foreign store is refused untouched, before any work
        stamp = check_store(db, "loop", _SCHEMA) if db.exists() else True
        if db.exists() and not resume:
            raise JacalError(f"{db} exists; pass --resume to continue that run, or choose another --out")
        with store_errors(db):
            rows, check_value = _run_all(db, stamp, cfg, data, dev, cb, backend, address)
        return write_outputs(out, cfg, rows, check_value)


def _run_all(db: Path, stamp: bool, cfg: LoopConfig, data: Splits, dev: torch.device, cb: LoopCallbacks,
             backend: str, address: Optional[str]) -> Tuple[list, dict]:
    """Every (strategy, seed) not finished in ``db``; returns the store's rows and the pointwise check."""
    from jacal.backends import get_backend

    con = open_store(db, "loop", _SCHEMA, stamp=stamp)  # checked by run_loop under the lock
    try:
        runner = get_backend(backend, address=address)
    except BaseException:
        con.close()
        raise
    try:
        # strategies and the seed count are not part of the experiment's identity: a later run may add
        # strategies or seeds (each seed's split and labeled start depend on the seed alone, so pairing
        # stays valid), or report a subset
        sig = json.dumps({k: v for k, v in cfg.to_dict().items() if k not in ("strategies", "seeds")}, sort_keys=True)
        row = con.execute("SELECT value FROM meta WHERE key='config'").fetchone()
        if row and row[0] != sig:
            raise JacalError(f"{db} holds a different experiment (options differ); choose another --out")
        with con:
            con.execute("INSERT OR REPLACE INTO meta VALUES ('config', ?)", (sig,))
        done = {(s, sd): r for s, sd, r in con.execute("SELECT strategy, seed, MAX(round) FROM rounds GROUP BY 1, 2")
                if s in cfg.strategies and sd < cfg.seeds}
        total = len(cfg.strategies) * cfg.seeds * (cfg.rounds + 1)
        cb.on_start(total, sum(r + 1 for r in done.values()))
        have_check = con.execute("SELECT value FROM meta WHERE key='pointwise_check'").fetchone() is not None

        def commit(row: tuple, blob: Optional[bytes], check: Optional[dict]) -> None:
            with con:  # the round, the labeled set it ends with (and warm weights), together
                con.execute("INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                if blob is not None:
                    con.execute("INSERT OR REPLACE INTO warm VALUES (?, ?, ?)", (row[0], row[1], blob))
                if check is not None:
                    con.execute("INSERT OR REPLACE INTO meta VALUES ('pointwise_check', ?)", (json.dumps(check),))
            cb.on_round(row[0], row[1], row[2], row[4])

        jobs = []
        first = cfg.strategies[0]
        for seed in range(cfg.seeds):
            _, _, initial = _splits(data, cfg, seed)
            for strategy in cfg.strategies:
                last = done.get((strategy, seed), -1)
                if last >= cfg.rounds:
                    continue
                labeled, warm = initial.copy(), None
                if last >= 0:
                    labeled = np.array(json.loads(con.execute(
                        "SELECT labeled FROM rounds WHERE strategy=? AND seed=? AND round=?",
                        (strategy, seed, last)).fetchone()[0]), dtype=np.int64)
                    if cfg.warm_start:
                        warm = con.execute("SELECT state FROM warm WHERE strategy=? AND seed=?", (strategy, seed)).fetchone()[0]
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
        rows = con.execute("SELECT strategy, seed, round, n_labeled, test_accuracy, test_loss, acquisition_time_s, "
                           "train_epochs FROM rounds ORDER BY strategy, seed, round").fetchall()
        rows = [r for r in rows if r[0] in cfg.strategies and r[1] < cfg.seeds]
        check = con.execute("SELECT value FROM meta WHERE key='pointwise_check'").fetchone()
        check_value = json.loads(check[0]) if check else {}
    finally:
        con.close()
        runner.close()
    return rows, check_value


# ---------------------------------------------------------------------------------------------
# summary


def _mean_ci(values: Sequence[float]) -> Dict[str, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    if len(v) == 1:
        return {"mean": float(v[0]), "ci_low": math.nan, "ci_high": math.nan, "n": 1}
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return {"mean": float(v.mean()), "ci_low": float(v.mean() - half), "ci_high": float(v.mean() + half), "n": len(v)}


def _aulc(n: np.ndarray, acc: np.ndarray) -> float:
    """Area under the accuracy-vs-labels curve divided by the label range (a mean accuracy)."""
    if len(n) < 2:
        return float(acc[0]) if len(acc) else math.nan
    return float(np.trapezoid(acc, n) / (n[-1] - n[0])) if hasattr(np, "trapezoid") else float(np.trapz(acc, n) / (n[-1] - n[0]))


def _paired(a: Dict[int, float], b: Dict[int, float]) -> Dict[str, Any]:
    """Paired comparison of per-seed values ``a`` and ``b`` (seed → value) over their common seeds."""
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds])
    out = {"n_seeds": len(seeds), "mean_difference": float(d.mean()) if len(d) else math.nan, "p_ttest": math.nan,
           "p_wilcoxon": math.nan, "ci95_half_width": math.nan}
    if len(d) >= 2:  # t interval of the mean paired difference
        out["ci95_half_width"] = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    if len(d) >= 2 and np.ptp(d) > 0:
        out["p_ttest"] = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    if len(d) >= 2 and np.count_nonzero(d) >= 1:
        out["p_wilcoxon"] = float(stats.wilcoxon(d[d != 0]).pvalue) if np.count_nonzero(d) >= 2 else math.nan
    p = out["p_ttest"]
    if not math.isfinite(p) or p >= 0.05:
        out["verdict"] = "tie" if len(d) >= 2 else "inconclusive (one seed)"
    else:
        out["verdict"] = "win" if out["mean_difference"] > 0 else "loss"
    return out


def summarize(rows: Sequence[tuple], cfg: LoopConfig) -> Dict[str, Any]:
    """Per-strategy AULC, final accuracy, labels to thresholds, acquisition time, paired comparisons."""
    by: Dict[str, Dict[int, List[tuple]]] = {}
    for r in rows:
        by.setdefault(r[0], {}).setdefault(r[1], []).append(r)
    per: Dict[str, Any] = {}
    aulc: Dict[str, Dict[int, float]] = {}
    for strategy, seeds in by.items():
        aulc[strategy] = {}
        finals, times, reach = [], [], {t: [] for t in cfg.thresholds}
        for seed, rs in seeds.items():
            rs = sorted(rs, key=lambda r: r[2])
            n = np.array([r[3] for r in rs], float)
            acc = np.array([r[4] for r in rs], float)
            aulc[strategy][seed] = _aulc(n, acc)
            finals.append(acc[-1])
            times += [r[6] for r in rs if r[6] is not None and math.isfinite(r[6])]
            for t in cfg.thresholds:
                hit = np.flatnonzero(acc >= t)
                reach[t].append(float(n[hit[0]]) if len(hit) else math.nan)
        per[strategy] = {"aulc": _mean_ci(list(aulc[strategy].values())), "final_accuracy": _mean_ci(finals),
                         "labels_to_reach": {str(t): (float(np.median(v)) if np.isfinite(v).all() else None)
                                             for t, v in reach.items()},
                         "acquisition_time_s": _mean_ci(times), "rounds_per_seed": max(len(v) for v in seeds.values())}
    baselines = [s for s in per if not s.startswith("jacobian") and s != "random"]
    best = max(baselines, key=lambda s: per[s]["aulc"]["mean"]) if baselines else None
    for s in per:
        if s != "random" and "random" in aulc:
            per[s]["vs_random"] = _paired(aulc[s], aulc["random"])
        if best is not None and s != best:
            per[s]["vs_best_baseline"] = {"baseline": best, **_paired(aulc[s], aulc[best])}
    ranking = sorted(per, key=lambda s: -per[s]["aulc"]["mean"])
    return {"strategies": per, "ranking": ranking, "best_baseline": best}


def write_outputs(out: Path, cfg: LoopConfig, rows: Sequence[tuple], check: Dict[str, Any]) -> Dict[str, Any]:
    import csv

    from jacal._io import atomic_open

    with atomic_open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["strategy", "seed", "round", "n_labeled", "test_accuracy", "test_loss", "acquisition_time_s",
                    "train_epochs"])
        w.writerows(rows)
    summary = summarize(rows, cfg)
    summary["pointwise_check_c4"] = check
    summary["config"] = cfg.to_dict()
    summary["protocol"] = __doc__.strip()
    _plot(out, rows, cfg)
    clean = json.loads(json.dumps(summary, default=float).replace("NaN", "null"))
    with atomic_open(out / "summary.json", "w") as f:
        json.dump(clean, f, indent=2)
    _report(out, clean, cfg)
    return clean


def _plot(out: Path, rows: Sequence[tuple], cfg: LoopConfig) -> None:
    """Two panels: mean test accuracy per strategy (95% CI bands clipped to [0, 1]), and each
    strategy's accuracy minus random's at the same seed and round (paired, mean ± 95% CI), the
    Jacobian strategies drawn solid and thick, the baselines dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jacal._io import atomic_path

    acc = {(r[0], r[1], r[3]): r[4] for r in rows}
    names = sorted({r[0] for r in rows}, key=lambda s: (not s.startswith("jacobian"), s))
    fig, (ax, dx) = plt.subplots(1, 2, figsize=(13, 5))
    for i, strategy in enumerate(names):
        rs = [r for r in rows if r[0] == strategy]
        ns = sorted({r[3] for r in rs})
        jac = strategy.startswith("jacobian")
        style = dict(ls="-" if jac else "--", color=f"C{i % 10}", lw=2.2 if jac else 1.2, label=strategy)
        for panel, value in ((ax, lambda r: r[4]), (dx, lambda r: r[4] - acc.get(("random", r[1], r[3]), math.nan))):
            if panel is dx and strategy == "random":
                continue
            cis = [_mean_ci([value(r) for r in rs if r[3] == n]) for n in ns]
            mean = np.array([c["mean"] for c in cis])
            lo = np.array([c["ci_low"] if math.isfinite(c["ci_low"]) else c["mean"] for c in cis])
            hi = np.array([c["ci_high"] if math.isfinite(c["ci_high"]) else c["mean"] for c in cis])
            if panel is ax:
                lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
            panel.plot(ns, mean, **style)
            panel.fill_between(ns, lo, hi, color=style["color"], alpha=0.10 if jac else 0.05)
    ax.set(xlabel="labeled examples", ylabel="test accuracy")
    ax.set_title(f"{cfg.dataset}, {cfg.model}, {cfg.initial} labels +{cfg.k} per round: mean over {cfg.seeds} seed(s), "
                 "95% CI", fontsize=10)
    dx.axhline(0, color="0.3", lw=0.8)
    dx.set(xlabel="labeled examples", ylabel="accuracy − random's (same seed)",
           title="paired difference from random, mean ± 95% CI")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(out / "curves.png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _p(p: Optional[float]) -> str:
    return "–" if p is None or not math.isfinite(p) else f"{p:.2g}"


def _fmt(c: Dict[str, float]) -> str:
    if c.get("mean") is None:
        return "–"
    if c.get("ci_low") is None:
        return f"{c['mean']:.4f}"
    return f"{c['mean']:.4f} [{c['ci_low']:.4f}, {c['ci_high']:.4f}]"


def _report(out: Path, summary: Dict[str, Any], cfg: LoopConfig) -> None:
    from jacal._io import atomic_open

    per = summary["strategies"]
    lines = [f"# Active learning on {cfg.dataset}: {cfg.initial} initial labels, +{cfg.k} per round, {cfg.rounds} rounds, "
             f"{cfg.seeds} seed(s)", "", "## Ranking (area under the learning curve, normalized)", "",
             "| rank | strategy | AULC mean [95% CI] | final accuracy | labels to " + " / ".join(f"{t:.0%}" for t in cfg.thresholds)
             + " | acquisition s/round | vs random | vs best baseline |", "|---|---|---|---|---|---|---|---|"]
    for rank, s in enumerate(summary["ranking"], 1):
        d = per[s]
        reach = " / ".join("–" if v is None else f"{v:.0f}" for v in d["labels_to_reach"].values())
        vr = d.get("vs_random")
        vb = d.get("vs_best_baseline")
        vr_t = "–" if not vr else f"{vr['verdict']} ({vr['mean_difference']:+.4f}, p={_p(vr['p_ttest'])})"
        vb_t = "–" if not vb else f"{vb['verdict']} vs {vb['baseline']} ({vb['mean_difference']:+.4f})"
        t = d["acquisition_time_s"]["mean"]
        lines.append(f"| {rank} | {s} | {_fmt(d['aulc'])} | {_fmt(d['final_accuracy'])} | {reach} | "
                     f"{'–' if t is None else f'{t:.3f}'} | {vr_t} | {vb_t} |")
    lines += ["", "## Where the Jacobian strategies stand", ""]
    for s in summary["ranking"]:
        if s.startswith("jacobian"):
            vr, vb = per[s].get("vs_random"), per[s].get("vs_best_baseline")
            parts = []
            if vr:
                parts.append(f"{vr['verdict']} against random (AULC {vr['mean_difference']:+.4f}, paired t-test "
                             f"p={_p(vr['p_ttest'])}, {vr['n_seeds']} seeds)")
            if vb:
                parts.append(f"{vb['verdict']} against the best baseline, {vb['baseline']} (AULC {vb['mean_difference']:+.4f}, "
                             f"p={_p(vb['p_ttest'])})")
            lines.append(f"- **{s}**: " + "; ".join(parts) + ".")
    c4 = summary.get("pointwise_check_c4") or {}
    if c4:
        lines += ["", "## Does the Jacobian norm carry signal on this data? (claim C4, first model)", "",
                  f"Spearman ρ(‖J(x)‖, loss) = {c4.get('spearman_rho_jacobian_loss'):.3f} (p={c4.get('p'):.2g}) and "
                  f"error-detection AUROC of ‖J‖ = {c4.get('error_auroc_jacobian'):.3f} on {c4.get('n')} test points "
                  f"(model test accuracy {c4.get('test_accuracy'):.3f})."]
    lines += ["", "Win/loss: paired t-test on per-seed AULC, p < 0.05; otherwise tie. With few seeds, ties are "
              "the honest default.", "", "![curves](curves.png)", "", "## Protocol", "", summary["protocol"], "",
              f"Options: `{json.dumps(cfg.to_dict())}`"]
    with atomic_open(out / "report.md", "w") as f:
        f.write("\n".join(lines) + "\n")
