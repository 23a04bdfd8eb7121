"""Guarded access to input files: an existing, non-empty regular file or a one-line ``InputError``
naming it; JSON read within a size limit."""
from __future__ import annotations

import stat
from pathlib import Path

from ..errors import InputError


def _input_path(path, what: str) -> Path:
    """``path`` as an existing regular file, or a one-line InputError."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot access ({getattr(exc, 'strerror', None) or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p}: is a directory, expected {what}")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: is not a regular file, expected {what}")
    try:
        with open(p, "rb") as f:
            head = f.read(1)
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if not head:
        raise InputError(f"{p}: empty file, expected {what}")
    return p


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:limit] if text else type(exc).__name__)


MAX_JSON_BYTES = 64 << 20  # an index's JSON (zoo index.json): far above any real one, far below memory


def read_json(path, what: str = "a JSON file"):
    """A JSON file's value, read only when it is a regular file below ``MAX_JSON_BYTES``; anything
    unreadable is a one-line InputError naming the file."""
    import json

    p = _input_path(path, what)
    size = p.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InputError(f"{p}: {size:,} bytes, above onnxmod's limit of {MAX_JSON_BYTES:,} bytes for {what}")
    try:
        return json.loads(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"{p}: not valid JSON ({type(exc).__name__}: {_first_line(exc, 120)})") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or exc})") from None
