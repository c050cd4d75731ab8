"""One pass of a model over items: the arrays the confidence core needs (:mod:`jacal.confidence.core`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn

from jacal._model_utils import model_dtype, prepared, resolve_device
from jacal._validation import check_positive_int, nonfinite_rows
from jacal.features import extract_features, iter_pool, pool_length
from jacal.sensitivity.gram import jacobian_gram
from jacal.sensitivity.jacobian import jacobian_norm, logits_with_graph

__all__ = ["ConfidenceFeatures", "confidence_features", "odin_logits"]

INPUTS = ("embeddings", "gram", "jacobian", "odin_logits")


@dataclass
class ConfidenceFeatures:
    """Per-item arrays (float64 unless noted), ``None`` where not asked for."""

    logits: np.ndarray                         # (N, K)
    embeddings: Optional[np.ndarray] = None    # (N, d) float32, the input of the last nn.Linear
    gram: Optional[np.ndarray] = None          # (N, K, K) J Jᵀ of the logits' Jacobian
    jacobian: Optional[np.ndarray] = None      # (N,) ‖∂softmax/∂x‖_F
    odin_logits: Optional[np.ndarray] = None   # (N, K) logits at ODIN's perturbed input

    def arrays(self) -> dict:
        """The keyword arguments of :func:`jacal.confidence.confidence_from` / ``fit_confidence``."""
        return {"logits": self.logits, "embeddings": self.embeddings, "gram": self.gram, "jacobian": self.jacobian,
                "odin_logits": self.odin_logits}


def odin_logits(model: nn.Module, x: torch.Tensor, *, temperature: float = 1000.0, epsilon: float = 0.002) -> torch.Tensor:
    """Logits ``(N, K)`` at ODIN's input ``x̃ = x + ε · sign ∇ₓ log max softmax(z(x) / T)`` (Liang et al. 2018).

    ``model`` must already be prepared (eval mode, on ``x``'s device); one forward, one backward
    and one more forward per chunk.
    """
    xg, z = logits_with_graph(model, x)
    score = torch.log_softmax(z / temperature, dim=1).max(dim=1).values.sum()
    (g,) = torch.autograd.grad(score, xg, allow_unused=True)
    x_tilde = x if g is None else x + epsilon * torch.sign(g)
    with torch.no_grad():
        return model(x_tilde).detach()


def confidence_features(model: nn.Module, x: Any, *, need: Iterable[str] = (), batch_size: int = 256, device=None,
                        odin_temperature: float = 1000.0, odin_epsilon: float = 0.002) -> ConfidenceFeatures:
    """Logits and whatever else ``need``s (a subset of ``{"embeddings", "gram", "jacobian", "odin_logits"}``).

    Args:
        model: a classifier ``(N, ...) → (N, K)``; left as found (a train-mode model with dropout or
            BatchNorm is refused, as everywhere in jacal).
        x: items ``(N, ...)``: tensor, numpy array, Dataset or DataLoader (not shuffled).
        batch_size: items per chunk; every array is computed chunk by chunk.
        device: ``None`` (the model's), ``"auto"``, ``"cpu"``, ``"cuda"``...

    Raises:
        ValueError: non-finite items (named by index), items the model rejects, an empty pool.
    """
    need = set(need)
    unknown = need - set(INPUTS)
    if unknown:
        raise ValueError(f"Expected `need` to be a subset of {list(INPUTS)}, got {sorted(unknown)}.")
    check_positive_int("batch_size", batch_size)
    n = pool_length(x)
    if n == 0:
        raise ValueError("`x` is empty: nothing to score.")
    dev = resolve_device(device, model)
    parts: dict = {k: [] for k in ("logits", *INPUTS)}
    done = 0
    with prepared(model, device=dev) as m:
        for chunk in iter_pool(x, batch_size):
            bad = nonfinite_rows(chunk)
            if bool(bad.any()):
                idx = (torch.nonzero(bad).flatten() + done).tolist()
                more = " ..." if len(idx) > 5 else ""
                raise ValueError(f"`x` contains NaN or Inf in row(s) {', '.join(map(str, idx[:5]))}{more}.")
            f = extract_features(m, chunk, need={"logits"} | ({"embeddings"} & need), batch_size=len(chunk), device=dev)
            parts["logits"].append(f.logits)
            if "embeddings" in need:
                parts["embeddings"].append(f.embeddings)
            xc = chunk.to(dev, model_dtype(m))
            if "gram" in need:
                parts["gram"].append(jacobian_gram(m, xc, batch_size=len(xc), device=dev).gram.numpy())
            if "jacobian" in need:
                parts["jacobian"].append(jacobian_norm(m, xc, batch_size=len(xc), device=dev).double().numpy())
            if "odin_logits" in need:
                parts["odin_logits"].append(odin_logits(m, xc, temperature=odin_temperature,
                                                        epsilon=odin_epsilon).double().cpu().numpy())
            done += len(chunk)
    out = {k: (np.concatenate(v) if v else None) for k, v in parts.items()}
    return ConfidenceFeatures(**out)
