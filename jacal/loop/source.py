"""A team's own labeled data as the loop's universe: a pool and an annotation export in, a
:class:`~jacal.scenarios.ScenarioPool` out.

The pool is anything :func:`jacal.io.open_pool` reads (array file, image folder, manifest) and the
labels are one or more exports :func:`jacal.io.read_all_annotations` reads (Label Studio JSON or
CSV, Argilla, a CSV with ``id`` and ``label``). Which exported items take part [jacal's choices]:

* an item with a class label, found in the pool and readable: in the universe, with its class;
* an item answered "none of these" (or only skipped), found and readable: in the pool as an item
  outside the label set, as ``jacal acquire`` treats it: picking it costs a label, it is never
  trained on, and the strategies hear of it as a known out-of-set example. It never enters the test
  or validation split;
* an exported id that names no pool item, an unreadable or non-finite item, and an id the export
  lists without any answer (queued): left out, counted by reason in the summary;
* a pool item the export does not name: left out (there is no label to reveal).

The test split is cut once from the labeled items, stratified by class where every class has two
items (scikit-learn's ``train_test_split``, seeded by a constant, so every seed and strategy is
evaluated on the same items, as on a built-in dataset's test split): ``n_test`` items, or a fifth
of them by default. The rest is the loop's training set, which :func:`jacal.loop.config.seed_splits`
cuts per seed into the validation split and the pool as for a built-in dataset.

Class names: ``label_names`` when given (class index = position); otherwise the labels themselves
when they are all class indices (``"0"``, ``"1"``, ...), else the distinct labels in sorted order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from jacal import io as jio
from jacal._internal.validation import JacalError
from jacal.data import Splits
from jacal.scenarios import KINDS, OUT_OF_SET, ScenarioPool

__all__ = ["LabeledSource", "load_source", "data_text", "TEST_SHARE", "NONE_KIND"]

#: the share of the labeled items held out for testing when ``n_test`` is not given
TEST_SHARE = 0.2
#: the kind (:data:`jacal.scenarios.KINDS`) of an item the export answers "none of these"
NONE_KIND = KINDS.index("none-of-these")
_TEST_SEED = 0  # the test split is the same for every seed, like a built-in dataset's test split


@dataclass(frozen=True)
class LabeledSource:
    """Where a loop's items and labels come from when they are a team's own.

    Attributes:
        pool: the pool file or folder (:func:`jacal.io.open_pool`).
        labels: the annotation exports of its items (merged; the last file's answer wins).
        label_names: class names in class-index order (default: see the module docstring).
        from_name: the Label Studio control / Argilla question that holds the class.
        image_size, channels: for an image pool, as for ``jacal acquire`` (default: the first image's).
    """

    pool: str
    labels: Tuple[str, ...]
    label_names: Optional[Tuple[str, ...]] = None
    from_name: str = "label"
    image_size: Optional[Tuple[int, ...]] = None
    channels: Optional[int] = None


def _names_of(ann: jio.Annotations) -> List[str]:
    """Class names when none are given: the labels as indices 0..max if they all are, else sorted."""
    values = set(ann.labels.values())
    if values and all(v.isascii() and v.isdigit() for v in values):
        return [str(i) for i in range(max(int(v) for v in values) + 1)]
    return sorted(values)


def _read(src: LabeledSource) -> Tuple[jio.Annotations, jio.Pool]:
    """The merged exports and the opened pool; a problem with either names its argument."""
    try:
        ann = jio.read_all_annotations(list(src.labels), question=src.from_name,
                                       label_names=list(src.label_names) if src.label_names else None)
    except JacalError as err:
        raise JacalError(f"`labels`: {err}") from err
    try:
        pool = jio.open_pool(src.pool, image_size=list(src.image_size) if src.image_size else None,
                             channels=src.channels, infer_image_shape=True)
    except (JacalError, ValueError, OSError) as err:
        raise JacalError(f"`pool`: {err}") from err
    return ann, pool


def load_source(src: LabeledSource, *, n_test: Optional[int], val_size: int, acquired: int
                ) -> Tuple[ScenarioPool, Dict[str, Any]]:
    """The loop's universe from a team's pool and exports (module docstring), and what became of each
    exported label.

    Args:
        src: the pool and the exports.
        n_test: test items (default: :data:`TEST_SHARE` of the labeled items).
        val_size: the labeled items each seed's validation split takes from the rest.
        acquired: the items a run labels from its pool (initial + k·rounds).

    Returns:
        ``(pool, provenance)``: a :class:`ScenarioPool` (its test split: labeled items only; its
        training set: the other labeled items and the "none of these" items, ``OUT_OF_SET``), and
        ``{"pool", "labels", "format", "label_names", "exported", "used", "used_out_of_set", "test",
        "pool_items_not_named", "dropped": {reason: count}, "examples": {reason: [ids]}, "per_class",
        "digest"}``: of the ``exported`` ids, ``used`` labeled items (``test`` of them in the test split)
        and ``used_out_of_set`` "none of these" answers took part, and ``dropped`` counts the others
        by reason (``not_in_pool``, ``unreadable``, ``no_answer``), so they add up to ``exported``.

    Raises:
        JacalError: an unreadable file, no exported id in the pool, a single class, or too few
            labeled items for ``n_test`` + ``val_size`` + ``acquired`` (each naming the argument).
    """
    ann, pool = _read(src)
    names = list(src.label_names) if src.label_names else _names_of(ann)
    lab = jio.labeled_items(pool, ann, names)
    oos_ids = [str(i) for i in ann.out_of_set]
    oos_found, oos_missing = pool.index_of(oos_ids)
    oos_pos, x_oos, oos_unreadable = pool.readable(oos_found)
    unreadable = {**lab.unreadable, **oos_unreadable}
    answered = set(ann.labels) | set(oos_ids)
    queued = [i for i in ann.ids if i not in answered]
    if len(lab.y) + len(oos_pos) == 0:
        theirs = next(iter(ann.labels), None) or next(iter(ann.out_of_set), None)
        example = (f" (e.g. export id {theirs!r}, pool id {str(pool.ids[0])!r})" if theirs is not None and len(pool)
                   else "")
        raise JacalError(f"`labels` ({', '.join(src.labels)}) label no readable item of `pool` ({src.pool}): "
                         f"{len(ann.labels)} labeled and {len(ann.out_of_set)} 'none of these' ids, none matched"
                         + example)
    y = lab.y.numpy()
    classes = np.unique(y)
    if len(classes) < 2:
        shown = f" ({names[int(classes[0])]!r})" if len(classes) else ""
        raise JacalError(f"`labels` give the usable items {len(classes)} class{shown}; active learning needs "
                         "two or more")
    if n_test is None:
        n_test = max(len(classes), int(round(TEST_SHARE * len(y))))
    needed = n_test + val_size + acquired
    if needed > len(y) + len(oos_pos) or n_test + val_size >= len(y):  # test and validation: labeled items only
        raise JacalError(f"`labels` have {len(y)} usable labeled items (+{len(oos_pos)} 'none of these'), too few "
                         f"for `n_test` + `val_size` + `initial` + `k`·`rounds` = {n_test} + {val_size} + {acquired} "
                         f"= {needed}; label more items or ask for fewer")
    counts = np.bincount(y, minlength=len(names))
    stratify = y if counts[counts > 0].min() >= 2 and len(classes) <= n_test <= len(y) - len(classes) else None
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=n_test, random_state=_TEST_SEED,
                                           stratify=stratify)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    x_train = torch.cat([lab.x[train_idx], x_oos.to(lab.x.dtype)])
    y_train = torch.cat([lab.y[train_idx], torch.full((len(oos_pos),), OUT_OF_SET, dtype=torch.int64)])
    name = "labels:" + "+".join(Path(p).name for p in src.labels)
    data = Splits(name, x_train, y_train, lab.x[test_idx], lab.y[test_idx], len(names))
    kind = np.zeros(len(x_train), dtype=np.int64)
    kind[len(train_idx):] = NONE_KIND
    universe_ids = ([lab.ids[i] for i in train_idx] + [str(pool.ids[i]) for i in oos_pos]
                    + [lab.ids[i] for i in test_idx])
    digest = hashlib.sha256()  # ids, labels and values: a changed export or pool is a different experiment
    for item, label in zip(universe_ids, y_train.tolist() + lab.y[test_idx].tolist()):
        digest.update(f"{item}\0{label}\n".encode())
    for t in (data.x_train, data.x_test):
        digest.update(np.ascontiguousarray(t.numpy(), dtype=np.float32).tobytes())
    dropped = {"not_in_pool": len(lab.not_in_pool) + len(oos_missing), "unreadable": len(unreadable),
               "no_answer": len(queued)}
    provenance = {
        "pool": str(src.pool), "labels": list(src.labels), "format": ann.tool, "label_names": names,
        "exported": len(ann.ids), "used": int(len(y)), "used_out_of_set": len(oos_pos), "test": int(n_test),
        "pool_items_not_named": len(pool) - len(pool.index_of(ann.ids)[0]), "dropped": dropped,
        "examples": {"not_in_pool": (lab.not_in_pool + oos_missing)[:5], "unreadable": list(unreadable)[:5],
                     "no_answer": queued[:5]},
        "per_class": {names[c]: int(counts[c]) for c in range(len(names))}, "digest": digest.hexdigest()}
    return ScenarioPool(data, kind, np.arange(len(x_train))), provenance


def data_text(d: Dict[str, Any]) -> str:
    """One paragraph on a team's own labels: how many were used, how many left out and why."""
    why = {"not_in_pool": "name no pool item", "unreadable": "could not be read",
           "no_answer": "have no answer (queued)"}
    dropped = [f"{n} {why[k]}" for k, n in d["dropped"].items() if n]
    return (f"{d['exported']} exported ids ({d['format']}, {', '.join(d['labels'])}) on the pool {d['pool']}: "
            f"{d['used']} labeled items used ({d['test']} of them the fixed test split), {d['used_out_of_set']} "
            f"'none of these' answers kept in the pool as items outside the label set"
            + (f"; left out: {', '.join(dropped)}" if dropped else "; none left out")
            + f". {d['pool_items_not_named']} pool items are not in the export. Labeled items per class: "
            + ", ".join(f"{k} {v}" for k, v in d["per_class"].items()) + ".")
