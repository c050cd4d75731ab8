"""The array core of every confidence estimator: arrays in, ``(N,)`` confidences out.

Inputs per item (float64): ``logits z (N, K)``; for some methods the penultimate ``embeddings e
(N, d)``, the logits' Jacobian Gram ``Γ = J Jᵀ (N, K, K)`` with ``J = ∂z/∂x``
(:func:`jacal.sensitivity.jacobian_gram`), the softmax Jacobian norm ``jacobian (N,)``
(:func:`jacal.jacobian_norm`) or the ``odin_logits (N, K)`` at ODIN's perturbed input. With
``p = softmax(z)``, ``a = argmax p``, ``b`` the runner-up, higher confidence = more likely correct:

==================== ==================================================================== ==========
method               confidence                                                           fitted on
==================== ==================================================================== ==========
max-softmax          ``p_a``                                                              –
entropy              ``Σ p log p`` (negated entropy)                                      –
margin               ``p_a − p_b``                                                        –
max-logit            ``z_a`` (Hendrycks et al. 2022)                                      –
energy               ``log Σ exp z`` (negated energy at T = 1; Liu et al. 2020)           –
temperature          ``max softmax(z / T)``, T minimising the NLL (Guo et al. 2017)       held-out
odin                 ``max softmax(z̃ / T)`` at ``x̃ = x + ε sign ∇ₓ log max softmax(z/T)``  –
                     (Liang et al. 2018; T = 1000, ε = 0.002 for [0, 1] inputs, not tuned)
mahalanobis          ``−min_k (e − μ_k)ᵀ Σ⁻¹ (e − μ_k)``, class means and a shared         training
                     Ledoit–Wolf covariance (Lee et al. 2018)
knn                  ``−‖ê − ê₍k₎‖``: distance to the k-th nearest L2-normalised training  training
                     embedding (Sun et al. 2022; k = 10)
jacobian             ``−log ‖∂p/∂x‖_F`` (the paper's metric)                              –
jacobian-logits      ``−log ‖∂z/∂x‖_F = −½ log tr Γ`` (does not saturate with p)          –
jacobian-residual    ``log ‖∂p/∂x‖_F − ŷ``, ŷ a least-squares fit of log ‖∂p/∂x‖ on        held-out
                     ``[1, log(1 − p_a), log p_b]``: the sensitivity the softmax does not
                     predict. Sign from measurement (MNIST, MLP and CNN): at a given
                     softmax, *more* sensitive inputs are more often correct and in
                     distribution (a network responds strongly to inputs its features fit)
jacobian-boundary    ``log min_{c≠a} (z_a − z_c) / ‖∇ₓ(z_a − z_c)‖``, the first-order      –
                     (DeepFool) input-space distance to the nearest decision boundary,
                     ``‖∇ₓ(z_a − z_c)‖² = Γ_aa + Γ_cc − 2Γ_ac``
jacobian-noise       ``p̃_a``, the softmax averaged over Gaussian input noise ε ~ N(0, σ²I)  held-out
                     with the model linearised, ``z(x + ε) ≈ z + Jε``, by the probit
                     approximation ``p̃ = softmax(z_k / √(1 + π/8 · σ² ‖∇ₓ(z_k − z̄)‖²))``
                     (gradients of the centred logits, which the softmax sees); σ²
                     minimises the held-out NLL (σ² → 0 gives max-softmax)
combined             P(correct) by logistic regression on the standardised                held-out
                     ``[log(1 − p_a), z_a − z_b, z_a, log ‖∂z/∂x‖, log ‖∂p/∂x‖,
                     log boundary distance]``
==================== ==================================================================== ==========

``log(1 − p_a)`` and ``log ‖∂p/∂x‖`` are computed in log space (masked log-sum-exp and a softmax
map ``T = diag(p) − p pᵀ`` scaled by its largest entry), so they stay finite and exact when ``p`` is
one-hot to float64 precision. Fitted state is a dict of numpy arrays (:func:`fit_confidence`).

Example:
    >>> import numpy as np
    >>> from jacal.confidence import confidence_from
    >>> z = np.array([[2.0, 0.0, 0.0], [0.5, 0.4, 0.0]])
    >>> confidence_from(z, method="energy").round(2)  # log Σ exp z
    array([2.24, 1.42])
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from jacal._internal.validation import check_choice, check_positive_int

__all__ = ["METHODS", "FITTED", "NEEDS_LABELS", "PROBABILISTIC", "JACOBIAN_METHODS", "inputs_of", "confidence_from",
           "fit_confidence", "jacobian_features", "softmax_features"]

METHODS = ("max-softmax", "entropy", "margin", "max-logit", "energy", "temperature", "odin", "mahalanobis", "knn",
           "jacobian", "jacobian-logits", "jacobian-residual", "jacobian-boundary", "jacobian-noise", "combined")
FITTED = {"temperature": "held-out", "mahalanobis": "training", "knn": "training", "jacobian-residual": "held-out",
          "jacobian-noise": "held-out", "combined": "held-out"}
NEEDS_LABELS = ("temperature", "mahalanobis", "jacobian-noise", "combined")
PROBABILISTIC = ("max-softmax", "temperature", "jacobian-noise", "combined")
JACOBIAN_METHODS = ("jacobian", "jacobian-logits", "jacobian-residual", "jacobian-boundary", "jacobian-noise", "combined")
_GRAM = ("jacobian-logits", "jacobian-residual", "jacobian-boundary", "jacobian-noise", "combined")
_TINY = 1e-300


def inputs_of(method: str) -> frozenset:
    """What :func:`confidence_from` needs besides the logits: a subset of ``{"embeddings", "gram",
    "jacobian", "odin_logits"}``."""
    check_choice("method", method, METHODS)
    if method in ("mahalanobis", "knn"):
        return frozenset({"embeddings"})
    if method in _GRAM:
        return frozenset({"gram"})
    if method == "jacobian":
        return frozenset({"jacobian"})
    return frozenset({"odin_logits"}) if method == "odin" else frozenset()


def _logsumexp(z: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(z, axis=axis, keepdims=True)
    return (m + np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True))).squeeze(axis)


def _softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(z - _logsumexp(z)[:, None])


def _array(name: str, a, ndim: int, n: Optional[int] = None) -> np.ndarray:
    if a is None:
        raise ValueError(f"this method needs `{name}`, got None.")
    arr = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float64)
    if arr.ndim != ndim or (n is not None and arr.shape[0] != n):
        want = "(N, K)" if ndim == 2 else "(N, K, K)" if ndim == 3 else "(N,)"
        raise ValueError(f"Expected `{name}` of shape {want}" + (f" with N={n}" if n is not None else "")
                         + f", got {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` contains NaN or Inf.")
    return arr


def _logits(logits) -> np.ndarray:
    z = _array("logits", logits, 2)
    if z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"Expected `logits` (N ≥ 1, K ≥ 2), got {z.shape}.")
    return z


def _gram(z: np.ndarray, gram) -> np.ndarray:
    g = _array("gram", gram, 3, len(z))
    if g.shape[1:] != (z.shape[1], z.shape[1]):
        raise ValueError(f"Expected `gram` of shape (N, K, K) with K={z.shape[1]}, got {g.shape}.")
    return g


def softmax_features(logits) -> Dict[str, np.ndarray]:
    """Per item: ``log1m_pmax = log(1 − p_a)``, ``log_p2 = log p_b``, ``gap = z_a − z_b``, ``max_logit``
    and ``lse = log Σ exp z`` (all ``(N,)``, exact in log space)."""
    z = _logits(logits)
    lse = _logsumexp(z)
    a = z.argmax(1)
    rows = np.arange(len(z))
    others = z.copy()
    others[rows, a] = -np.inf
    b = others.argmax(1)
    return {"log1m_pmax": _logsumexp(others) - lse, "log_p2": z[rows, b] - lse, "gap": z[rows, a] - z[rows, b],
            "max_logit": z[rows, a], "lse": lse}


def _log_softmax_jacobian(z: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """``log ‖T J‖_F = log s + ½ log tr((T/s) Γ (T/s)ᵀ)`` with the entries of ``T`` built in log space."""
    n, k = z.shape
    lse = _logsumexp(z)
    logp = z - lse[:, None]
    masked = np.broadcast_to(z[:, None, :], (n, k, k)).copy()
    masked[:, np.arange(k), np.arange(k)] = -np.inf
    log1m = _logsumexp(masked) - lse[:, None]  # log(1 − p_i), exact when p_i ≈ 1
    log_t = logp[:, :, None] + logp[:, None, :]  # |T_ij| = p_i p_j off the diagonal
    log_t[:, np.arange(k), np.arange(k)] = logp + log1m  # T_ii = p_i (1 − p_i)
    sign = -np.ones((k, k))
    np.fill_diagonal(sign, 1.0)
    log_s = log_t.max(axis=(1, 2))
    t = sign * np.exp(log_t - log_s[:, None, None])
    sq = np.einsum("nij,njk,nik->n", t, gram, t)
    return log_s + 0.5 * np.log(np.maximum(sq, _TINY))


def jacobian_features(logits, gram) -> Dict[str, np.ndarray]:
    """From the logits ``(N, K)`` and the Gram ``Γ (N, K, K)``: ``log_jz = log ‖∂z/∂x‖_F``,
    ``log_js = log ‖∂p/∂x‖_F`` and ``log_boundary = log min_{c≠a} (z_a − z_c) / ‖∇ₓ(z_a − z_c)‖``."""
    z = _logits(logits)
    g = _gram(z, gram)
    rows = np.arange(len(z))
    a = z.argmax(1)
    diag = np.diagonal(g, axis1=1, axis2=2)
    gap_sq = diag[rows, a][:, None] + diag - 2 * g[rows, a, :]  # ‖∇(z_a − z_c)‖², (N, K)
    log_dist = np.log(np.maximum(z[rows, a][:, None] - z, _TINY)) - 0.5 * np.log(np.maximum(gap_sq, _TINY))
    log_dist[rows, a] = np.inf
    return {"log_jz": 0.5 * np.log(np.maximum(diag.sum(1), _TINY)), "log_js": _log_softmax_jacobian(z, g),
            "log_boundary": log_dist.min(1)}


def _log_js(z: np.ndarray, gram, jacobian) -> np.ndarray:
    if jacobian is not None:
        return np.log(np.maximum(_array("jacobian", jacobian, 1, len(z)), _TINY))
    return jacobian_features(z, gram)["log_js"]


def _noise_probs(z: np.ndarray, gram, sigma2: float) -> np.ndarray:
    """The probit-approximated softmax ``(N, K)`` of ``z + Jε``, ε ~ N(0, σ²I), from the centred Gram."""
    g = _gram(z, gram)
    k = z.shape[1]
    centring = np.eye(k) - 1.0 / k
    var = np.diagonal(centring @ g @ centring, axis1=1, axis2=2)  # ‖∇(z_k − z̄)‖²
    return _softmax(z / np.sqrt(1.0 + np.pi / 8.0 * sigma2 * np.maximum(var, 0.0)))


def _nll(p: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(labels)), labels], _TINY))))


def _residual_design(sf: Dict[str, np.ndarray]) -> np.ndarray:
    return np.c_[np.ones_like(sf["log1m_pmax"]), sf["log1m_pmax"], sf["log_p2"]]


def _combined_design(z: np.ndarray, gram) -> np.ndarray:
    sf, jf = softmax_features(z), jacobian_features(z, gram)
    return np.c_[sf["log1m_pmax"], sf["gap"], sf["max_logit"], jf["log_jz"], jf["log_js"], jf["log_boundary"]]


def _normalized(e: np.ndarray) -> np.ndarray:
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def _kth_distance(q: np.ndarray, bank: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Distance ``(N,)`` from each unit row of ``q`` to its k-th nearest unit row of ``bank`` (brute force).

    Neighbours are ranked by float32 cosine similarity (``‖a − b‖² = 2 − 2 aᵀb`` for unit vectors), one
    matrix product and top-k per chunk; the k-th neighbour's distance is then computed exactly in float64.
    """
    import torch

    k = min(k, len(bank))
    b = torch.from_numpy(bank)
    idx = np.concatenate([(torch.from_numpy(q[s:s + chunk].astype(np.float32)) @ b.T).topk(k, dim=1).indices[:, -1].numpy()
                          for s in range(0, len(q), chunk)])
    return np.linalg.norm(q - bank[idx].astype(np.float64), axis=1)


def _state(state, method: str, keys, z: np.ndarray, embeddings=None) -> Dict[str, np.ndarray]:
    if state is None or any(k not in state for k in keys):
        raise ValueError(f"the {method!r} confidence is not fitted: fit it on {FITTED[method]} data first "
                         f"(ConfidenceEstimator.learn or fit_confidence).")
    st = {k: np.asarray(state[k]) for k in keys}
    if "n_classes" in state and int(np.asarray(state["n_classes"])) != z.shape[1]:
        raise ValueError(f"the {method!r} confidence was fitted for {int(np.asarray(state['n_classes']))} classes, "
                         f"got logits with {z.shape[1]}.")
    if embeddings is not None:
        d = st["means" if method == "mahalanobis" else "bank"].shape[1]
        if embeddings.shape[1] != d:
            raise ValueError(f"the {method!r} confidence was fitted on {d}-dimensional embeddings, got "
                             f"{embeddings.shape[1]}.")
    return st


def confidence_from(logits, *, method: str = "max-softmax", gram=None, embeddings=None, jacobian=None,
                    odin_logits=None, state: Optional[Dict[str, np.ndarray]] = None,
                    odin_temperature: float = 1000.0) -> np.ndarray:
    """Confidence ``(N,)`` of each prediction from arrays (see the module docstring for each method).

    Args:
        logits: ``(N, K)``.
        method: one of :data:`METHODS`.
        gram: ``(N, K, K)`` logits-Jacobian Gram, for the Jacobian methods but ``"jacobian"``.
        embeddings: ``(N, d)`` penultimate features, for ``"mahalanobis"`` and ``"knn"``.
        jacobian: ``(N,)`` ‖∂p/∂x‖_F for ``"jacobian"`` and ``"jacobian-residual"`` (both take ``gram``
            instead when it is None).
        odin_logits: ``(N, K)`` logits at ODIN's perturbed inputs, for ``"odin"``.
        state: what :func:`fit_confidence` returned, for the fitted methods.
        odin_temperature: ODIN's T.
    """
    check_choice("method", method, METHODS)
    z = _logits(logits)
    p = _softmax(z)
    if method == "max-softmax":
        return p.max(1)
    if method == "entropy":
        return np.sum(np.where(p > 0, p * np.log(np.maximum(p, _TINY)), 0.0), axis=1)
    if method == "margin":
        top2 = np.sort(p, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]
    if method in ("max-logit", "energy"):
        return softmax_features(z)["max_logit" if method == "max-logit" else "lse"]
    if method == "temperature":
        t = float(_state(state, method, ("temperature",), z)["temperature"])
        return _softmax(z / t).max(1)
    if method == "odin":
        zo = _array("odin_logits", odin_logits, 2, len(z))
        return _softmax(zo / odin_temperature).max(1)
    if method == "mahalanobis":
        e = _array("embeddings", embeddings, 2, len(z))
        st = _state(state, method, ("means", "precision"), z, e)
        ep = e @ st["precision"]
        q = np.sum(ep * e, 1)[:, None] - 2 * ep @ st["means"].T + np.sum(st["means"] @ st["precision"] * st["means"], 1)
        return -q.min(1)
    if method == "knn":
        e = _array("embeddings", embeddings, 2, len(z))
        st = _state(state, method, ("bank", "k"), z, e)
        return -_kth_distance(_normalized(e), np.asarray(st["bank"], dtype=np.float32), int(st["k"]))
    if method == "jacobian":
        return -_log_js(z, gram, jacobian)
    if method == "jacobian-logits":
        return -jacobian_features(z, gram)["log_jz"]
    if method == "jacobian-boundary":
        return jacobian_features(z, gram)["log_boundary"]
    if method == "jacobian-residual":
        st = _state(state, method, ("coef",), z)
        return _log_js(z, gram, jacobian) - _residual_design(softmax_features(z)) @ st["coef"]
    if method == "jacobian-noise":
        st = _state(state, method, ("sigma2",), z)
        return _noise_probs(z, gram, float(st["sigma2"]))[np.arange(len(z)), z.argmax(1)]
    st = _state(state, method, ("mean", "scale", "coef", "intercept"), z)
    u = (_combined_design(z, gram) - st["mean"]) / st["scale"] @ st["coef"] + float(st["intercept"])
    return 1.0 / (1.0 + np.exp(-u))


def _labels(y, n: int, k: int) -> np.ndarray:
    if y is None:
        raise ValueError("this method is fitted on labeled data: pass `y`.")
    arr = np.asarray(y.cpu() if hasattr(y, "cpu") else y).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"Expected one label per item: {n} items, {len(arr)} labels.")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= k:
        raise ValueError(f"Expected integer labels in [0, {k - 1}], got {arr.dtype} in "
                         f"[{arr.min()}, {arr.max()}].")
    return arr.astype(np.int64)


def fit_confidence(logits, y=None, *, method: str, gram=None, embeddings=None, jacobian=None, k: int = 10,
                   seed: int = 0) -> Dict[str, np.ndarray]:
    """Fit a method's state from arrays; ``{}`` for methods that need no fitting.

    Args:
        logits: ``(N, K)`` of the fitting data: held-out for ``temperature``, ``jacobian-residual``,
            ``jacobian-noise`` and ``combined``; the training data for ``mahalanobis`` and ``knn``.
        y: ``(N,)`` true labels (``temperature``, ``mahalanobis``, ``jacobian-noise``, ``combined``).
        method: one of :data:`METHODS`.
        gram, embeddings, jacobian: as for :func:`confidence_from`.
        k: the neighbour rank for ``knn``.
        seed: seeds the logistic regression of ``combined``.

    Returns:
        A dict of numpy arrays (with ``n_classes``), what :func:`confidence_from` takes as ``state``.
    """
    check_choice("method", method, METHODS)
    z = _logits(logits)
    n, n_classes = z.shape
    out: Dict[str, np.ndarray] = {"n_classes": np.asarray(n_classes)}
    if method not in FITTED:
        return {}
    if method == "temperature":
        from scipy.optimize import minimize_scalar

        labels = _labels(y, n, n_classes)
        res = minimize_scalar(lambda log_t: _nll(_softmax(z / np.exp(log_t)), labels),
                              bounds=(np.log(0.01), np.log(100.0)), method="bounded", options={"xatol": 1e-6})
        out["temperature"] = np.asarray(float(np.exp(res.x)))
    elif method == "jacobian-noise":
        from scipy.optimize import minimize_scalar

        labels = _labels(y, n, n_classes)
        g = _gram(z, gram)
        res = minimize_scalar(lambda ls: _nll(_noise_probs(z, g, float(np.exp(ls))), labels),
                              bounds=(np.log(1e-8), np.log(1e3)), method="bounded", options={"xatol": 1e-4})
        out["sigma2"] = np.asarray(float(np.exp(res.x)))
    elif method == "mahalanobis":
        from sklearn.covariance import LedoitWolf

        e = _array("embeddings", embeddings, 2, n)
        labels = _labels(y, n, n_classes)
        classes = np.unique(labels)
        means = np.stack([e[labels == c].mean(0) for c in classes])
        centred = e - means[np.searchsorted(classes, labels)]
        out["means"] = means
        out["precision"] = LedoitWolf(assume_centered=True).fit(centred).precision_
    elif method == "knn":
        e = _array("embeddings", embeddings, 2, n)
        out["bank"] = _normalized(e).astype(np.float32)
        out["k"] = np.asarray(min(check_positive_int("k", k), n))
    elif method == "jacobian-residual":
        design = _residual_design(softmax_features(z))
        out["coef"] = np.linalg.lstsq(design, _log_js(z, gram, jacobian), rcond=None)[0]
    else:  # combined
        from sklearn.linear_model import LogisticRegression

        correct = z.argmax(1) == _labels(y, n, n_classes)
        if correct.all() or not correct.any():
            raise ValueError("cannot fit the combined estimator: the held-out split has no errors (or no correct "
                             "predictions); use a larger split or method='max-softmax'.")
        x = _combined_design(z, gram)
        mean, scale = x.mean(0), np.maximum(x.std(0), 1e-12)
        lr = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit((x - mean) / scale, correct)
        out.update(mean=mean, scale=scale, coef=lr.coef_[0].astype(np.float64),
                   intercept=np.asarray(float(lr.intercept_[0])))
    return out
