"""The ``jacal score`` step: per-point Jacobian norms of a dataset split or an array file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from jacal import io as jio
from jacal._internal.io import atomic_open, check_writable
from jacal._internal.validation import JacalError, check_choice
from jacal.pipeline._common import PathLike, Progress


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
