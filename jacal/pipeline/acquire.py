"""The ``jacal acquire`` step: the next batch of a pool chosen by a model file, written in a labeling
tool's format, with the stop advice of the round when a stop set is watched."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from jacal import io as jio
from jacal._internal.io import check_writable
from jacal._internal.validation import JacalError
from jacal.io.batches import output_format
from jacal.io.labels import resolve_label_names
from jacal.pipeline._common import PathLike, PathsLike, Progress, Warn, _n_classes, _names, _paths, _warner
from jacal.pipeline.stop import _stop_round, _write_stop_state


def acquire_batch(model: PathLike, pool: PathLike, k: int, out: PathLike, *, fmt: Optional[str] = None,
                  strategy: str = "jacobian", exclude: Optional[PathsLike] = None, open_set: str = "auto",
                  label_names: Union[str, Sequence[str], None] = None, from_name: str = "label", to_name: str = "image",
                  model_version: Optional[str] = None, seed: int = 0, batch_size: Optional[int] = None, device: Any = "auto",
                  mc_samples: int = 20, embedding_layer: Optional[str] = None,
                  image_size: Optional[Sequence[int]] = None, channels: Optional[int] = None,
                  backend: str = "local", address: Optional[str] = None, shard_size: int = 65536,
                  force: bool = False, progress: Progress = None, on_warning: Warn = None,
                  stop_set: Optional[PathLike] = None, stop_state: Optional[PathLike] = None,
                  stop_criterion: Optional[str] = None, figure: Optional[PathLike] = None) -> dict:
    """Choose the next ``k`` items of the pool at ``pool`` with the model at ``model``; write them to ``out``.

    Args:
        model: a jacal checkpoint, a TorchScript file or a ``torch.export`` program (``.pt2``).
        pool: an array file, an image folder or a manifest (:func:`jacal.io.open_pool`); a ``.npy``
            pool is memory-mapped and read chunk by chunk.
        k: how many items to select.
        out: the batch file.
        fmt: one of :data:`jacal.io.BATCH_FORMATS` (default: from ``out``'s suffix).
        strategy: an acquisition strategy (:data:`jacal.STRATEGIES`).
        exclude: items already labeled or queued: a file :func:`jacal.io.read_annotations` reads, or
            several (their union): never selected; they anchor the diversity strategies, and those
            answered "none of these" (:data:`jacal.io.NONE_OF_THESE`, or skipped) reach
            :func:`jacal.acquire` as known out-of-set examples (``out_of_set``).
        open_set: what the items answered "none of these" in ``exclude`` do (``jacal.acquire``'s
            ``open_set``: ``"auto"``, ``"share-floor"``, ``"class-floor"``, ``"weight"`` or ``"off"``;
            docs/guide/open-pools.md).
        label_names: class names in class-index order (a list, or comma-separated text); default:
            the checkpoint's, else ``0..K-1``.
        from_name, to_name: Label Studio control / object (Argilla question / field).
        model_version: the predictions' version tag (default :func:`jacal.io.model_version`: the
            checkpoint's ``model_version`` metadata, else ``"jacal"``, the same every round).
        seed, batch_size, device, mc_samples, embedding_layer, backend, address, shard_size: as for
            :func:`jacal.acquire` (``backend`` by name, see :func:`jacal.backends.get_backend`).
        image_size, channels: for image pools (default: the checkpoint's input shape).
        force: overwrite an existing ``out``.
        stop_set: unlabeled items a stopping criterion watches, the same every round (read as
            ``pool``); with ``stop_state``, the advice of :func:`stop_advice` comes with the batch.
        stop_state: the criterion's JSON state, read when it exists and written back after the
            batch (see :mod:`jacal.stopping`).
        stop_criterion: a name in :data:`jacal.stopping.CRITERIA` for a new state (default: the
            recommended one); it must match an existing state's.
        figure: write the batch at a glance here (PNG, :func:`jacal.acquisition.reasons.batch_figure`).

    Returns:
        ``{"out", "format", "strategy", "k", "pool", "excluded", "invalid"}``: ``k`` items written,
        ``invalid`` the ids of unreadable or non-finite items (never selected); with ``exclude``,
        also ``excluded_per_file`` (``{file: ids it names}``) and ``out_of_set`` (how many
        excluded items were answered "none of these").
    """
    import jacal
    from jacal.backends import get_backend
    from jacal.models import load_model_file

    warn = _warner(on_warning)
    out = Path(out)
    kind = output_format(out, fmt, jio.BATCH_FORMATS)
    check_writable(out, force)
    ck = load_model_file(model)
    if not Path(pool).exists():
        raise JacalError(f"`pool` not found: {pool}")
    if (stop_set is None) != (stop_state is None):
        raise JacalError("`stop_set` and `stop_state` go together: the items a criterion watches and its state file")
    if stop_criterion is not None and stop_state is None:
        raise JacalError("`stop_criterion` needs `stop_set` and `stop_state`")
    if figure is not None:
        check_writable(Path(figure), force)
    items = jio.open_pool(pool, image_size=image_size, channels=channels, input_shape=ck.metadata.get("input_shape"),
                          mmap=True)  # a .npy pool is read chunk by chunk from disk, never held whole
    names = resolve_label_names(_names(label_names), ck.metadata.get("label_names"),
                                    _n_classes(ck.model, items.input_shape))
    if kind in ("label-studio", "argilla") and names is None:
        raise JacalError("the model's number of classes is unknown: pass `label_names`")
    labeled, unknown, oos, ann = None, [], [], None
    excludes = _paths(exclude)
    if excludes:
        tool = kind if kind in ("label-studio", "argilla") else "auto"
        ann = jio.read_all_annotations(excludes, tool=tool, question=from_name, label_names=names)
        labeled, unknown = items.index_of(ann.ids)  # every item already sent to annotators (pool indices)
        out_rows = set(items.index_of(ann.out_of_set)[0])
        oos = [pos for pos, i in enumerate(labeled) if i in out_rows]
    extra = {"out_of_set": np.asarray(oos, dtype=np.int64)} if oos else {}  # positions in `labeled` answered "none of these"
    runner = get_backend(backend, address=address)
    try:
        res = jacal.acquire(ck.model, items.items, k, strategy=strategy, labeled=labeled, seed=seed, open_set=open_set,
                            batch_size=batch_size, device=device, mc_samples=mc_samples, progress=progress,
                            backend=runner, shard_size=shard_size, embedding_layer=embedding_layer, **extra)
    finally:
        runner.close()
    stop_round = None  # (advice, state): computed before the batch is written, saved after
    if stop_state is not None:
        picked = items.items[res.indices] if isinstance(items.items, (np.ndarray, torch.Tensor)) else \
            torch.utils.data.Subset(items.items, res.indices.tolist())
        stop_round = _stop_round(ck.model, stop_set, stop_state, criterion=stop_criterion, model_file=model,
                                 labeled=len(labeled or []), picked=picked, input_shape=ck.metadata.get("input_shape"),
                                 image_size=image_size, channels=channels, batch_size=batch_size, device=device)
    written = jio.write_batch(out, res, items.ids, fmt=kind, label_names=names, uris=items.uris, from_name=from_name,
                              to_name=to_name, model_version=model_version or jio.model_version(model, ck.metadata))
    from jacal.acquisition.reasons import batch_figure, batch_summary

    at_a_glance = (batch_figure(res, figure, label_names=names) if figure is not None
                   else batch_summary(res, label_names=names))
    if stop_round is not None:  # the batch is out: the round counts
        _write_stop_state(stop_state, stop_round[1])
    for line in items.invalid_report(res.invalid):
        warn(line)
    if unknown:
        warn(f"{len(unknown)} id(s) in {', '.join(map(str, excludes))} are not in the pool")
    summary = {"out": str(out), "format": kind, "strategy": res.strategy, "k": written, "pool": len(items),
               "excluded": len(labeled or []), "invalid": [str(items.ids[i]) for i in res.invalid]}
    if ann is not None:
        summary.update(excluded_per_file=ann.counts, out_of_set=len(oos))
    summary["batch"] = {k: v for k, v in at_a_glance.items() if k != "pairs"}
    if figure is not None:
        summary["figure"] = str(figure)
    if stop_round is not None:
        summary["stop"] = stop_round[0]
    return summary
