"""The ``jacal train`` step: a classifier trained on a dataset, or on the pool items a labeling
tool's export labels, saved as a checkpoint."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from jacal import io as jio
from jacal._internal.io import check_writable
from jacal._internal.validation import JacalError
from jacal.pipeline._common import PathLike, PathsLike, Progress, Warn, _names, _paths, _warner


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
