"""Private helpers of :mod:`jacal.io`: text files read whole, JSON lines parsed with line numbers."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

from jacal._internal.validation import JacalError

DECODE_ERRORS = (OSError, ValueError, SyntaxError)  # PIL.UnidentifiedImageError is an OSError


def read_jsonl(path: Path, text: str, what: str) -> List[dict]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise JacalError(f"{path} line {n} is not valid JSON ({err.msg}); expected {what}") from err
        if not isinstance(obj, dict):
            raise JacalError(f"{path} line {n} is not a JSON object; expected {what}")
        rows.append(obj)
    return rows


def read_text(path: Path) -> str:
    if not path.is_file():
        raise JacalError(f"file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise JacalError(f"{path} is not UTF-8 text") from err
