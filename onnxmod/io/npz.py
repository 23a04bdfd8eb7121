"""Reading ``.npz`` files lazily and within limits: each array's size and header are checked
before it is decompressed, pickles are never loaded."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .files import _first_line, _input_path


def _max_array_bytes() -> int:
    try:
        return max(int(os.environ.get("ONNXMOD_MAX_ARRAY_BYTES", "")), 1)
    except ValueError:
        return 256 << 20


# per .npz member, uncompressed (zip header) and declared (.npy header), checked before reading
MAX_ARRAY_BYTES = _max_array_bytes()


class NpzArrays:
    """The arrays of an ``.npz``, read lazily: listing it reads the zip directory only; each key is
    read when asked for, after its uncompressed size (zip header) and its declared shape and
    dtype (``.npy`` header) are checked against ``MAX_ARRAY_BYTES`` and each other, so an unused
    key is never decompressed and a zip bomb is refused before it is inflated."""

    def __init__(self, p: Path):
        import zipfile

        self.p = p
        try:
            with open(p, "rb") as f:
                magic = f.read(6)
        except OSError as exc:
            raise InputError(f"{p}: cannot read ({exc.strerror or exc})") from None
        if magic.startswith(b"\x93NUMPY"):
            raise InputError(f"{p}: not an .npz file (it holds a single array; save with numpy.savez)")
        if not magic.startswith(b"PK"):
            if magic[:1] == b"\x80":
                raise InputError(f"{p}: holds pickled Python objects, which onnxmod never loads; save plain arrays "
                                 f"with numpy.savez")
            raise InputError(f"{p}: not a readable .npz file (not a zip archive)")
        try:
            with zipfile.ZipFile(p) as z:
                infos = z.infolist()
        except Exception as exc:  # zip format errors of every kind
            raise InputError(f"{p}: not a readable .npz file ({type(exc).__name__}: {_first_line(exc, 120)})") from None
        self.members = {}
        self._headers: dict = {}
        for i in infos:
            key = i.filename[:-4] if i.filename.endswith(".npy") else i.filename
            self.members.setdefault(key, i)

    def __contains__(self, key) -> bool:
        return key in self.members

    def __iter__(self):
        return iter(self.members)

    def keys(self):
        return self.members.keys()

    def get(self, key, default=None):
        return self[key] if key in self.members else default

    def header(self, key: str) -> tuple[tuple, np.dtype]:
        """The member's declared shape and dtype (its ``.npy`` header), after every check
        ``__getitem__`` makes, without decompressing the array."""
        if key not in self._headers:
            self._headers[key] = self._checked_header(key)
        return self._headers[key]

    def _checked_header(self, key: str) -> tuple[tuple, np.dtype]:
        import zipfile

        p, info = self.p, self.members[key]
        if info.file_size > MAX_ARRAY_BYTES:
            raise InputError(f"{p}: key {key!r} holds {info.file_size:,} bytes uncompressed, above onnxmod's limit "
                             f"of {MAX_ARRAY_BYTES:,} bytes per array")
        try:
            with zipfile.ZipFile(p) as z, z.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f, max_header_size=10000)
                header = f.tell() if f.seekable() else None
        except Exception as exc:
            raise InputError(f"{p}: key {key!r} cannot be read "
                             f"({type(exc).__name__}: {_first_line(exc, 120)})") from None
        if dtype.hasobject:
            raise InputError(f"{p}: key {key!r} holds Python objects (pickled), which onnxmod never loads; "
                             f"store numbers or strings")
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
        room = info.file_size - (header or 0)
        if declared > MAX_ARRAY_BYTES or declared > room:
            raise InputError(f"{p}: key {key!r} declares shape {list(shape)} of {dtype} ({declared:,} bytes) "
                             f"but " + (f"onnxmod's limit is {MAX_ARRAY_BYTES:,} bytes per array"
                                        if declared > MAX_ARRAY_BYTES else f"holds {room:,} bytes"))
        return tuple(int(d) for d in shape), dtype

    def __getitem__(self, key: str) -> np.ndarray:
        p = self.p
        self.header(key)
        try:
            with np.load(str(p), allow_pickle=False) as z:
                return z[key]
        except Exception as exc:
            if "allow_pickle" in str(exc) or "pickle" in str(exc):
                raise InputError(f"{p}: key {key!r} holds Python objects (pickled), which onnxmod never loads; "
                                 f"store numbers or strings") from None
            raise InputError(f"{p}: key {key!r} cannot be read "
                             f"({type(exc).__name__}: {_first_line(exc, 120)})") from None


def read_npz(path, what: str = "an .npz file") -> NpzArrays:
    """The guarded reader every ``.npz`` onnxmod reads goes through (data, probe data, zoo data,
    fingerprint tables): an existing regular file, opened lazily (``NpzArrays``), each array
    checked against ``MAX_ARRAY_BYTES`` before it is decompressed."""
    return NpzArrays(_input_path(path, what))


def _read_npz(p: Path) -> NpzArrays:
    return NpzArrays(p)
