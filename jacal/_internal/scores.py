"""Per-item scores on arrays, below the feature pass: what it computes and strategies rank by.

Uncertainty scores take class probabilities ``probs (N, K)`` (rows summing to 1), numpy or torch, and
return ``(N,)`` float64 numpy scores (higher = acquire first), so any labeling pipeline can call them on
its own predictions; :func:`bald` takes MC-dropout samples ``(T, N, K)``. They are public as
:mod:`jacal.acquisition.scores`.

The least disagree metric (LDM; Cho et al., ICLR 2024), vectorized: LDM(x) is the smallest
disagreement, over the pool, of a hypothesis that changes x's prediction: a sample close to the
decision boundary is flipped by hypotheses that barely differ from the model. As in the reference code
(ipcng00/LDM-S), hypotheses are the model with Gaussian noise of standard deviation σ added to its last
linear layer (weights and bias), σ on the grid ``10^(−5 : 0 : 0.1)``, and the disagreement ``ρ(g, h)``
of a hypothesis is the share of a reference sample of the pool whose prediction it changes; LDM(x) =
min ρ over the hypotheses that flip x (1 for items none flips). Two choices are jacal's: the reference
draws hypotheses at each σ until ten in a row improve no item, here a fixed ``per_sigma`` hypotheses
per σ are drawn at once (seeded; 10 by default, the reference's minimum) so the whole estimate is a few
batched matrix products; and the reference sample is a seeded subset of the pool (``reference_size``
items). Public, with the LDM-S seeding that reads it, as :mod:`jacal.acquisition.ldm`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from jacal._internal.validation import check_probabilities

__all__ = ["least_confidence", "margin", "entropy", "bald", "max_softmax", "last_linear", "hypotheses",
           "least_disagree_metric"]


def max_softmax(probs) -> np.ndarray:
    """``max_k p_k`` ``(N,)``: a confidence, not an acquisition score."""
    return check_probabilities("probs", probs).max(axis=1)


def least_confidence(probs) -> np.ndarray:
    """``1 − max_k p_k``."""
    return 1.0 - max_softmax(probs)


def margin(probs) -> np.ndarray:
    """``−(p_(1) − p_(2))``: a small gap between the two top classes scores high."""
    p = np.sort(check_probabilities("probs", probs), axis=1)
    return -(p[:, -1] - p[:, -2])


def entropy(probs) -> np.ndarray:
    """Predictive entropy ``−Σ_k p_k log p_k`` (nats)."""
    p = check_probabilities("probs", probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)


def bald(mc_probs) -> np.ndarray:
    """BALD mutual information from MC-dropout samples ``mc_probs (T, N, K)``.

    ``H(mean_t p_t) − mean_t H(p_t)`` (Houlsby et al. 2011; Gal et al. 2017).
    """
    p = check_probabilities("mc_probs", mc_probs, ndim=3)
    if p.shape[0] < 2:
        raise ValueError(f"Expected at least 2 MC samples in `mc_probs`, got shape {p.shape}.")
    mean = p.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h_mean = -np.sum(np.where(mean > 0, mean * np.log(mean), 0.0), axis=1)
        h_each = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=2).mean(axis=0)
    return np.maximum(h_mean - h_each, 0.0)


SIGMAS = 10.0 ** np.arange(-5.0, 0.05, 0.1)


def last_linear(model: nn.Module, embeddings: np.ndarray, logits: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(W (K, d), b (K,))``: the layer that maps the pool's ``embeddings (N, d)`` to its ``logits (N, K)``.

    An eager model's last ``nn.Linear`` when its shape fits; otherwise (TorchScript, ``torch.export``,
    a custom ``embed``) it is recovered by least squares from the pool itself: the logits are an affine
    function of the last linear layer's input, so the fit is exact up to rounding, and a fit that is
    not (embeddings that are not that input) is refused in one line.
    """
    ok = np.isfinite(embeddings).all(axis=1) & np.isfinite(logits).all(axis=1)
    h, z = embeddings[ok].astype(np.float64), logits[ok].astype(np.float64)
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if lin and tuple(lin[-1].weight.shape) == (z.shape[1], h.shape[1]):
        w = lin[-1].weight.detach().double().cpu()
        b = lin[-1].bias.detach().double().cpu() if lin[-1].bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        if np.allclose(h @ w.numpy().T + b.numpy(), z, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(z).max()))):
            return w, b
    a = np.concatenate([h, np.ones((len(h), 1))], axis=1)
    beta, *_ = np.linalg.lstsq(a, z, rcond=None)
    resid = np.abs(a @ beta - z).max() if len(z) else np.inf
    if not resid <= 1e-3 * max(1.0, float(np.abs(z).max())):
        raise ValueError("strategy 'ldm-s' needs the input of the model's last linear layer as the embeddings (the "
                         f"logits are not an affine function of these: residual {resid:.3g}); leave "
                         "`embedding_layer`/`embed` unset.")
    return torch.from_numpy(beta[:-1].T.copy()), torch.from_numpy(beta[-1].copy())


def hypotheses(k: int, d: int, *, seed: int = 0, per_sigma: int = 10) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The seeded perturbations ``(σ (H,), ΔW (H, K, d), Δb (H, K))`` of the last layer, H = 51 · per_sigma."""
    g = torch.Generator().manual_seed(int(np.random.default_rng([seed, 43]).integers(2 ** 31)))
    sig = torch.from_numpy(np.repeat(SIGMAS, per_sigma)).float()
    dw = torch.randn((len(sig), k, d), generator=g) * sig[:, None, None]
    db = torch.randn((len(sig), k), generator=g) * sig[:, None]
    return sig, dw, db


def least_disagree_metric(h: np.ndarray, w: torch.Tensor, b: torch.Tensor, *, seed: int = 0, per_sigma: int = 10,
                          reference_size: int = 2000, valid: Optional[np.ndarray] = None,
                          block_elements: int = 1 << 24) -> np.ndarray:
    """LDM ``(N,)`` of items with penultimate features ``h (N, d)`` under last layer ``w (K, d)``, ``b (K,)``.

    Rows that are not ``valid`` (or not finite) get NaN. The hypotheses (:func:`hypotheses`) and the
    reference sample depend on ``seed`` only; ``block_elements`` bounds the logits held at once
    (hypotheses × items × classes) and does not change the result.
    """
    h = np.asarray(h)
    n = len(h)
    ok = np.isfinite(h).all(axis=1) if valid is None else (np.asarray(valid, bool) & np.isfinite(h).all(axis=1))
    if not ok.any():
        return np.full(n, np.nan)
    x = torch.from_numpy(np.where(ok[:, None], h, 0.0)).float()
    w, b = w.float(), b.float()
    y0 = (x @ w.T + b).argmax(1)
    ok_idx = np.flatnonzero(ok)
    rng = np.random.default_rng([seed, 41])
    ref = torch.from_numpy(np.sort(rng.choice(ok_idx, size=min(reference_size, len(ok_idx)), replace=False)))
    k, d = w.shape
    _, dw, db = hypotheses(k, d, seed=seed, per_sigma=per_sigma)
    ldm = torch.ones(n, dtype=torch.float32)
    per_block = max(1, block_elements // max(1, n * k))  # a block's logits (H, N, K) stay within block_elements
    for s in range(0, len(dw), per_block):
        wh, bh = w[None] + dw[s:s + per_block], b[None] + db[s:s + per_block]
        yh = (torch.einsum("nd,hkd->hnk", x, wh) + bh[:, None, :]).argmax(2)  # (H, N)
        flip = yh != y0[None]
        rho = flip[:, ref].float().mean(1)  # (H,) disagreement of each hypothesis on the reference sample
        ldm = torch.minimum(ldm, torch.where(flip, rho[:, None], torch.ones(())).min(0).values)
    out = ldm.double().numpy()
    out[~ok] = np.nan
    return out
