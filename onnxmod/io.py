"""Reading models and data, writing results atomically.

Inputs are only ever opened for reading. Every output is written under a temporary name in the
destination's folder and renamed into place, so a reader (or an interrupted run) sees either the
previous state or the whole result.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .errors import InputError, UsageError

DATA_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_onnx(path) -> onnx.ModelProto:
    """Load and check an ONNX file, refusing anything unreadable with a one-line message."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected an ONNX file")
    try:
        with open(p, "rb") as f:
            head = f.read(1)
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or exc})")
    if not head:
        raise InputError(f"{p}: empty file, expected an ONNX model")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{p}: not an ONNX model (protobuf parse failed: {type(exc).__name__})")
    if not proto.graph.node and not proto.graph.output:
        raise InputError(f"{p}: not an ONNX model (no graph)")
    try:
        onnx.load_external_data_for_model(proto, str(p.parent))
    except FileNotFoundError as exc:
        raise InputError(f"{p}: external data file missing ({Path(exc.filename or str(exc)).name})")
    except Exception as exc:
        raise InputError(f"{p}: cannot load external data ({type(exc).__name__}: {exc})")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{p}: invalid ONNX model ({msg})")
    return proto


@dataclass
class Dataset:
    """The data contract: an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    ``x``: int64 token ids ``[N, T]`` (or float32 features ``[N, T, F]``); ``y``: int64 class ids
    ``[N]`` for one-output models or ``[N, T]`` for many-output ones, with ``-1`` on padding.
    Optional: ``class_names`` (str array), ``vocab`` (str array; its sha256 fingerprints the input).
    """

    path: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] | None = None
    vocab: list[str] | None = None

    @property
    def many_output(self) -> bool:
        return self.y_train.ndim == 2


def load_data(path, num_classes: int | None = None, many_output: bool | None = None,
              input_dtype=np.int64, input_shape: list | None = None) -> Dataset:
    """Load and validate a data file against what the model expects."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        with np.load(str(p), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(f"{p}: not a readable .npz file ({type(exc).__name__})")
    missing = [k for k in DATA_KEYS if k not in arrays]
    if missing:
        raise InputError(f"{p}: missing key(s) {', '.join(missing)} (need {', '.join(DATA_KEYS)})")
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        x = _check_x(p, f"x_{split}", x, input_dtype, input_shape)
        y = _check_y(p, f"y_{split}", y, num_classes, many_output)
        if x.shape[0] != y.shape[0]:
            raise InputError(f"{p}: x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]}")
        if x.shape[0] == 0:
            raise InputError(f"{p}: x_{split} is empty")
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    if out["y_train"].ndim != out["y_test"].ndim:
        raise InputError(f"{p}: y_train and y_test have different ranks")
    names = [str(s) for s in arrays["class_names"]] if "class_names" in arrays else None
    vocab = [str(s) for s in arrays["vocab"]] if "vocab" in arrays else None
    return Dataset(str(p), class_names=names, vocab=vocab, **out)


def _check_x(p, key, x, input_dtype, input_shape):
    integer = np.issubdtype(np.dtype(input_dtype), np.integer)
    if integer and not np.issubdtype(x.dtype, np.integer):
        raise InputError(f"{p}: {key} has dtype {x.dtype}, expected integer token ids")
    if not integer and not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{p}: {key} has dtype {x.dtype}, expected float features")
    if input_shape:
        want = ["N" if i == 0 or not isinstance(d, (int, np.integer)) else int(d) for i, d in enumerate(input_shape)]
        ok = x.ndim == len(want) and all(w == "N" or w == s for w, s in zip(want[1:], x.shape[1:]))
        if not ok:
            shown = ", ".join(str(w) if w != "N" else ("N" if i == 0 else "T") for i, w in enumerate(want))
            raise InputError(f"{p}: {key} has shape {list(x.shape)}, the model expects [{shown}]")
    elif integer and x.ndim != 2:
        raise InputError(f"{p}: {key} has shape {list(x.shape)}, expected [N, T] token ids")
    if integer:
        if x.size and x.min() < 0:
            raise InputError(f"{p}: {key} holds negative token ids")
        return x.astype(np.int64, copy=False)
    if not np.all(np.isfinite(x)):
        raise InputError(f"{p}: {key} contains NaN or infinite values")
    return x.astype(np.float32, copy=False)


def _check_y(p, key, y, num_classes, many_output):
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{p}: {key} has dtype {y.dtype}, expected integer class ids")
    if y.ndim not in (1, 2):
        raise InputError(f"{p}: {key} has shape {list(y.shape)}, expected [N] or [N, T]")
    if many_output is not None:
        want = 2 if many_output else 1
        if y.ndim != want:
            kind = "many-output ([N, T] labels)" if many_output else "one-output ([N] labels)"
            raise InputError(f"{p}: {key} has shape {list(y.shape)} but the model is {kind}")
    y = y.astype(np.int64, copy=False)
    lo = -1 if y.ndim == 2 else 0
    if y.size and y.min() < lo:
        raise InputError(f"{p}: {key} holds label {int(y.min())}; labels must be >= {lo}")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise InputError(f"{p}: {key} holds label {int(y.max())} but the model has {num_classes} classes")
    return y


# ---- atomic outputs -------------------------------------------------------------------------
def write_bytes_atomic(path, data: bytes) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_model_atomic(proto: onnx.ModelProto, path) -> None:
    write_bytes_atomic(path, proto.SerializeToString(deterministic=True))


def check_output_file(path, force: bool, inputs=()) -> Path:
    p = Path(path)
    for i in inputs:
        if Path(i).resolve() == p.resolve():
            raise UsageError(f"{p}: output would overwrite an input")
    if p.exists() and not force:
        raise UsageError(f"{p}: already exists (use --force to replace it)")
    if p.exists() and p.is_dir():
        raise UsageError(f"{p}: is a directory")
    return p


@contextlib.contextmanager
def atomic_directory(path, force: bool = False):
    """Build a directory under a temporary name; rename it into place only on success."""
    final = Path(path)
    if final.exists() and not force:
        raise UsageError(f"{final}: already exists (use --force to replace it)")
    if final.exists() and not final.is_dir():
        raise UsageError(f"{final}: exists and is not a directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=str(final.parent)))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=str(final.parent)))
            os.rmdir(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
