"""The join of annotations with a pool: the labeled pool items, decoded, with their class indices,
ready to train on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from jacal._internal.validation import JacalError
from jacal.io.labels import default_label_names
from jacal.io.pools import Pool
from jacal.io.records import Annotations

__all__ = ["LabeledItems", "labeled_items"]


@dataclass
class LabeledItems:
    """Annotated pool items, decoded, ready to train on.

    Attributes:
        x: ``(M, ...)`` float items.
        y: ``(M,)`` int64 class indices.
        ids: the ``M`` item ids, in pool order.
        label_names: class names in class-index order.
        not_in_pool: labeled ids that name no pool item.
        unreadable: ``{id: reason}`` for labeled items that could not be read (skipped).
    """

    x: torch.Tensor
    y: torch.Tensor
    ids: List[str]
    label_names: List[str]
    not_in_pool: List[str]
    unreadable: Dict[str, str]


def labeled_items(pool: Pool, annotations: Annotations, label_names: Optional[Sequence[str]] = None) -> LabeledItems:
    """The pool items that ``annotations`` label, decoded, with their class indices.

    Args:
        pool: from :func:`open_pool`.
        annotations: from :func:`read_annotations`.
        label_names: class names in class-index order; ``None``: the labels must be class indices
            (``"0"``, ``"1"``, ...) and the names are ``0..max``.

    Raises:
        JacalError: a label not in ``label_names`` (or, without names, a label that is not an index).
    """
    if label_names is None:
        bad = sorted({lab for lab in annotations.labels.values() if not (lab.isascii() and lab.isdigit())})
        if bad:
            raise JacalError(f"{annotations.path} labels items with names ({', '.join(map(repr, bad[:5]))}), not class "
                             "indices: pass `label_names` in class-index order")
        top = max((int(lab) for lab in annotations.labels.values()), default=-1)
        label_names = default_label_names(top + 1)
    index = annotations.label_indices(label_names)
    chosen, not_in_pool = pool.index_of(index)
    keep, x, unreadable = pool.readable(chosen)
    y = torch.tensor([index[str(pool.ids[i])] for i in keep], dtype=torch.int64)
    return LabeledItems(x, y, [str(pool.ids[i]) for i in keep], list(label_names), not_in_pool, unreadable)
