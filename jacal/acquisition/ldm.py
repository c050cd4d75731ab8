"""The least disagree metric (LDM) and LDM-S seeding (Cho et al., ICLR 2024), vectorized.

LDM(x) is the smallest disagreement, over the pool, of a hypothesis that changes x's prediction: a
sample close to the decision boundary is flipped by hypotheses that barely differ from the model.
As in the reference code (ipcng00/LDM-S), hypotheses are the model with Gaussian noise of standard
deviation σ added to its last linear layer (weights and bias), σ on the grid ``10^(−5 : 0 : 0.1)``,
and the disagreement ``ρ(g, h)`` of a hypothesis is the share of a reference sample of the pool whose
prediction it changes; LDM(x) = min ρ over the hypotheses that flip x (1 for items none flips).

Two choices are jacal's: the reference draws hypotheses at each σ until ten in a row improve no
item, here a fixed ``per_sigma`` hypotheses per σ are drawn at once (seeded; 10 by default, the
reference's minimum) so the whole estimate is a few batched matrix products; and the reference
sample is a seeded subset of the pool (``reference_size`` items).

LDM-S seeding (the reference's ``query_by_LDMS``): items sorted by LDM, ``q`` = the k-th smallest,
weights ``γ = exp(−max(LDM − q, 0) / q)`` with the tail's weights rescaled to sum to k and capped at 1;
the first pick is the smallest LDM, then each pick is drawn with probability ∝ (γ · D)², D the cosine
distance of the item's penultimate features to the nearest pick so far.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["last_linear", "hypotheses", "least_disagree_metric", "ldm_seeding"]

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


def ldm_seeding(ldm: np.ndarray, h: np.ndarray, k: int, candidates: np.ndarray, *, seed: int = 0,
                weights: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """LDM-S picks ``(k,)`` among ``candidates`` and each pick's sampling weight ``γ·D`` (module docstring).

    ``weights (N,)``: non-negative item weights ``w`` (e.g. ``P(in | x)`` on an open pool): later picks
    are drawn ∝ ``w·(γ·D)²`` instead of ``(γ·D)²``."""
    rng = np.random.default_rng(seed)
    cand = np.asarray(candidates, dtype=np.int64)
    lv = ldm[cand]
    order = np.argsort(lv, kind="stable")
    cand, lv = cand[order], lv[order]
    q = lv[min(k, len(lv) - 1)]
    if q <= 0:
        pos = lv[lv > 0]
        q = pos.min() if len(pos) else 1.0
    gamma = np.exp(-np.maximum(lv - q, 0.0) / q)
    tail = gamma[k:].sum()
    if tail > 0:
        gamma[k:] *= k / tail
    gamma = np.minimum(gamma, 1.0)
    f = torch.from_numpy(np.ascontiguousarray(h[cand], dtype=np.float32))
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    wc = None if weights is None else torch.from_numpy(np.nan_to_num(np.asarray(weights, dtype=np.float64)[cand], nan=0.0))
    first = 0 if wc is None else int(torch.argmax(wc * torch.from_numpy(gamma)))  # the smallest LDM (weighted)
    picks = [first]
    dist = torch.clamp(1.0 - f @ f[first], min=0.0).double()
    dist[dist < 1e-5] = 0.0
    weights = [float(gamma[first])]
    gam = torch.from_numpy(gamma)
    while len(picks) < k:
        px = (gam * dist) ** 2
        if wc is not None:
            px = px * wc
        px[picks] = 0.0
        total = float(px.sum())
        if total <= 0:  # every remaining item sits on a pick: take the next by LDM order
            nxt = next(i for i in range(len(cand)) if i not in set(picks))
        else:
            nxt = int(rng.choice(len(cand), p=(px / total).numpy()))
        weights.append(float(gam[nxt] * dist[nxt]))
        picks.append(nxt)
        dn = torch.clamp(1.0 - f @ f[nxt], min=0.0).double()
        dn[dn < 1e-5] = 0.0
        dist = torch.minimum(dist, dn)
    return cand[np.array(picks)], np.array(weights)
