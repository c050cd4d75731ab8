"""Griffe extension: docstrings written for pytest and Sphinx habits render cleanly as Markdown.

- A doctest in a docstring's prose (``>>> ...`` and the expected output, run by pytest) becomes a
  ``pycon`` code block; Markdown would otherwise read its brackets as links.
- A Sphinx role (``:func:`acquire```, ``:class:`...```, ``:data:`...```) becomes a code span.

The source is not changed.
"""
from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|class|data|mod|meth|attr|obj|exc|const):`~?([^`]+)`")

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
        if obj.docstring is None:
            return
        text = _ROLE.sub(r"`\1`", obj.docstring.value)
        obj.docstring.value = fence_doctests(text) if ">>>" in text else text
