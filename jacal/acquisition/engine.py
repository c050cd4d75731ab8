"""``acquire``: one feature pass over the pool (local or sharded over a backend), then a strategy's selection."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset, Subset

from jacal._internal.scores import last_linear, least_disagree_metric
from jacal._internal.validation import as_input_tensor, check_choice, check_positive_int, nonfinite_rows
from jacal.acquisition.reasons import explain
from jacal.acquisition.strategies import (Strategy, as_selection, class_floor_candidates, get_strategy,
                                          in_set_candidates, share_floor_candidates, weighs_in_set)
from jacal.confidence.openset import in_set_probability
from jacal.features import Need, PoolFeatures, concat_features, extract_features, has_dropout, pool_length, shard_job
from jacal.models._compiled import to_portable

__all__ = ["acquire", "AcquisitionResult", "OPEN_SET_LAYERS", "default_batch_size", "CHUNK_ELEMENTS", "MAX_DEFAULT_CHUNK"]

#: What ``acquire(open_set=...)`` does with the "none of these" answers (see
#: :mod:`jacal.acquisition.strategies`): ``"auto"`` runs each strategy under its own layer
#: (``share-floor`` for ``jacobian``, ``class-floor`` for the others); ``"share-floor"`` drops, per
#: predicted class, as many of the least likely labelable items as the calibrated ``P(in | x)``
#: expects out of the set there (once every class has a labeled item), and weighs the rest by
#: ``P(in | x)``; ``"class-floor"`` keeps, per
#: predicted class, the items at or above the class's median ``P(in | x)`` (and all with
#: ``P(in) >= 1/2``) as candidates; ``"weight"`` weighs every strategy's choice by ``P(in | x)``;
#: ``"off"`` ignores the answers (the items stay excluded from selection).
OPEN_SET_LAYERS = ("auto", "share-floor", "class-floor", "weight", "off")


@dataclass
class AcquisitionResult:
    """What :func:`acquire` chose.

    Attributes:
        indices: ``(k,)`` pool indices in rank order (first = label first).
        scores: ``(N,)`` every pool item's score under the strategy (NaN for invalid items).
        selection_scores: ``(k,)`` each pick's score at the moment it was picked (for diversity
            strategies: its distance to the batch so far).
        strategy: the strategy's name.
        invalid: indices of pool items with NaN/Inf features (never selected).
        predicted: ``(N,)`` predicted class per item (−1 for invalid items).
        confidence: ``(N,)`` max softmax probability per item (NaN for invalid items).
        reasons: ``k`` one-line reasons, one per pick in rank order (e.g. "between 3 and 8, 0.12
            from the boundary"), see :func:`jacal.acquisition.reasons.explain`.
        reason_fields: ``{field: (k,) array}``, the structured fields behind each reason
            (``runner_up``, ``margin``, ``boundary_distance``, ``mutual_information``...).
    """

    indices: np.ndarray
    scores: np.ndarray
    selection_scores: np.ndarray
    strategy: str
    invalid: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    reasons: List[str] = field(default_factory=list)
    reason_fields: Dict[str, np.ndarray] = field(default_factory=dict)


#: the default chunk holds at most this many input numbers (4M, 32 MB of float64)
CHUNK_ELEMENTS = 1 << 22
#: and at most this many items
MAX_DEFAULT_CHUNK = 256


def default_batch_size(pool: Any) -> int:
    """The default chunk of :func:`acquire` for ``pool``: ``CHUNK_ELEMENTS // (numbers per item)``,
    between 1 and :data:`MAX_DEFAULT_CHUNK` (a ``DataLoader`` pool is read in its own batches).

    >>> import torch
    >>> default_batch_size(torch.zeros(10, 1, 28, 28)), default_batch_size(torch.zeros(10, 3, 224, 224))
    (256, 27)
    """
    if isinstance(pool, (torch.Tensor, np.ndarray)):
        per_item = int(np.prod(pool.shape[1:]))
    elif isinstance(pool, Dataset) and hasattr(pool, "__len__") and len(pool) > 0:
        first = pool[0]
        first = first[0] if isinstance(first, (tuple, list)) else first
        per_item = int(np.prod(np.shape(first)))
    else:
        return MAX_DEFAULT_CHUNK
    return max(1, min(MAX_DEFAULT_CHUNK, CHUNK_ELEMENTS // max(per_item, 1)))


def _labeled_indices(labeled: Any, n: int) -> Optional[np.ndarray]:
    if labeled is None:
        return None
    arr = np.asarray(labeled.cpu() if isinstance(labeled, torch.Tensor) else labeled)
    if arr.ndim == 1 and (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"`labeled` indices must lie in [0, {n}), got values from {arr.min()} to {arr.max()}.")
        return np.unique(arr)
    return None


def _out_of_set(out_of_set: Any, labeled: Any, lab_idx: Optional[np.ndarray], n: int) -> np.ndarray:
    """``out_of_set`` checked: pool indices (``labeled`` as indices) or row positions in ``labeled``."""
    if out_of_set is None:
        return np.zeros(0, dtype=np.int64)
    arr = np.asarray(out_of_set.cpu() if isinstance(out_of_set, torch.Tensor) else out_of_set)
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"Expected `out_of_set` to be a 1-D array of integer indices, got shape {arr.shape} of {arr.dtype}.")
    arr = np.unique(arr.astype(np.int64))
    if arr.size == 0:
        return arr
    if labeled is None:
        raise ValueError("`out_of_set` names items of `labeled` (every item already sent to annotators); pass `labeled`.")
    m = n if lab_idx is not None else pool_length(labeled)
    where = "pool indices" if lab_idx is not None else f"row positions in `labeled` ({m} rows)"
    if arr.min() < 0 or arr.max() >= m:
        raise ValueError(f"`out_of_set` must hold {where} in [0, {m}), got values from {arr.min()} to {arr.max()}.")
    return arr


def apply_open_pool_layer(feats: PoolFeatures, strat: Strategy, layer: str, in_embeddings: np.ndarray,
                          out_embeddings: np.ndarray, labeled_classes: np.ndarray, candidates: np.ndarray,
                          k: int) -> np.ndarray:
    """What the open-pool layer ``layer`` (not ``"auto"`` or ``"off"``) does before ``strat`` selects:
    calibrates ``P(in | x)`` from the labeled in-set and the "none of these" embeddings
    (:func:`jacal.confidence.openset.in_set_probability`), sets the features the strategy reads
    (``in_distribution`` and its floor; ``in_set`` where the layer weighs) and returns the
    candidates. ``labeled_classes``: the labeled in-set items' classes (the share floor waits for
    all of them, :func:`jacal.acquisition.open_pool.share_floor_candidates`)."""
    est = in_set_probability(feats.embeddings, in_embeddings, out_embeddings)
    feats.in_distribution, feats.in_distribution_floor = est["score"], est["floor"]
    if layer == "class-floor":
        return class_floor_candidates(est["probability"], feats.probs, candidates, k)
    if layer == "share-floor":
        if weighs_in_set(strat):
            feats.in_set = est["probability"]
        return share_floor_candidates(est["probability"], feats.probs, candidates, k, labeled_classes)
    if layer == "weight":
        feats.in_set = est["probability"]
        if not weighs_in_set(strat):  # a strategy that cannot weigh: the calibrated threshold
            return in_set_candidates(feats.in_set, candidates, k)
    return candidates


def acquire(model: nn.Module, pool: Any, k: int, *, strategy: str = "jacobian", labeled: Any = None,
            out_of_set: Any = None, open_set: str = "auto", seed: int = 0,
            batch_size: Optional[int] = None, device=None, mc_samples: int = 20, force_eval: bool = False,
            progress: Optional[Callable[[int, int], Any]] = None, backend: Any = "local",
            shard_size: int = 65536, embedding_layer: Optional[str] = None,
            embed: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> AcquisitionResult:
    """Choose ``k`` pool items to label next.

    Args:
        model: a trained classifier (any ``nn.Module`` returning logits ``(N, K)``).
        pool: unlabeled items ``(N, *input_shape)``: tensor, numpy array, torch ``Dataset`` (items
            ``x`` or ``(x, ...)``) or an unshuffled ``DataLoader``. Floating values are the model's
            input units, used as given; ``uint8`` values are pixels in [0, 255], scaled to [0, 1] as
            image folders are (:func:`jacal.io.image_transform`); other integers (token ids of a text
            model) are refused: pass continuous inputs. A model trained on normalized inputs takes
            its normalization as a first layer, e.g. ``torch.nn.Sequential(
            torchvision.transforms.v2.Normalize(mean, std), model)``, so that jacal's inputs stay
            [0, 1] pixels. A float pool whose values look like 0–255 pixels gets a warning.
        k: batch size to acquire (≤ valid pool items not in ``labeled``).
        strategy: a name in :data:`STRATEGIES`: ``random``, ``least-confidence``, ``margin``,
            ``entropy``, ``bald``, ``coreset``, ``badge``, ``jacobian`` (k-means++ over boundary
            embeddings ∇(z_a − z_b)/(z_a − z_b): near the decision boundary and spread out),
            ``jacobian-kmeans`` (k-means++ over softmax Jacobians), ``jacobian-topk`` (the highest
            ‖J‖_F, batch-blind).
        labeled: already-labeled items: pool indices (1-D ints; never selected, and the anchors of
            the diversity strategies) or their features ``(M, *input_shape)`` (diversity anchors).
            Every item already sent to annotators belongs here, those answered "none of these" too.
        out_of_set: which of ``labeled`` the annotators answered "none of these" (outside the label
            set): pool indices when ``labeled`` holds pool indices, else row positions in
            ``labeled``. Never selected; every strategy learns from them which pool items annotators
            can label (``open_set``).
        open_set: what the ``out_of_set`` answers do, when there are any (:data:`OPEN_SET_LAYERS`).
            Each calibrates ``P(in | x)``, the probability that an item can be labeled, from the
            answers so far (:func:`jacal.confidence.openset.in_set_probability`). ``"auto"``
            (default): the strategy's own layer (its ``open_set`` attribute; ``"class-floor"`` when it
            names none), ``"share-floor"`` for ``jacobian``. ``"share-floor"``: per predicted class,
            the items the calibration expects out of the set there are dropped, the least likely
            first, and the strategy weighs the rest by ``P(in)`` (until every class has a labeled
            item, as the model predicts them, the candidates are the class floor's).
            ``"class-floor"``: the candidates are, per predicted class, the items at or above the
            class's median ``P(in)``, and all with ``P(in) >= 1/2``; the strategy selects among them
            as on a closed pool. ``"weight"``: every
            strategy weighs what an item teaches by ``P(in)`` (fewer labels wasted, see
            docs/guide/open-pools.md). ``"off"``: the strategy selects as on a closed pool. Without
            ``out_of_set`` answers nothing changes.
        seed: seeds tie-breaking, sampling and MC dropout.
        batch_size: chunk size; memory is bounded by it (diversity strategies also keep one
            embedding per item). Default (:func:`default_batch_size`): from the item size, at most
            :data:`CHUNK_ELEMENTS` input numbers and :data:`MAX_DEFAULT_CHUNK` items per chunk (256
            MNIST images, 27 images of 3×224×224), so large images get small chunks. The chunk
            size changes memory and speed, never the picks.
        device: ``None`` (the model's), ``"auto"``, ``"cpu"``, ``"cuda"``.
        mc_samples: MC-dropout samples for ``bald``.
        force_eval: allow a train-mode model with BatchNorm/Dropout (evaluated in eval mode).
        backend: ``"local"``, ``"ray"`` or a :class:`jacal.backends.Backend`: with Ray the pool (an
            array, a tensor or a map-style ``Dataset``, whose files every worker must see at the same
            paths) is cut into shards of ``shard_size`` items (rounded to whole chunks),
            each scored by a Ray task, and the selection runs on the driver: the result equals the
            local one for the same seed.
        shard_size: items per shard for a distributed backend.
        embedding_layer: for the strategies that use embeddings (``coreset``, ``badge``): the name of
            the layer whose output is each item's embedding (as in ``model.named_modules()``, TorchScript
            too; for ``torch.export`` the module path the graph recorded). Default: the input of the model's last linear layer
            (penultimate features), found in every model format.
        embed: for anything else, ``embed(x) -> (b, d)`` embeddings of a chunk ``x`` (with a Ray
            backend it must pickle).

    Memory: the pool is read a ``batch_size`` chunk at a time (a memory-mapped ``.npy`` stays on
    disk). Score-only strategies keep ``K + 4`` numbers per item (probabilities, score, prediction,
    confidence); the diversity strategies add one float32 embedding per item and work on it in
    place (no copies: see :mod:`jacal.acquisition.selection`).

    Returns:
        :class:`AcquisitionResult`.
    """
    strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
    if not isinstance(strat, Strategy):
        raise TypeError(f"Expected `strategy` to be a name or a Strategy, got {type(strategy).__name__}.")
    batch_size = default_batch_size(pool) if batch_size is None else check_positive_int("batch_size", batch_size)
    n = pool_length(pool)
    if n == 0:
        raise ValueError("`pool` is empty: nothing to acquire.")
    if embedding_layer is not None and embed is not None:
        raise ValueError("pass `embedding_layer` or `embed`, not both.")
    if embed is not None and not callable(embed):
        raise TypeError(f"Expected `embed` to be a callable x -> (b, d), got {type(embed).__name__}.")
    if strat.needs & {Need.MC, Need.BALD} and not has_dropout(model):
        raise ValueError("strategy 'bald' needs a model with dropout layers (MC dropout); this model has none.")
    check_choice("open_set", open_set, OPEN_SET_LAYERS)
    layer = open_set if open_set != "auto" else (getattr(strat, "open_set", None) or "class-floor")
    check_choice(f"strategy {strat.name!r}'s open_set", layer, OPEN_SET_LAYERS[1:])
    lab_idx = _labeled_indices(labeled, n)
    oos = _out_of_set(out_of_set, labeled, lab_idx, n)
    if lab_idx is not None and len(oos):
        lab_idx = np.union1d(lab_idx, oos)
    if isinstance(pool, (torch.Tensor, np.ndarray)):
        as_input_tensor("pool", np.array(pool[:0]) if isinstance(pool, np.ndarray) else pool[:0],
                        min_ndim=2)  # token ids are refused here, in one line (np.array: a read-only memmap)
    local = backend == "local" or getattr(backend, "name", None) == "local"
    if local and isinstance(pool, (torch.Tensor, np.ndarray)):  # fail fast, before the scoring pass
        ok = np.ones(n, dtype=bool)
        if not isinstance(pool, np.memmap):  # an array on disk is read once, by the scoring pass
            ok = ~nonfinite_rows(as_input_tensor("pool", pool, min_ndim=2)).numpy()
        if lab_idx is not None:
            ok[lab_idx] = False
        check_positive_int("k", k, upper=int(ok.sum()), upper_name="the valid pool items after exclusions")
    # the in-distribution score needs embeddings only when some item came back "none of these"
    want_id = len(oos) > 0 and (layer != "off" or Need.IN_DISTRIBUTION in strat.needs)
    want_ldm = Need.LDM in strat.needs
    need = set(strat.needs) - {Need.IN_DISTRIBUTION, Need.LDM}
    if want_id or want_ldm:
        need.add(Need.EMBEDDINGS)
    if want_ldm:
        need.add(Need.LOGITS)
    feats = _pool_features(model, pool, need, batch_size, device, mc_samples, seed, force_eval, progress,
                           backend, shard_size, embedding_layer, embed)
    available = feats.finite.copy()
    if lab_idx is not None:
        available[lab_idx] = False
    candidates = np.flatnonzero(available)
    check_positive_int("k", k, upper=len(candidates), upper_name="the valid pool items after exclusions")
    labeled_emb = None
    if (strat.uses_labeled or want_id) and labeled is not None:
        if lab_idx is not None:
            lab_all, lab_ok = feats.embeddings[lab_idx], feats.finite[lab_idx]
            is_out = np.isin(lab_idx, oos)
        else:
            lab_feats = extract_features(model, labeled, need={Need.EMBEDDINGS}, batch_size=batch_size, device=device,
                                         force_eval=force_eval, embedding_layer=embedding_layer, embed=embed)
            lab_all, lab_ok = lab_feats.embeddings, lab_feats.finite
            is_out = np.zeros(len(lab_all), dtype=bool)
            is_out[oos] = True
        if strat.uses_labeled:
            labeled_emb = lab_all[lab_ok] if lab_ok.any() else None
        if want_id:
            lab_probs = feats.probs[lab_idx] if lab_idx is not None else lab_feats.probs
            # no labels reach acquire: the model's predictions stand for the labeled in-set items' classes
            candidates = apply_open_pool_layer(feats, strat, layer, lab_all[lab_ok & ~is_out], lab_all[lab_ok & is_out],
                                               np.nan_to_num(lab_probs[lab_ok & ~is_out], nan=0.0).argmax(1),
                                               candidates, int(k))
    if Need.IN_DISTRIBUTION in strat.needs and not want_id:  # nothing to contrast: every item is labelable
        feats.in_distribution = np.where(feats.finite, 1.0, np.nan)
    if want_ldm:
        w, b = last_linear(model, feats.embeddings, feats.logits)
        feats.ldm = least_disagree_metric(feats.embeddings, w, b, seed=seed, valid=feats.finite)
    idx, s, sel = as_selection(strat.select(feats, int(k), candidates=candidates, labeled_embeddings=labeled_emb,
                                            seed=seed), n=n, k=int(k), candidates=candidates, name=strat.name)
    pred = np.where(feats.finite, np.nan_to_num(feats.probs, nan=0.0).argmax(1), -1)
    conf = np.where(feats.finite, np.nanmax(np.where(feats.finite[:, None], feats.probs, 0.0), axis=1), np.nan)
    reasons, fields = explain(feats, idx, sel, strat.name, open_set=want_id)
    return AcquisitionResult(np.asarray(idx, dtype=np.int64), np.asarray(s, dtype=np.float64),
                             np.asarray(sel, dtype=np.float64), strat.name, np.flatnonzero(~feats.finite),
                             pred.astype(np.int64), conf,
                             lab_idx if lab_idx is not None else np.zeros(0, dtype=np.int64), reasons, fields)


def _pool_features(model, pool, need, batch_size, device, mc_samples, seed, force_eval, progress, backend, shard_size,
              embedding_layer=None, embed=None) -> PoolFeatures:
    from jacal.backends import Backend, get_backend

    runner = backend if isinstance(backend, Backend) else get_backend(backend)
    if runner.name == "local":
        return extract_features(model, pool, need=need, batch_size=batch_size, device=device, mc_samples=mc_samples,
                                seed=seed, force_eval=force_eval, progress=progress, embedding_layer=embedding_layer,
                                embed=embed)
    if isinstance(pool, (torch.Tensor, np.ndarray)):
        def shard(s: int, e: int) -> Any:
            return pool[s:e]
    elif isinstance(pool, Dataset) and not isinstance(pool, IterableDataset) and hasattr(pool, "__len__"):
        def shard(s: int, e: int) -> Any:  # a map-style Dataset (e.g. jacal.io.ImagePool): each task reads its range
            return Subset(pool, range(s, e))
    else:
        raise TypeError("a distributed backend shards a tensor, a numpy array (or a memory-mapped .npy) or a map-style "
                        f"torch Dataset with a length; got {type(pool).__name__}.")
    try:
        n = len(pool)
        step = max(batch_size, (shard_size // batch_size) * batch_size)
        shared_model = runner.put(to_portable(model))  # compiled models travel as bytes in their own format
        worker_device = "cpu" if device in (None, "cpu") or (isinstance(device, str) and device == "auto"
                                                                and not torch.cuda.is_available()) else device
        jobs = [(shared_model, shard(s, min(s + step, n)), need, batch_size, worker_device, mc_samples, seed, force_eval,
                 s // batch_size, embedding_layer, embed) for s in range(0, n, step)]
        parts: dict = {}
        done = 0
        for i, feats in runner.map_unordered(shard_job, jobs):
            parts[i] = feats
            done += len(feats.finite)
            if progress is not None:
                progress(done, n)
        return concat_features([parts[i] for i in range(len(jobs))])
    finally:
        if runner is not backend:
            runner.close()
