"""The ``jacal confidence`` step: per-item confidence of a model file's predictions, failure-detection
metrics when labels are given, a fitted estimator saved or reused."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from jacal import io as jio
from jacal._internal.io import check_writable
from jacal._internal.validation import JacalError
from jacal.io.batches import output_format
from jacal.pipeline._common import PathLike, Warn, _load_items, _warner


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
    from jacal.confidence import FITTED as FITTED_METHODS
    from jacal.confidence import NEEDS_LABELS, ConfidenceEstimator
    from jacal.models import load_model_file

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
