"""The feature pass: one pass of a model over a pool, computing what strategies and estimators read.

Every acquisition strategy (:class:`jacal.acquisition.Strategy`) and the confidence features read a
:class:`PoolFeatures`, computed by :func:`extract_features`: class probabilities always, and on
request (a strategy's ``needs``, the members of :class:`Need`) embeddings, Jacobian norms, Jacobian
and boundary embeddings, MC-dropout samples or their BALD score, logits, the least disagree metric,
and what the confidence estimators read (the logits' Jacobian Gram, ODIN's logits). The pool is read one
``batch_size`` chunk at a time (a memory-mapped ``.npy`` stays on disk); items with NaN/Inf values
get NaN rows and ``finite[i] = False``.

    >>> import torch, jacal
    >>> from jacal.features import Need, extract_features
    >>> model = jacal.mlp(64, 10, width=16, depth=1, seed=0).eval()
    >>> f = extract_features(model, torch.rand(100, 64), need={Need.JACOBIAN})
    >>> f.probs.shape, f.jacobian.shape, f.embeddings is None
    ((100, 10), (100,), True)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Iterator, List, Optional, Set

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from jacal._internal.scores import bald as bald_score
from jacal._internal.scores import last_linear, least_disagree_metric
from jacal._internal.validation import as_input_tensor, call_model, check_logits, nonfinite_rows
from jacal.models._compiled import dropout_layers, embedding_runner, from_portable, has_dropout, is_compiled, mc_runner
from jacal.models._utils import model_dtype, parse_mlp, prepared, resolve_device
from jacal.sensitivity.embedding import JacobianEmbedder
from jacal.sensitivity.gram import jacobian_gram
from jacal.sensitivity.jacobian import jacobian_norm, logits_with_graph

JACOBIAN_SKETCH_DIM = 64
EXACT_BOUNDARY_DIM = 1024
#: MC dropout runs its samples as one batch of T stacked copies of a chunk, up to this many rows
#: per forward pass (more samples: several passes).
MC_BATCH_ROWS = 8192

__all__ = ["JACOBIAN_SKETCH_DIM", "Need", "NEEDS", "PoolFeatures", "extract_features"]


class Need(str, Enum):
    """What a strategy can ask the feature pass for (its ``needs``); probabilities always come.

    Members are strings (``Need.JACOBIAN == "jacobian"``), so a ``needs`` set may hold either.
    """

    EMBEDDINGS = "embeddings"  #: (N, d) penultimate features (or ``embedding_layer`` / ``embed``)
    JACOBIAN = "jacobian"  #: (N,) ‖∂softmax/∂x‖_F
    JACOBIAN_EMBEDDING = "jacobian-embedding"  #: (N, (K−1)·r) sketched softmax Jacobians
    BOUNDARY_EMBEDDING = "boundary-embedding"  #: (N, r) ∇(z_a − z_b)/(z_a − z_b), top-2 logits a, b
    MC = "mc"  #: (T, N, K) every MC-dropout sample
    BALD = "bald"  #: (N,) the BALD score of the MC-dropout samples (the samples are not kept)
    LOGITS = "logits"  #: (N, K) float64 logits
    IN_DISTRIBUTION = "in-distribution"  #: (N,) in [0, 1]: labelable-item score from the labeled set (acquire)
    LDM = "ldm"  #: (N,) least disagree metric (LDM-S): smallest last-layer perturbation that flips the item
    GRAM = "gram"  #: (N, K, K) J Jᵀ of the logits' Jacobian (confidence estimators)
    ODIN_LOGITS = "odin-logits"  #: (N, K) float64 logits at ODIN's perturbed input (confidence estimators)

    __str__ = str.__str__


#: Every name :func:`extract_features` understands.
NEEDS = frozenset(n.value for n in Need)


def _check_needs(need: Any) -> Set[str]:
    if isinstance(need, str) or not hasattr(need, "__iter__"):
        raise TypeError(f"Expected `need` to be a set of names from {sorted(NEEDS)}, got {need!r}.")
    need = {str(n) for n in need}
    unknown = need - NEEDS
    if unknown:
        raise ValueError(f"Expected `need` to name features among {sorted(NEEDS)}, got {sorted(unknown)}.")
    return need


@dataclass
class PoolFeatures:
    """Per-item model outputs for a pool of N items (CPU; NaN rows for non-finite items)."""

    probs: np.ndarray                       # (N, K)
    finite: np.ndarray                      # (N,) bool
    embeddings: Optional[np.ndarray] = None  # (N, d) penultimate layer
    jacobian: Optional[np.ndarray] = None    # (N,)
    jacobian_embedding: Optional[np.ndarray] = None  # (N, R·r) sketched Jacobians (see jacobian_embedding)
    boundary_embedding: Optional[np.ndarray] = None  # (N, r) ∇(z_a − z_b) / (z_a − z_b), top-2 logits a, b
    mc_probs: Optional[np.ndarray] = None    # (T, N, K) MC-dropout probabilities ("mc")
    bald: Optional[np.ndarray] = None        # (N,) their BALD score, chunk by chunk ("bald")
    logits: Optional[np.ndarray] = None      # (N, K) float64 ("logits")
    in_distribution: Optional[np.ndarray] = None  # (N,) in [0, 1], set by acquire ("in-distribution")
    in_distribution_floor: float = 0.0       # the score 95% of labeled in-set items reach (leave-one-out)
    in_set: Optional[np.ndarray] = None      # (N,) calibrated P(in | x) on an open pool, set by acquire; None: closed
    ldm: Optional[np.ndarray] = None         # (N,) least disagree metric ("ldm")
    gram: Optional[np.ndarray] = None        # (N, K, K) float64 J Jᵀ of the logits' Jacobian ("gram")
    odin_logits: Optional[np.ndarray] = None  # (N, K) float64 logits at ODIN's input ("odin-logits")


def _first(batch: Any) -> Any:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def pool_length(pool: Any) -> int:
    if isinstance(pool, (torch.Tensor, np.ndarray)):
        return len(pool)
    if isinstance(pool, DataLoader):
        return len(pool.dataset)
    if isinstance(pool, Dataset) and hasattr(pool, "__len__"):
        return len(pool)
    raise TypeError(f"Expected `pool` to be a torch.Tensor, numpy.ndarray, torch Dataset or DataLoader, got {type(pool).__name__}.")


def iter_pool(pool: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Chunks ``(b, ...)`` of the pool, in order."""
    if isinstance(pool, (torch.Tensor, np.ndarray)):
        as_input_tensor("pool", np.array(pool[:0]) if isinstance(pool, np.ndarray) else pool[:0],
                        min_ndim=2)  # type and shape checks, on no data
        for s in range(0, len(pool), batch_size):  # converted chunk by chunk: a memory-mapped pool stays on disk
            chunk = pool[s:s + batch_size]
            if isinstance(chunk, np.ndarray) and not chunk.flags.writeable:
                chunk = np.array(chunk)  # torch wants writable memory; one chunk's copy
            yield as_input_tensor("pool", chunk, min_ndim=2)
        return
    if isinstance(pool, DataLoader):
        if not isinstance(pool.sampler, SequentialSampler) and pool.batch_sampler is not None \
                and not isinstance(getattr(pool.batch_sampler, "sampler", None), SequentialSampler):
            raise ValueError("`pool` DataLoader shuffles its items, so indices would not name items; use shuffle=False.")
        loader = pool
    else:
        loader = DataLoader(pool, batch_size=batch_size, shuffle=False)
    for batch in loader:
        yield as_input_tensor("pool", _first(batch), min_ndim=2)


def _warn_if_pixels_0_255(x: torch.Tensor) -> None:
    """Warn when a float pool holds whole numbers in [0, 255] beyond 1: pixels that were cast to float
    without the scaling to [0, 1] that image folders and ``uint8`` pools get."""
    if x.numel() == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and 1 < hi <= 255 and bool((x == x.round()).all()):
        warnings.warn(f"`pool` holds whole numbers in [{lo:g}, {hi:g}]: if these are pixels, pass them as uint8 or "
                      "divide by 255 (image folders and uint8 pools are read as [0, 1]).", UserWarning, stacklevel=4)


def _mc_split(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]) -> tuple:
    """``(shared, rest)`` with ``forward = rest ∘ shared``: for an eager ``nn.Sequential`` (its own
    forward), the layers before its first dropout, which are the same for every MC sample and so
    run once per chunk, and the layers from there on; for any other model, the identity and
    ``forward``."""
    if (isinstance(model, nn.Sequential) and forward is model
            and type(model).forward is nn.Sequential.forward):
        mods = list(model)
        first = next((i for i, mod in enumerate(mods) if isinstance(mod, nn.modules.dropout._DropoutNd)), 0)
        if first > 0:
            return nn.Sequential(*mods[:first]), nn.Sequential(*mods[first:])
    return (lambda x: x), forward


def extract_features(model: nn.Module, pool: Any, *, need: Set[str], batch_size: int = 256, device=None,
                     mc_samples: int = 20, seed: int = 0, force_eval: bool = False,
                     progress: Optional[Callable[[int, int], Any]] = None, chunk_offset: int = 0,
                     sketch_dim: int = JACOBIAN_SKETCH_DIM, embedding_layer: Optional[str] = None,
                     embed: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                     odin_temperature: float = 1000.0, odin_epsilon: float = 0.002) -> PoolFeatures:
    """Compute what a strategy ``need``s (the members of :class:`Need`; probabilities always).

    ``"mc"`` keeps every MC-dropout sample (T·K numbers per item) for custom strategies; ``"bald"``
    keeps only their BALD score (what the ``bald`` strategy needs: memory independent of T).

    ``"jacobian-embedding"``: each item's softmax Jacobian (K−1 rows) times one fixed Gaussian
    sketch ``(D, sketch_dim)`` seeded by ``seed`` (the same for every chunk and shard), flattened to
    ``(N, (K−1)·sketch_dim)`` float32: distances between items approximate ‖J(x) − J(x′)‖_F (see
    :func:`jacal.sensitivity.jacobian_embedding`, exact without a sketch).

    ``"boundary-embedding"``: ``v(x) = ∇ₓ(z_a − z_b) / (z_a − z_b)`` for the top two logits ``a, b``,
    so ``1/‖v(x)‖`` is the first-order (DeepFool) distance from ``x`` to its nearest decision
    boundary and ``v``'s direction is that boundary's normal. Exact when it needs at most 1,024
    numbers per item (fully-connected nets: ``min(h₁, D)``, any other model: ``D``), which covers
    MNIST-sized inputs in every model format alike; sketched to ``4·sketch_dim`` numbers otherwise.

    ``"embeddings"``: by default the input of the model's last linear layer (penultimate features),
    found in every model format (see :mod:`jacal.models._compiled`); ``embedding_layer="name"``
    takes the output of that layer instead, and ``embed(x) -> (b, d)`` computes them any other way.

    ``"ldm"``: the least disagree metric (:mod:`jacal.acquisition.ldm`) from this pass's embeddings and
    logits. ``"gram"``: ``J Jᵀ`` of each item's logit Jacobian (:func:`jacal.sensitivity.jacobian_gram`);
    ``"odin-logits"``: the logits at ODIN's input (:func:`odin_logits`, ``odin_temperature``,
    ``odin_epsilon``). ``"in-distribution"``: with no labeled set here every item scores 1; :func:`jacal.acquire`
    sets the real score from ``labeled`` and ``out_of_set``.

    ``chunk_offset``: index of this pool's first chunk within a larger pool (for sharded runs, so
    MC-dropout seeds, drawn per chunk, match an unsharded run).

    Inputs follow :func:`jacal._internal.validation.as_input_tensor`: floats as given, ``uint8`` pixels
    scaled to [0, 1], other integers refused (see :func:`jacal.acquire`'s ``pool``).
    """
    need = _check_needs(need)
    if "ldm" in need:  # computed from the pass's embeddings and logits at its end
        need |= {"embeddings", "logits"}
    n = pool_length(pool)
    if n == 0:
        raise ValueError("`pool` is empty: nothing to score.")
    dev = resolve_device(device, model)
    out: dict = {}  # per-item arrays, allocated once at the first chunk and filled in place

    def put(name: str, value: np.ndarray, start: int, axis: int = 0) -> None:
        if name not in out:
            shape = list(value.shape)
            shape[axis] = n
            out[name] = np.empty(shape, dtype=value.dtype)
        index = [slice(None)] * value.ndim
        index[axis] = slice(start, start + value.shape[axis])
        out[name][tuple(index)] = value

    done = 0
    with prepared(model, device=dev, force_eval=force_eval) as m:
        dtype = model_dtype(m)
        runner = embedding_runner(m, embedding_layer) if "embeddings" in need and embed is None else None
        embedders: dict = {}

        def logits_and_embeddings(x: torch.Tensor) -> tuple:  # (logits, embeddings or None)
            if runner is not None:
                return runner(x)
            return m(x), (embed(x) if embed is not None and "embeddings" in need else None)

        def boundary_embedder(x: torch.Tensor) -> JacobianEmbedder:
            if "boundary" not in embedders:  # once per pass: one basis for every chunk
                parsed = parse_mlp(m)
                width = min(parsed.first_weight.shape) if parsed is not None else x[0].numel()
                exact = width <= EXACT_BOUNDARY_DIM  # the same rule for every model format
                embedders["boundary"] = JacobianEmbedder(m, x.shape[1:], output="logit_margin", seed=seed,
                                                         sketch_dim=None if exact else 4 * sketch_dim, device=dev)
            return embedders["boundary"]

        # a fully-connected net whose boundary embedding is wanted without other embeddings: its
        # closed-form backward runs the forward pass anyway, so the logits come from that one pass
        fused = "boundary-embedding" in need and "embeddings" not in need and parse_mlp(m) is not None
        for ci, chunk in enumerate(iter_pool(pool, batch_size)):
            bad = nonfinite_rows(chunk)
            if ci == 0 and chunk_offset == 0:
                _warn_if_pixels_0_255(chunk[~bad])
            x = torch.where(bad.reshape(-1, *([1] * (chunk.ndim - 1))), torch.zeros((), dtype=chunk.dtype), chunk)
            x = x.to(dev, dtype)
            be_raw = None
            if fused:
                be_raw, z = call_model(boundary_embedder(x).with_logits, x, what="pool items")
                emb = None
            else:
                with torch.no_grad():
                    z, emb = call_model(logits_and_embeddings, x, what="pool items")
            check_logits(z, len(x))
            keep = (~bad).cpu().numpy()
            p = torch.softmax(z.double(), dim=1).cpu().numpy()
            p[~keep] = np.nan
            put("probs", p, done)
            if "logits" in need:
                zl = z.detach().double().cpu().numpy()
                zl[~keep] = np.nan
                put("logits", zl, done)
            put("finite", keep, done)
            if "embeddings" in need:
                if not isinstance(emb, torch.Tensor) or emb.ndim < 1 or emb.shape[0] != len(x):
                    raise ValueError(f"Expected embeddings ({len(x)}, d) for a chunk of {len(x)} items, got "
                                     f"{getattr(emb, 'shape', type(emb).__name__)}.")
                e = emb.detach().reshape(len(x), -1).float().cpu().numpy()
                e[~keep] = np.nan
                put("embeddings", e, done)
            if "jacobian" in need:
                j = np.asarray(jacobian_norm(m, x, batch_size=len(x), device=dev).double().numpy())
                j[~keep] = np.nan
                put("jacobian", j, done)
            if "boundary-embedding" in need:
                if be_raw is None:
                    be_raw = boundary_embedder(x)(x)
                top2 = z.detach().double().topk(2, dim=1).values.cpu()
                gap = (top2[:, 0] - top2[:, 1]).clamp_min(1e-6)  # z_a − z_b, from the logits of this pass
                # the division in float64, one cast at the end (a float64 copy of the rows cost more than the pass)
                be = (be_raw.reshape(len(x), -1) * (1.0 / gap)[:, None].to(be_raw.dtype)).float().numpy()
                be[~keep] = np.nan
                put("boundary_embedding", be, done)
            if "jacobian-embedding" in need:
                if "softmax" not in embedders:
                    embedders["softmax"] = JacobianEmbedder(m, x.shape[1:], sketch_dim=sketch_dim, seed=seed,
                                                            device=dev)
                je = embedders["softmax"](x).reshape(len(x), -1).float().numpy()
                je[~keep] = np.nan
                put("jacobian_embedding", je, done)
            if "gram" in need:
                g = jacobian_gram(m, x, batch_size=len(x), device=dev).gram.numpy()
                g[~keep] = np.nan
                put("gram", g, done)
            if "odin-logits" in need:
                zo = odin_logits(m, x, temperature=odin_temperature, epsilon=odin_epsilon).double().cpu().numpy()
                zo[~keep] = np.nan
                put("odin_logits", zo, done)
            if "mc" in need or "bald" in need:
                drop = dropout_layers(m)
                states = [mod.training for mod in drop]
                shared, forward = _mc_split(m, mc_runner(m))
                samples = []
                with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.no_grad():
                    torch.manual_seed(seed * 1_000_003 + chunk_offset + ci)
                    for mod in drop:
                        mod.train()
                    try:  # the T samples batched: one pass over T stacked copies (each row its own dropout mask)
                        group = max(1, min(mc_samples, MC_BATCH_ROWS // max(1, len(x))))
                        hx = shared(x)  # the layers before the first dropout: the same for every sample
                        for g in range(0, mc_samples, group):
                            t = min(group, mc_samples - g)
                            # sample-major: rows s·b … s·b + b − 1 are sample s
                            z_mc = forward(hx.repeat(t, *([1] * (hx.ndim - 1))))
                            samples.append(torch.softmax(z_mc.double(), dim=1).reshape(t, len(x), -1).cpu().numpy())
                    finally:
                        for mod, st in zip(drop, states):
                            mod.train(st)
                s = np.concatenate(samples)
                if is_compiled(m) and len(s) > 1 and np.array_equal(s[0], s[-1]):
                    raise ValueError("strategy 'bald' needs dropout that is random in train mode, and this "
                                     "model's is fixed (a traced TorchScript model keeps the dropout it was "
                                     "traced with); save it with torch.jit.script, torch.export (.pt2) or as "
                                     "a jacal checkpoint.")
                s[:, ~keep] = np.nan
                if "mc" in need:
                    put("mc_probs", s, done, axis=1)
                if "bald" in need:  # one number per item: the T samples of a chunk are dropped here
                    b = np.full(len(x), np.nan)
                    b[keep] = bald_score(s[:, keep])
                    put("bald", b, done)
            done += len(x)
            if progress is not None:
                progress(done, n)
    if done != n:
        raise ValueError(f"`pool` yielded {done} items but reports a length of {n}.")
    if "in-distribution" in need:  # no labeled set here: every item labelable (acquire sets the real score)
        out["in_distribution"] = np.where(out["finite"], 1.0, np.nan)
    if "ldm" in need:
        w, b = last_linear(model, out["embeddings"], out["logits"])
        out["ldm"] = least_disagree_metric(out["embeddings"], w, b, seed=seed, valid=out["finite"])
    return PoolFeatures(probs=out["probs"], finite=out["finite"], embeddings=out.get("embeddings"),
                        jacobian=out.get("jacobian"), jacobian_embedding=out.get("jacobian_embedding"),
                        boundary_embedding=out.get("boundary_embedding"), mc_probs=out.get("mc_probs"),
                        bald=out.get("bald"), logits=out.get("logits"), in_distribution=out.get("in_distribution"),
                        ldm=out.get("ldm"), gram=out.get("gram"), odin_logits=out.get("odin_logits"))


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


def concat_features(parts: List[PoolFeatures]) -> PoolFeatures:
    """Join the features of consecutive shards."""
    def cat(name, axis=0):
        arrays = [getattr(p, name) for p in parts]
        return None if arrays[0] is None else np.concatenate(arrays, axis=axis)

    return PoolFeatures(probs=cat("probs"), finite=cat("finite"), embeddings=cat("embeddings"),
                        jacobian=cat("jacobian"), jacobian_embedding=cat("jacobian_embedding"),
                        boundary_embedding=cat("boundary_embedding"), mc_probs=cat("mc_probs", axis=1),
                        bald=cat("bald"), logits=cat("logits"), gram=cat("gram"), odin_logits=cat("odin_logits"))


def shard_job(model: nn.Module, shard: Any, need: Set[str], batch_size: int, device: Any, mc_samples: int, seed: int,
              force_eval: bool, chunk_offset: int, embedding_layer: Optional[str] = None,
              embed: Optional[Callable] = None) -> PoolFeatures:
    """One shard of a pool as a unit of work (a Ray task). Read-only shards (Ray's numpy arrays, a
    memory map) are copied chunk by chunk as they are scored."""
    return extract_features(from_portable(model), shard, need=need, batch_size=batch_size, device=device,
                            mc_samples=mc_samples, seed=seed, force_eval=force_eval, chunk_offset=chunk_offset,
                            embedding_layer=embedding_layer, embed=embed)
