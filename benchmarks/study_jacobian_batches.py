"""Why does top-k Jacobian acquisition lose to random? A look inside one acquired batch.

Setting (the issue's): MNIST, a pool of 20,000 training images, 100 random labels, jacal's MLP
784-256-256-10 with dropout trained by ``jacal loop``'s recipe (Adam, early stopping on 1,000
held-out images), one batch of k = 100 from each strategy. For every strategy and seed it measures

* class concentration: the largest number of picks in one predicted class, and the number of
  picks on the most frequent pair of top-2 classes (one decision boundary);
* overlap with margin's batch;
* redundancy: the mean cosine similarity between picks' penultimate-layer embeddings, and the mean
  distance from each pick to its nearest other pick in pixel space, divided by the same for a
  random batch (1 = as spread as random);
* where the picks sit: the median pixel distance to the nearest labeled image;
* after labeling: the test accuracy of a model retrained on the 100 + 100 labels.

It writes ``OUT/study.json`` and three figures (``batch_classes.png``, ``norm_vs_margin.png``,
``redundancy.png``); ``docs/benchmarks/jacobian_acquisition.md`` reads them.

    python benchmarks/study_jacobian_batches.py --data-root DIR --out docs/benchmarks/jacobian_acquisition
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_MNIST  # noqa: E402

import jacal  # noqa: E402
from jacal.features import extract_features  # noqa: E402
from jacal.acquisition.strategies import get_strategy  # noqa: E402
from jacal.loop import LOOP_PRESETS  # noqa: E402
from jacal.loop.runner import build_model, train_early_stopping  # noqa: E402
from jacal.training import evaluate  # noqa: E402

STRATEGIES = ("random", "margin", "badge", "jacobian-topk", "jacobian-balanced", "jacobian-kmeans", "jacobian")


def balanced_topk(jacobian: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    """A design this study rejected (not shipped): class-balanced Jacobian top-k, round-robin over
    predicted classes, highest ‖J‖ first within each."""
    order = np.argsort(-jacobian, kind="stable")
    cls = probs[order].argmax(1)
    rank_in_class = np.empty(len(order), dtype=np.int64)
    for c in np.unique(cls):  # a loop over classes, not points
        where = np.flatnonzero(cls == c)
        rank_in_class[where] = np.arange(len(where))
    return order[np.lexsort((np.arange(len(order)), rank_in_class))[:k]]


def _nn_distance(x: torch.Tensor) -> float:
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return float(d.min(dim=1).values.mean())


def one_seed(data, seed: int, k: int, pool_size: int, n_initial: int, device) -> dict:
    cfg = LOOP_PRESETS["mnist-batch100"]
    rng = np.random.default_rng([seed, 11])
    order = rng.permutation(len(data.x_train))
    val, pool = order[:1000], order[1000:1000 + pool_size]
    labeled, unlabeled = pool[:n_initial], pool[n_initial:]
    xv, yv = data.x_train[val], data.y_train[val]
    model = build_model(cfg, data, seed)
    train_early_stopping(model, data.x_train[labeled], data.y_train[labeled], xv, yv, cfg, seed, device)
    xu = data.x_train[unlabeled]
    feats = extract_features(model, xu, need={"jacobian", "jacobian-embedding", "boundary-embedding", "embeddings"}, seed=seed, device=device)
    cand = np.arange(len(xu))
    lab_emb = extract_features(model, data.x_train[labeled], need={"embeddings"}, device=device).embeddings
    batches = {}
    for name in STRATEGIES:
        if name == "jacobian-balanced":
            batches[name] = balanced_topk(feats.jacobian, feats.probs, k)
            continue
        batches[name] = get_strategy(name).select(feats, k, candidates=cand, labeled_embeddings=lab_emb, seed=seed)[0]
    margin_score = jacal.acquisition.scores.margin(feats.probs)
    top2 = np.sort(np.argsort(feats.probs, axis=1)[:, -2:], axis=1)
    flat_u = xu.reshape(len(xu), -1)
    flat_l = data.x_train[labeled].reshape(n_initial, -1)
    rand_nn = _nn_distance(flat_u[batches["random"]])
    out = {"seed": seed, "spearman_jacobian_vs_minus_margin": float(stats.spearmanr(feats.jacobian, margin_score)[0]),
           "strategies": {}}
    for name, idx in batches.items():
        pred = feats.probs[idx].argmax(1)
        pairs = {}
        for a, b in top2[idx]:
            pairs[(int(a), int(b))] = pairs.get((int(a), int(b)), 0) + 1
        emb = torch.nn.functional.normalize(torch.from_numpy(feats.embeddings[idx]), dim=1)
        cos = emb @ emb.T
        mean_cos = float((cos.sum() - cos.diagonal().sum()) / (k * (k - 1)))
        to_labeled = torch.cdist(flat_u[idx], flat_l).min(dim=1).values
        retrained = build_model(cfg, data, seed + 100)
        new = np.concatenate([labeled, unlabeled[idx]])
        train_early_stopping(retrained, data.x_train[new], data.y_train[new], xv, yv, cfg, seed + 100, device)
        acc, _ = evaluate(retrained, data.x_test, data.y_test, device=device)
        out["strategies"][name] = {
            "class_counts": np.bincount(pred, minlength=data.n_classes).tolist(),
            "max_in_one_class": int(np.bincount(pred).max()),
            "max_on_one_boundary": int(max(pairs.values())),
            "top_boundary": "/".join(map(str, max(pairs, key=pairs.get))),
            "overlap_with_margin": int(len(np.intersect1d(idx, batches["margin"]))),
            "mean_embedding_cosine": mean_cos,
            "nn_distance_vs_random": _nn_distance(flat_u[idx]) / rand_nn,
            "median_distance_to_labeled": float(to_labeled.median()),
            "mean_jacobian_norm": float(feats.jacobian[idx].mean()),
            "accuracy_after_labeling": float(acc),
        }
    out["_plot"] = {"jacobian": feats.jacobian, "margin": margin_score, "batches": batches, "top2": top2}
    return out


def figures(results: list, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = results[0]
    names = list(first["strategies"])
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharey=True, squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes, names):
        counts = first["strategies"][name]["class_counts"]
        ax.bar(range(len(counts)), counts, color="C3" if name.startswith("jacobian") else "C0")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(counts)))
        ax.set_xlabel("predicted class", fontsize=8)
    for ax in axes[::cols]:
        ax.set_ylabel(f"picks of {sum(counts)}")
    fig.suptitle(f"One batch of {sum(counts)} after 100 random MNIST labels (seed {first['seed']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "batch_classes.png", dpi=110)
    plt.close(fig)

    p = first["_plot"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(-p["margin"], p["jacobian"], s=2, c="0.75", label="pool", rasterized=True)
    for name, color, marker in (("margin", "C0", "o"), ("jacobian-topk", "C3", "x"), ("jacobian-kmeans", "C2", "+"),
                                ("jacobian", "C1", "^")):
        idx = p["batches"][name]
        ax.scatter(-p["margin"][idx], p["jacobian"][idx], s=18, c=color, marker=marker, label=f"{name} batch")
    ax.set(xlabel="top-2 probability gap p(1) − p(2)", ylabel="‖J(x)‖_F (softmax)", yscale="log",
           title="Jacobian norm against margin over the pool")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "norm_vs_margin.png", dpi=110)
    plt.close(fig)

    keys = [("max_on_one_boundary", "picks on one top-2 boundary"), ("mean_embedding_cosine", "mean cosine of picks' embeddings"),
            ("nn_distance_vs_random", "nearest-pick distance / random's"),
            ("median_distance_to_labeled", "median pixel distance to labeled set"),
            ("accuracy_after_labeling", "test accuracy after labeling")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.1 * len(keys), 3.2))
    for ax, (key, label) in zip(axes, keys):
        vals = np.array([[r["strategies"][n][key] for n in names] for r in results])
        ax.bar(range(len(names)), vals.mean(0), yerr=vals.std(0) if len(results) > 1 else None,
               color=["C3" if n.startswith("jacobian") else "C0" for n in names])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        if key in ("accuracy_after_labeling", "median_distance_to_labeled"):
            ax.set_ylim(vals.min() * 0.95, vals.max() * 1.02)
    fig.suptitle(f"Batch redundancy, mean ± sd over {len(results)} seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "redundancy.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=SHARED_MNIST)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/jacobian_acquisition"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--pool-size", type=int, default=20000)
    ap.add_argument("--initial", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    data = jacal.load_dataset("mnist", root=args.data_root, n_test=10000)
    device = torch.device(args.device)
    results = [one_seed(data, s, args.k, args.pool_size, args.initial, device) for s in range(args.seeds)]
    args.out.mkdir(parents=True, exist_ok=True)
    figures(results, args.out)
    clean = [{k: v for k, v in r.items() if k != "_plot"} for r in results]
    names = list(clean[0]["strategies"])
    mean = {n: {key: float(np.mean([r["strategies"][n][key] for r in clean]))
                for key in clean[0]["strategies"][n] if isinstance(clean[0]["strategies"][n][key], (int, float))}
            for n in names}
    doc = {"setting": vars(args) | {"data_root": str(args.data_root), "out": str(args.out)}, "mean_over_seeds": mean,
           "spearman_jacobian_vs_minus_margin": [r["spearman_jacobian_vs_minus_margin"] for r in clean], "per_seed": clean}
    (args.out / "study.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps({"mean_over_seeds": mean, "spearman": doc["spearman_jacobian_vs_minus_margin"]}, indent=1))


if __name__ == "__main__":
    main()
