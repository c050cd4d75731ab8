"""Write a new acquisition strategy from jacal's public API alone, and use it like a built-in one.

    python examples/custom_strategy.py

A strategy is a class with a ``name``, the features it ``needs`` from the one pass over the pool
(:class:`jacal.features.Need`: probabilities always come), and either ``scores(features) -> (N,)``
(jacal then takes the top k) or ``select(...) -> Selection`` (it chooses the batch itself).
``@jacal.register_strategy`` makes it available by name to :func:`jacal.acquire`, to the Ray
backend and to the modAL adapter; the CLI lists built-in strategies only.

The one below is batch-aware in the simplest way: the most input-sensitive items (highest
‖∂softmax/∂x‖_F), taken in turn from each predicted class, so one steep boundary cannot fill the
batch (``jacobian-topk``, batch-blind, is printed beside it for comparison).
"""
import numpy as np

import jacal
from jacal.acquisition import Selection, Strategy, top_k
from jacal.features import Need, PoolFeatures


@jacal.register_strategy
class ClassBalancedJacobian(Strategy):
    """Highest Jacobian norm first, one predicted class after another (round robin)."""

    name = "class-balanced-jacobian"
    needs = frozenset({Need.JACOBIAN})  # features.jacobian: (N,) ‖J‖_F, NaN for non-finite items

    def select(self, f: PoolFeatures, k: int, *, candidates: np.ndarray, labeled_embeddings=None,
               seed: int = 0) -> Selection:
        s = f.jacobian.copy()  # (N,) the per-item score reported back
        predicted = np.nan_to_num(f.probs, nan=0.0).argmax(axis=1)  # (N,)
        # each class's candidates, most sensitive first (ties broken by jacal's seeded top_k)
        queues = [list(top_k(s, candidates[predicted[candidates] == c], int((predicted[candidates] == c).sum()), seed))
                  for c in range(f.probs.shape[1])]
        picks = []
        while len(picks) < k:  # k ≤ len(candidates) is checked by jacal.acquire
            for q in queues:
                if q and len(picks) < k:
                    picks.append(q.pop(0))
        idx = np.asarray(picks, dtype=np.int64)
        return Selection(indices=idx, scores=s, selection_scores=s[idx])


if __name__ == "__main__":
    data = jacal.load_dataset("digits")
    model = jacal.mlp(data.input_dim, data.n_classes, width=64, depth=2, seed=0)
    jacal.train(model, data, epochs=10, lr=3e-3, batch_size=32, seed=0)
    pool = data.x_test  # (N, 1, 8, 8): stands in for unlabeled items
    for name in ("class-balanced-jacobian", "jacobian-topk"):
        res = jacal.acquire(model.eval(), pool, 20, strategy=name, seed=0)
        classes = np.bincount(res.predicted[res.indices], minlength=data.n_classes)
        print(f"{name}: picks {res.indices[:8].tolist()}...; predicted classes covered "
              f"{int((classes > 0).sum())}/{data.n_classes}; per class {classes.tolist()}")
