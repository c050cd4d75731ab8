"""The label vocabulary: class names in class-index order, and the reserved answer
:data:`NONE_OF_THESE` for an item outside the label set."""
from __future__ import annotations

import csv
from typing import Any, List, Optional, Sequence

from jacal._internal.validation import JacalError

__all__ = ["NONE_OF_THESE", "is_none_of_these", "parse_label_names"]

#: The reserved answer "this item is outside the label set" (a ``<Choice>`` of the labeling config, a
#: label of a CSV row); compared without case and surrounding spaces (:func:`is_none_of_these`).
NONE_OF_THESE = "none of these"


def parse_label_names(text: str) -> List[str]:
    """Class names, comma-separated, in class-index order (CSV quoting allowed: ``'"a, b",c'``).

    >>> parse_label_names('cat, dog,"bird, small"')
    ['cat', 'dog', 'bird, small']

    Raises:
        JacalError: an empty or repeated name.
    """
    names = [n.strip() for n in next(csv.reader([text]), [])]
    if not names or any(n == "" for n in names):
        raise JacalError(f"`label_names` must be comma-separated non-empty names, got {text!r}")
    if any(is_none_of_these(n) for n in names):
        raise JacalError(f"`label_names` must not hold {NONE_OF_THESE!r}: it is the reserved answer for items outside "
                         "the label set, never a class")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise JacalError(f"`label_names` repeats {', '.join(map(repr, dup))}")
    return names


def is_none_of_these(label: Any) -> bool:
    """Whether ``label`` is the reserved answer :data:`NONE_OF_THESE` (any case, spaces around ignored).

    >>> is_none_of_these(" None of these"), is_none_of_these("nine")
    (True, False)
    """
    return isinstance(label, str) and label.strip().casefold() == NONE_OF_THESE


def default_label_names(n_classes: int) -> List[str]:
    """``["0", "1", ..., "K-1"]``: class indices as names.

    >>> default_label_names(3)
    ['0', '1', '2']
    """
    return [str(i) for i in range(n_classes)]


def resolve_label_names(given: Optional[Sequence[str]], stored: Optional[Sequence[str]] = None,
                        n_classes: Optional[int] = None) -> Optional[List[str]]:
    """The class names to write a model's predictions with: ``given``, else ``stored`` (a
    checkpoint's), else ``0..K-1`` (:func:`default_label_names`) when the model's ``n_classes`` is known.

    >>> resolve_label_names(None, None, 3)
    ['0', '1', '2']

    Returns:
        The names, or ``None`` when neither names nor the number of classes are known.

    Raises:
        JacalError: names that are not one per class.
    """
    names = given if given is not None else stored
    if names is None:
        return default_label_names(n_classes) if n_classes else None
    if n_classes is not None and len(names) != n_classes:
        raise JacalError(f"`label_names` has {len(names)} names but the model has {n_classes} classes")
    return list(names)
