"""A labeling pipeline's steps on files: each reads its inputs, calls the library, writes its output
atomically and returns a summary. Every ``jacal`` command that works on files is one call here, so a
pipeline runs the same steps from Python without the command line:

* :func:`acquire_batch`: a model file and a pool in, the next batch to label out, as CSV / JSON
  lines or Label Studio / Argilla tasks (``jacal acquire``);
* :func:`confidence_file`: per-item confidence of a model's predictions, failure-detection metrics
  when labels are given, a fitted estimator saved or reused (``jacal confidence``);
* :func:`score_file`: per-point Jacobian norms of a dataset split or an array file (``jacal score``);
* :func:`train_checkpoint`: a classifier trained on a dataset or on the pool items a labeling
  tool's export labels, saved as a checkpoint (``jacal train``).

Each returns the summary ``dict`` that the command prints with ``--json``. Bad input raises
:class:`jacal.JacalError` with one line, before any output file is written; what is worth telling
but not fatal (skipped items, unknown ids, ignored options) goes to ``on_warning`` (default:
:func:`warnings.warn`). ``progress(done, total)`` follows the long pass.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

import numpy as np
import torch

from jacal import io as jio
from jacal._io import atomic_open, check_writable
from jacal.io.labels import resolve_label_names
from jacal.io.batches import output_format
from jacal._validation import JacalError, check_choice

__all__ = ["acquire_batch", "stop_advice", "confidence_file", "score_file", "train_checkpoint"]

PathLike = Union[str, Path]
PathsLike = Union[PathLike, Sequence[PathLike]]
Progress = Optional[Callable[[int, int], Any]]
Warn = Optional[Callable[[str], Any]]


def _warner(on_warning: Warn) -> Callable[[str], Any]:
    return on_warning if on_warning is not None else (lambda text: warnings.warn(text, stacklevel=3))


def _names(label_names: Union[str, Sequence[str], None]) -> Optional[List[str]]:
    return jio.parse_label_names(label_names) if isinstance(label_names, str) else label_names


def _paths(paths: Optional[PathsLike]) -> List[Path]:
    """One file or several, as a list (``None``: none)."""
    if paths is None:
        return []
    return [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]


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


def _file_digest(path: PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stop_advice(model: Any, stop_set: PathLike, state: PathLike, *, criterion: Optional[str] = None,
                model_file: Optional[PathLike] = None, labeled: Optional[int] = None, picked: Any = None,
                input_shape: Optional[Sequence[int]] = None, image_size=None, channels=None, batch_size: int = 256,
                device: Any = "auto") -> dict:
    """One round of a stopping criterion carried in a state file: load it (or start ``criterion``),
    observe ``model`` on the items at ``stop_set``, write the state back atomically, return the advice.

    The same model twice in a row (``model_file``'s bytes unchanged, e.g. a batch acquired again)
    does not count as a round: the last advice is returned and the state is left as it was.
    """
    advice, payload = _stop_round(model, stop_set, state, criterion=criterion, model_file=model_file, labeled=labeled,
                                  picked=picked, input_shape=input_shape, image_size=image_size, channels=channels,
                                  batch_size=batch_size, device=device)
    _write_stop_state(state, payload)
    return advice


def _write_stop_state(state: PathLike, payload: Optional[dict]) -> None:
    if payload is not None:
        with atomic_open(state, "w", encoding="utf-8") as f:
            f.write(json.dumps(payload))


def _stop_round(model, stop_set, state, *, criterion, model_file, labeled, picked, input_shape, image_size, channels,
                batch_size, device):
    """``(advice dict, state to write or None)`` for one round; nothing is written here."""
    from jacal import stopping

    state = Path(state)
    if state.exists():
        crit = stopping.load_state(state)
        if criterion is not None and criterion != crit.name:
            raise JacalError(f"`stop_criterion` {criterion!r} differs from the criterion in {state} ({crit.name!r}); "
                             "start a new `stop_state` file to change criterion")
        last = json.loads(state.read_text(encoding="utf-8")).get("last", {})
    else:
        if criterion is not None and criterion not in stopping.CRITERIA:
            raise JacalError(f"`stop_criterion` must be one of {list(stopping.CRITERIA)}, got {criterion!r}")
        if criterion == "budget":
            raise JacalError("`stop_criterion` budget needs a label budget: count the labels instead")
        crit = stopping.criterion(criterion)
        last = {}
    digest = _file_digest(model_file) if model_file is not None else None
    if digest is not None and last.get("model") == digest and last.get("advice"):
        return {**last["advice"], "repeated": True,
                "note": "the same model as the last round: advice repeated, state unchanged"}, None
    if not Path(stop_set).exists():
        raise JacalError(f"`stop_set` not found: {stop_set}")
    watched = jio.open_pool(stop_set, image_size=image_size, channels=channels, input_shape=input_shape)
    try:
        advice = crit.update(model, watched.items, labeled=labeled, picked=picked, batch_size=batch_size,
                             device=device)
    except ValueError as e:
        raise JacalError(f"`stop_set`: {e}") from None
    out = advice.to_dict()
    return out, {**crit.state_dict(), "last": {"model": digest, "advice": out}}


def _n_classes(model: Any, input_shape: Sequence[int]) -> Optional[int]:
    """K, from one forward pass on a blank item (None when the model refuses it; acquire then reports why)."""
    try:
        with torch.no_grad():
            z = model(torch.zeros((2, *input_shape)))  # 2: exported programs may specialize a batch of 1
        return int(z.shape[1]) if isinstance(z, torch.Tensor) and z.ndim == 2 else None
    except Exception:  # noqa: BLE001 - the real pass reports the model's error in one line
        return None


def _load_items(path: PathLike, input_shape: Optional[Sequence[int]], image_size, channels, what: str):
    """Items ``(N, ...)`` decoded in memory and their ids (for steps that need them all at once)."""
    if not Path(path).exists():
        raise JacalError(f"`{what}` not found: {path}")
    pool = jio.open_pool(path, image_size=image_size, channels=channels, input_shape=input_shape)
    return pool.materialize(), pool.ids


def confidence_file(model: PathLike, data: PathLike, *, labels: Optional[PathLike] = None, method: Optional[str] = None,
                    fit_data: Optional[PathLike] = None, fit_labels: Optional[PathLike] = None,
                    estimator: Optional[PathLike] = None, save_estimator: Optional[PathLike] = None,
                    review_below: Optional[float] = None, out: Optional[PathLike] = None, fmt: Optional[str] = None,
                    image_size: Optional[Sequence[int]] = None, channels: Optional[int] = None, device: Any = "auto",
                    force: bool = False, on_warning: Warn = None) -> dict:
    """Per-item confidence of the model at ``model`` on the items at ``data``.

    Args:
        model: a jacal checkpoint, a TorchScript file or a ``torch.export`` program.
        data: items to score (any pool :func:`jacal.io.open_pool` reads).
        labels: their true labels (:func:`jacal.io.read_labels`): adds failure-detection metrics.
        method: a confidence method (default ``max-softmax``, or ``estimator``'s).
        fit_data, fit_labels: what a fitted method learns from.
        estimator: a fitted estimator file (its method and state; no fitting).
        save_estimator: where to write the fitted estimator.
        review_below: flag items whose confidence is below this.
        out: per-item file (CSV or JSON lines): ``id, predicted, confidence[, review]``.
        fmt: ``"csv"`` or ``"jsonl"`` (default: from ``out``'s suffix).
        image_size, channels: for images (default: the checkpoint's input shape).
        force: overwrite an existing ``out`` or ``save_estimator``.

    Returns:
        ``{"n", "method", "mean_confidence"}``, with ``metrics`` (labels given), ``to_review``,
        ``out`` and ``estimator`` where they apply.
    """
    from jacal.models import load_model_file
    from jacal.confidence import FITTED as FITTED_METHODS, NEEDS_LABELS, ConfidenceEstimator

    warn = _warner(on_warning)
    kind = output_format(Path(out), fmt) if out is not None else None
    for path in (out, save_estimator):
        if path is not None:
            check_writable(Path(path), force)
    ck = load_model_file(model)
    shape = ck.metadata.get("input_shape")
    x, ids = _load_items(data, shape, image_size, channels, "data")
    if estimator is not None:
        if fit_data is not None or fit_labels is not None:
            raise JacalError("`estimator` is already fitted: drop `fit_data`/`fit_labels`, or fit anew without "
                             "`estimator`")
        est = ConfidenceEstimator.load(estimator, device=device)
        if method is not None and method != est.method:
            raise JacalError(f"`method` {method} differs from {estimator}'s method {est.method}")
    else:
        est = ConfidenceEstimator(method if method is not None else "max-softmax", device=device)
        if est.method in FITTED_METHODS:
            needs_labels = est.method in NEEDS_LABELS
            if fit_data is None or (needs_labels and fit_labels is None):
                what = "`fit_data` and `fit_labels`" if needs_labels else "`fit_data`"
                raise JacalError(f"method '{est.method}' needs {what} ({FITTED_METHODS[est.method]} items it learns "
                                 "from), or a fitted `estimator` file")
            xf, _ = _load_items(fit_data, shape, image_size, channels, "fit_data")
            est.learn(ck.model, xf, jio.read_labels(fit_labels, len(xf)) if fit_labels is not None else None)
        else:
            if fit_data is not None or fit_labels is not None:
                warn(f"method '{est.method}' learns nothing; `fit_data`/`fit_labels` are ignored")
            est.learn(ck.model, None)
    conf, pred = est.confidence_and_prediction(ck.model, x)
    summary = {"n": len(x), "method": est.method, "mean_confidence": float(np.mean(conf))}
    if labels is not None:
        summary["metrics"] = est.metrics(conf, pred, jio.read_labels(labels, len(x)))
    if review_below is not None:
        summary["to_review"] = int((conf < review_below).sum())
    if out is not None:
        rows = [{"id": i, "predicted": int(p), "confidence": float(c)} for i, p, c in zip(ids, pred, conf)]
        if review_below is not None:
            for r in rows:
                r["review"] = int(r["confidence"] < review_below)
        jio.write_rows(out, rows, fmt=kind)
        summary["out"] = str(out)
    if save_estimator is not None:
        est.save(save_estimator)
        summary["estimator"] = str(save_estimator)
    elif estimator is not None:
        summary["estimator"] = str(estimator)
    return summary


def score_file(checkpoint: PathLike, *, dataset: Optional[str] = None, split: str = "test",
               data_root: Optional[PathLike] = None, input_file: Optional[PathLike] = None, output: str = "softmax",
               method: str = "auto", batch_size: int = 1024, device: Any = "auto", out: Optional[PathLike] = None,
               fmt: Optional[str] = None, force: bool = False, progress: Progress = None) -> dict:
    """Per-point Jacobian Frobenius norms of the model at ``checkpoint``, with a summary.

    Args:
        checkpoint: a jacal checkpoint (or a TorchScript / ``torch.export`` file, with ``input_file``).
        dataset, split, data_root: the points to score (default: the checkpoint's dataset, ``"test"``).
        input_file: score the points of an array file (:func:`jacal.io.load_array`) instead.
        output, method, batch_size, device: as for :func:`jacal.jacobian_norm`.
        out: per-point file, CSV (``id, jacobian_norm, predicted[, label]``) or JSON
            (``{"summary", "scores"}``).
        fmt: ``"csv"`` or ``"json"`` (default: from ``out``'s suffix).
        force: overwrite an existing ``out``.

    Returns:
        ``{"source", "n", "output", "method", "mean", "median", "std", "min", "max"}``, with
        ``accuracy`` (a dataset split) and ``out`` where they apply.
    """
    import jacal
    from jacal.models import load_model_file

    ck = load_model_file(checkpoint)
    if out is not None:
        check_writable(Path(out), force)
        kind = fmt if fmt is not None else Path(out).suffix.lstrip(".").lower()
        if kind not in ("csv", "json"):
            raise JacalError(f"cannot tell the format of {out}; pass `fmt` (csv or json)")
    labels, ids = None, None
    if input_file is not None:
        x, ids = jio.load_array(input_file)
        source = str(input_file)
    else:
        name = dataset if dataset is not None else ck.metadata.get("dataset")
        if name is None:
            raise JacalError("the checkpoint names no dataset; pass `dataset` or `input_file`")
        check_choice("split", split, ("train", "test"))  # before the dataset is loaded
        data = jacal.load_dataset(name, root=data_root or ck.metadata.get("data_root"))
        x, labels = data.split(split)
        source = f"{name}/{split}"
    norms, pred = jacal.jacobian_norm(ck.model, x, output=output, method=method, batch_size=batch_size,
                                      device=device, progress=progress, return_predictions=True)  # one pass
    ids = ids if ids is not None else list(range(len(x)))
    summary = {"source": source, "n": len(x), "output": output, "method": method, "mean": float(norms.mean()),
               "median": float(norms.median()), "std": float(norms.std()) if len(x) > 1 else 0.0,
               "min": float(norms.min()), "max": float(norms.max())}
    if labels is not None:
        summary["accuracy"] = float((pred == labels).float().mean())
    if out is not None:
        rows = [{"id": i, "jacobian_norm": float(n), "predicted": int(p)}
                for i, n, p in zip(ids, norms.tolist(), pred.tolist())]
        if labels is not None:
            for r, y in zip(rows, labels.tolist()):
                r["label"] = int(y)
        if kind == "json":
            with atomic_open(out, "w") as f:
                json.dump({"summary": summary, "scores": rows}, f)
        else:
            jio.write_rows(out, rows, fmt="csv")
        summary["out"] = str(out)
    return summary


def train_checkpoint(out: PathLike, *, dataset: str = "digits", data_root: Optional[PathLike] = None,
                     download: bool = False, n_train: Optional[int] = None, pool: Optional[PathLike] = None,
                     labels: Optional[PathsLike] = None, label_names: Union[str, Sequence[str], None] = None,
                     from_name: str = "label", image_size: Optional[Sequence[int]] = None,
                     channels: Optional[int] = None, width: int = 256, depth: int = 2, activation: str = "relu",
                     weight_variance: float = 2.0, optimizer: str = "adam", lr: float = 1e-3, batch_size: int = 64,
                     epochs: float = 30, seed: int = 0, device: Any = "auto", force: bool = False,
                     progress: Progress = None, on_warning: Warn = None) -> dict:
    """Train a fully-connected classifier (:func:`jacal.mlp`) and save it as a checkpoint at ``out``.

    On ``dataset`` (its train split; test metrics on its test split), or, with ``pool`` and
    ``labels``, on the pool items a labeling tool's export labels (:func:`jacal.io.labeled_items`;
    no held-out split, so test metrics are ``None``). The checkpoint's metadata keeps the label
    names, so ``jacal acquire`` names its predictions without ``--label-names``.

    Args:
        out: the checkpoint file.
        dataset, data_root, download, n_train: as for :func:`jacal.load_dataset`.
        pool, labels: a pool (:func:`jacal.io.open_pool`; image shape from the first image unless
            ``image_size``/``channels``) and the annotations of its items: one file or several,
            merged (:func:`jacal.io.read_all_annotations`, question ``from_name``); items answered
            "none of these" are left out, never trained on as a class.
        label_names: class names in class-index order (default: the labels are class indices).
        width, depth, activation, weight_variance: the model (:func:`jacal.mlp`).
        optimizer, lr, batch_size, epochs, seed, device: the training (:func:`jacal.train`).
        force: overwrite an existing ``out``.

    Returns:
        ``{"checkpoint", **metadata}``: the metadata saved with the model (``metrics`` included;
        trained on labels: ``source`` with ``labels`` (the files), ``per_file`` (ids each names),
        ``n_labeled`` and ``n_out_of_set``).
    """
    import jacal

    warn = _warner(on_warning)
    out = Path(out)
    check_writable(out, force)
    extra: dict = {}
    if labels is not None or pool is not None:
        if labels is None or pool is None:
            raise JacalError("`pool` and `labels` go together: the labels name items of the pool")
        if not Path(pool).exists():
            raise JacalError(f"`pool` not found: {pool}")
        names = _names(label_names)
        files = _paths(labels)
        ann = jio.read_all_annotations(files, question=from_name, label_names=names)
        items = jio.open_pool(pool, image_size=image_size, channels=channels, infer_image_shape=True)
        lab = jio.labeled_items(items, ann, names)
        shown = ", ".join(map(str, files))
        for item, why in lab.unreadable.items():
            warn(f"skipped labeled item {item!r}: {why}")
        if lab.not_in_pool:
            warn(f"{len(lab.not_in_pool)} labeled id(s) in {shown} are not in {pool}")
        if len(lab.y) == 0:
            raise JacalError(f"{shown} label{'s' if len(files) == 1 else ''} none of the readable items of {pool}"
                             + (f" ({len(ann.out_of_set)} answered {jio.NONE_OF_THESE!r})" if ann.out_of_set else ""))
        data = jacal.Splits("labels:" + "+".join(f.name for f in files), lab.x, lab.y, lab.x[:0], lab.y[:0],
                            len(lab.label_names))
        extra = {"label_names": lab.label_names,
                 "source": {"pool": str(pool), "labels": [str(f) for f in files], "per_file": ann.counts,
                            "format": ann.tool, "n_labeled": len(lab.y), "n_out_of_set": len(ann.out_of_set)}}
    else:
        data = jacal.load_dataset(dataset, root=data_root, download=download, n_train=n_train, seed=seed)
    model = jacal.mlp(data.input_dim, data.n_classes, width=width, depth=depth, activation=activation,
                      weight_variance=weight_variance, seed=seed)
    result = jacal.train(model, data, optimizer=optimizer, lr=lr, batch_size=batch_size, epochs=epochs, seed=seed,
                         device=device, progress=progress)
    metrics = {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in result.to_dict().items()}
    meta = {"dataset": None if extra else data.name, "data_root": str(data_root) if data_root and not extra else None,
            "seed": seed, "input_shape": list(data.input_shape), "n_classes": data.n_classes,
            "train": {"optimizer": optimizer, "lr": lr, "batch_size": batch_size, "epochs": epochs},
            "metrics": metrics, **extra}
    jacal.save_checkpoint(out, model.cpu(), metadata=meta)
    return {"checkpoint": str(out), **meta}
