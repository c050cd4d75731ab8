"""Private I/O plumbing: atomic file writes (a temporary name in the same folder, then a rename) and
output folders. The public readers and writers are in :mod:`jacal.io`."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ["atomic_path", "atomic_open", "ensure_out_dir", "check_writable"]


def ensure_out_dir(out: Union[str, Path]) -> Path:
    """Create the output folder ``out`` if needed; raise ``JacalError`` if it cannot be a writable folder."""
    from jacal._internal.validation import JacalError

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise JacalError(f"cannot create output folder {out}: {err.strerror or err}") from err
    if not out.is_dir():
        raise JacalError(f"output path {out} is not a folder")
    if not os.access(out, os.W_OK):
        raise JacalError(f"output folder {out} is not writable")
    return out


def check_writable(path: Union[str, Path], force: bool) -> None:
    """Raise ``JacalError`` unless the output file ``path`` may be written: it does not exist (or
    ``force``), is not a folder, and its folder can be created and written to."""
    from jacal._internal.validation import JacalError

    path = Path(path)
    if path.exists() and not force:
        raise JacalError(f"{path} exists; pass `force=True` to overwrite it")
    if path.exists() and path.is_dir():
        raise JacalError(f"{path} is a folder, expected a file path")
    ensure_out_dir(path.parent if str(path.parent) else Path("."))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Union[str, Path], *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds.

    A failed write (an ``OSError``: disk full, a file-size limit, a read-only folder) removes the
    temporary file and raises ``JacalError`` naming ``path``; ``path`` itself is never half-written.
    ``durable``: also ``fsync`` the new file before the rename and its folder after, so a power
    loss leaves the old file or the new one (the rename alone only survives a killed process).
    """
    from jacal._internal.validation import JacalError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise JacalError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would have
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        if durable:
            _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):  # disk full, file-size limit, read-only folder: the old file is kept
            raise JacalError(f"cannot write {path}: {err.strerror or err}; the previous file (if any) "
                             f"is unchanged") from None
        raise


def _fsync(path: Union[str, Path], flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Union[str, Path], mode: str = "w", *, durable: bool = False, **kwargs) -> Iterator[IO]:
    """``open`` that leaves either the old file or the complete new one, never a partial one
    (``durable``: see :func:`atomic_path`)."""
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f

