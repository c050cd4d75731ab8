"""The annotations record: what an export says about pool items, the majority vote over several
annotators, and several files' records merged into one.

An item an annotator says is outside the label set (the reserved choice :data:`NONE_OF_THESE`, a
skipped / cancelled Label Studio annotation, a discarded Argilla response) is *out of set*: listed
in :attr:`Annotations.out_of_set`, never in :attr:`Annotations.labels`, so it is excluded from the
next batch but never trained on as a class."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from jacal._internal.validation import JacalError
from jacal.io.labels import NONE_OF_THESE, is_none_of_these

__all__ = ["Annotations", "merge_annotations"]


@dataclass
class Annotations:
    """What a labeling tool's export (or a list of ids) says about pool items.

    Attributes:
        ids: every item id the file names, labeled or only queued, in file order (unique).
        labels: ``{id: label name}`` for the items with a class label (majority of the votes).
        tool: ``"label-studio"``, ``"argilla"`` or ``"csv"`` (CSV, JSON lines or a plain id list).
        path: the file read (several, comma-separated, after :func:`merge_annotations`).
        out_of_set: ids answered "outside the label set" (:data:`NONE_OF_THESE` won the vote, or
            every annotation was a skip), in file order; never in ``labels``.
        counts: ``{file: number of ids it named}`` (one entry per file merged).
    """

    ids: List[str]
    labels: Dict[str, str]
    tool: str
    path: str = ""
    out_of_set: List[str] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)

    def label_indices(self, label_names: Sequence[str]) -> Dict[str, int]:
        """``{id: class index}`` through ``label_names`` (index = position in the list).

        Raises:
            JacalError: a label that is not one of ``label_names``.
        """
        index = {n: i for i, n in enumerate(label_names)}
        for item, label in self.labels.items():
            if label not in index:
                shown = ", ".join(label_names[:12]) + (", ..." if len(label_names) > 12 else "")
                raise JacalError(f"{self.path}: item {item!r} is labeled {label!r}, which is not one of the label "
                                 f"names ({shown}); set them with `label_names`")
        return {item: index[label] for item, label in self.labels.items()}


def _majority(votes: List[str]) -> str:
    """The most frequent label; a tie goes to the one given first."""
    return max(dict.fromkeys(votes), key=votes.count)


class Votes:
    """Votes per item: class labels, :data:`NONE_OF_THESE` and skips; the majority decides at the end."""

    def __init__(self, path: Path) -> None:
        self.path, self.ids, self.votes, self.skipped = path, [], {}, set()

    def add(self, item: str, label: Optional[str]) -> None:
        if item not in self.votes:
            self.votes[item] = []
            self.ids.append(item)
        if label is not None:
            self.votes[item].append(NONE_OF_THESE if is_none_of_these(label) else label)

    def skip(self, item: str) -> None:
        """An annotator skipped the item (cancelled / discarded): out of set unless someone labeled it."""
        self.add(item, None)
        self.skipped.add(item)

    def result(self, tool: str) -> Annotations:
        labels, out_of_set = {}, []
        for item in self.ids:
            votes = self.votes[item]
            winner = _majority(votes) if votes else (NONE_OF_THESE if item in self.skipped else None)
            if winner == NONE_OF_THESE:
                out_of_set.append(item)
            elif winner is not None:
                labels[item] = winner
        return Annotations(self.ids, labels, tool, str(self.path), out_of_set, {str(self.path): len(self.ids)})


def single_choice(value: Any, where: str) -> str:
    """The one class name of an answer (a name, or a list of exactly one); ``where`` names the answer in errors."""
    if isinstance(value, list):
        if len(value) != 1:
            raise JacalError(f"{where} has {len(value)} choices; jacal reads single-label classification (one choice)")
        value = value[0]
    if isinstance(value, (dict, list)) or value is None:
        raise JacalError(f"{where} is not a class name: {value!r}")
    return str(value)


def merge_annotations(parts: Sequence[Annotations]) -> Annotations:
    """Several files' annotations as one: the union of their ids (first-seen order); for an item two
    files answer, the later file's answer (label or out of set) replaces the earlier one's.

    >>> a = Annotations(["x", "y"], {"x": "one"}, "csv", "a.csv", [], {"a.csv": 2})
    >>> b = Annotations(["y", "z"], {"z": "two"}, "csv", "b.csv", ["y"], {"b.csv": 2})
    >>> m = merge_annotations([a, b])
    >>> m.ids, m.labels, m.out_of_set, m.counts
    (['x', 'y', 'z'], {'x': 'one', 'z': 'two'}, ['y'], {'a.csv': 2, 'b.csv': 2})
    """
    if not parts:
        raise ValueError("Expected at least one Annotations to merge, got none.")
    if len(parts) == 1:
        return parts[0]
    ids: Dict[str, None] = {}
    answer: Dict[str, Optional[str]] = {}
    counts: Dict[str, int] = {}
    for part in parts:
        ids.update(dict.fromkeys(part.ids))
        answer.update(part.labels)
        answer.update(dict.fromkeys(part.out_of_set))  # None: out of set (a part never answers an item both ways)
        for name, n in part.counts.items():
            counts[name] = counts.get(name, 0) + n
    tools = {part.tool for part in parts}
    return Annotations(list(ids), {i: v for i, v in answer.items() if v is not None},
                       tools.pop() if len(tools) == 1 else "mixed", ", ".join(part.path for part in parts),
                       [i for i in ids if i in answer and answer[i] is None], counts)
