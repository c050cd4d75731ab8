"""Reading task images safely: local files confined to the document root, regular files only,
sizes and pixel counts checked before anything is read or decoded.

* :func:`read_local`: resolve symlinks (``realpath``), refuse what lands outside the document root
  with the same message whether or not it exists, open without blocking (``O_NONBLOCK``: a FIFO
  cannot hang a worker) and without following a last-moment symlink (``O_NOFOLLOW``), refuse
  anything ``fstat`` does not call a regular file, refuse a file over the byte limit before reading;
* :func:`decode_bounded`: read the image header, refuse more pixels than the limit (and Pillow's
  decompression-bomb error) before the pixels are decoded.

Every refusal is a :class:`~jacal.serve.protocol.ProtocolError` with a one-line reason (4xx).
"""
from __future__ import annotations

import io
import os
import stat
import warnings
from typing import Any

from jacal._internal.validation import first_line
from jacal.serve.protocol import ProtocolError

__all__ = ["read_local", "decode_bounded", "outside_root"]


def outside_root(ref: str) -> ProtocolError:
    """The one answer for a path outside the document root (it says nothing about the file)."""
    return ProtocolError(f"image path {ref!r} leaves the document root", status=422)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_local(path: str, *, root: str, ref: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` if it lies inside ``root`` once symlinks are resolved.

    Args:
        path: the candidate file (absolute, or relative to the working directory).
        root: the document root.
        ref: the task's own reference (for messages).
        max_bytes: largest file read.

    Raises:
        ProtocolError: outside the root (422, the same message whether the file exists or not), not
            a regular file or unreadable (422), over ``max_bytes`` (413).
    """
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if not _inside(real, real_root):
        raise outside_root(ref)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:  # inside the root: saying what is wrong reveals nothing new
        raise ProtocolError(f"cannot open {ref!r} ({err.strerror or err})", status=422) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ProtocolError(f"image path {ref!r} is not a regular file", status=422)
        proc = f"/proc/self/fd/{fd}"  # the file actually opened (a component swapped for a symlink meanwhile)
        if os.path.exists(proc) and not _inside(os.path.realpath(proc), real_root):
            raise outside_root(ref)
        if st.st_size > max_bytes:
            raise ProtocolError(f"image {ref!r} is {st.st_size} bytes, over the limit of {max_bytes}", status=413)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise ProtocolError(f"cannot read {ref!r} ({err.strerror or err})", status=422) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ProtocolError(f"image {ref!r} is over the limit of {max_bytes} bytes", status=413)
    return data


def decode_bounded(data: bytes, channels: int, transform: Any, *, ref: str, max_pixels: int) -> Any:
    """Decode the image in ``data`` with Pillow, convert it to ``channels`` and apply ``transform``,
    after checking from its header that it has at most ``max_pixels`` pixels.

    Raises:
        ProtocolError: not an image Pillow reads, or too many pixels (422).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                w, h = im.size
                if w * h > max_pixels:
                    raise ProtocolError(f"image {ref!r} has too many pixels ({w}×{h}; the limit is {max_pixels})",
                                        status=422)
                img = im.convert("L" if channels == 1 else "RGB")
    except Image.DecompressionBombError:
        raise ProtocolError(f"image {ref!r} has too many pixels (a decompression bomb; the limit is {max_pixels})",
                            status=422) from None
    except UnidentifiedImageError:
        raise ProtocolError(f"{ref!r} is not an image jacal can read", status=422) from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise ProtocolError(f"cannot decode {ref!r} ({first_line(err)})", status=422) from None
    return transform(img)
