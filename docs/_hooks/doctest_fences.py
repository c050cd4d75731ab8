"""Griffe extension: a doctest written in a docstring's prose renders as a code block.

jacal's docstrings carry short doctests (``>>> ...`` and the expected output) in their text, where
pytest runs them. Markdown would read their brackets as links; this wraps each such run of lines in
a ``pycon`` fence before mkdocstrings renders the docstring. The source is not changed.
"""
from __future__ import annotations

from griffe import Extension


def fence_doctests(text: str) -> str:
    """``text`` with every run of lines starting at a ``>>>`` line (through its output, up to a blank
    line) fenced as ``pycon``; lines already inside a fence are left alone."""
    out, block, in_fence = [], [], False
    for line in text.splitlines() + [""]:
        stripped = line.strip()
        if block:
            if stripped:
                block.append(line)
                continue
            indent = block[0][: len(block[0]) - len(block[0].lstrip())]
            out += [f"{indent}```pycon", *block, f"{indent}```"]
            block = []
        if stripped.startswith("```"):
            in_fence = not in_fence
        if stripped.startswith(">>>") and not in_fence:
            block.append(line)
            continue
        out.append(line)
    return "\n".join(out[:-1]) if out and out[-1] == "" and not text.endswith("\n\n") else "\n".join(out)


class DoctestFences(Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
