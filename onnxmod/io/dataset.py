"""The data contract: the arrays of a data file, checked against what the model expects."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .files import _input_path
from .npz import _read_npz

DATA_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class Dataset:
    """The data contract: an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    ``x``: int64 token ids ``[N, T]`` (or float32 features ``[N, T, F]``); ``y``: int64 class ids
    ``[N]`` for one-output models or ``[N, T]`` for many-output ones, with ``-1`` on padding.
    Optional: ``class_names`` (str array), ``vocab`` (str array; its sha256 fingerprints the input),
    ``x_val``/``y_val`` (a split the model never trained on; the size search uses it).
    """

    path: str
    x_train: np.ndarray | None  # None when loaded with train=False
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] | None = None
    vocab: list[str] | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def many_output(self) -> bool:
        return (self.y_train if self.y_train is not None else self.y_test).ndim == 2


def load_data(path, num_classes: int | None = None, many_output: bool | None = None,
              input_dtype=np.int64, input_shape: list | None = None, max_token: int | None = None,
              train: bool = True, labels: bool = True) -> Dataset:
    """Load and validate a data file against what the model expects (``max_token``: token ids must
    be below it, see ``token_limit``). ``train=False`` reads the test split only (``evaluate``):
    the training and validation arrays are then never read, and are None. Only the keys needed are
    ever decompressed (``NpzArrays``). ``labels=False`` (labels taken from the model,
    ``onnxmod.labels``): ``y_*`` may be absent (then None); those present are checked as usual."""
    p = _input_path(path, "an .npz data file")
    arrays = _read_npz(p)
    needed = DATA_KEYS if train else ("x_test", "y_test")
    if not labels:
        needed = tuple(k for k in needed if k.startswith("x_"))
    missing = [k for k in needed if k not in arrays]
    if missing:
        raise InputError(f"{p}: missing key(s) {', '.join(missing)} (need {', '.join(needed)})")
    out = {}
    splits = ["train", "test"] if train else ["test"]
    if train and ("x_val" in arrays or "y_val" in arrays):
        if not ("x_val" in arrays and ("y_val" in arrays or not labels)):
            raise InputError(f"{p}: has only one of x_val, y_val (give both or neither)")
        splits.append("val")
    for split in splits:
        x = _check_x(p, f"x_{split}", arrays[f"x_{split}"], input_dtype, input_shape, max_token)
        y = None
        if labels or f"y_{split}" in arrays:
            y = _check_y(p, f"y_{split}", arrays[f"y_{split}"], num_classes, many_output)
            if x.shape[0] != y.shape[0]:
                raise InputError(f"{p}: x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]}")
        if x.shape[0] == 0:
            raise InputError(f"{p}: x_{split} is empty")
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    if train and labels and out["y_train"].ndim != out["y_test"].ndim:
        raise InputError(f"{p}: y_train and y_test have different ranks")
    names = _strings(p, "class_names", arrays.get("class_names"))
    vocab = _strings(p, "vocab", arrays.get("vocab")) if train else None
    out.setdefault("x_train", None)
    out.setdefault("y_train", None)
    return Dataset(str(p), class_names=names, vocab=vocab, **out)


def _strings(p: Path, key: str, a) -> list[str] | None:
    if a is None:
        return None
    if a.ndim != 1:
        raise InputError(f"{p}: {key} has shape {list(a.shape)}, expected a 1-D array of strings")
    return [str(s) for s in a]


def _check_x(p, key, x, input_dtype, input_shape, max_token=None):
    want_dtype = np.dtype(input_dtype)
    integer = np.issubdtype(want_dtype, np.integer)
    if integer and (not np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise InputError(f"{p}: {key} has dtype {x.dtype}, expected integer token ids")
    if not integer and not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{p}: {key} has dtype {x.dtype}, expected float features")
    if input_shape:
        want = ["N" if i == 0 or not isinstance(d, (int, np.integer)) or d <= 0 else int(d)
                for i, d in enumerate(input_shape)]
        ok = x.ndim == len(want) and all(w == "N" or w == s for w, s in zip(want[1:], x.shape[1:]))
        if not ok:
            shown = ", ".join(str(w) if w != "N" else ("N" if i == 0 else "T") for i, w in enumerate(want))
            raise InputError(f"{p}: {key} has shape {list(x.shape)}, the model expects [{shown}]")
    elif integer and x.ndim != 2:
        raise InputError(f"{p}: {key} has shape {list(x.shape)}, expected [N, T] token ids")
    elif x.ndim < 2:
        raise InputError(f"{p}: {key} has shape {list(x.shape)}, expected [N, T] or [N, T, F]")
    if integer:
        if x.size and x.min() < 0:
            raise InputError(f"{p}: {key} holds negative token ids")
        if x.size and int(x.max()) > np.iinfo(want_dtype).max:
            raise InputError(f"{p}: {key} holds token id {int(x.max())}, too large for the model's {want_dtype} input")
        if max_token is not None and x.size and int(x.max()) >= max_token:
            raise InputError(f"{p}: {key} holds token id {int(x.max())} but the model's embedding has {max_token} "
                             f"rows (ids 0..{max_token - 1}); was the data encoded with another vocabulary?")
        return x.astype(want_dtype, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = x.astype(want_dtype, copy=False)
    if not np.all(np.isfinite(cast)):
        what = "NaN or infinite values" if not np.all(np.isfinite(x)) else f"values too large for {want_dtype}"
        raise InputError(f"{p}: {key} contains {what}")
    return cast


def _check_y(p, key, y, num_classes, many_output):
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise InputError(f"{p}: {key} has dtype {y.dtype}, expected integer class ids")
    if y.ndim not in (1, 2):
        raise InputError(f"{p}: {key} has shape {list(y.shape)}, expected [N] or [N, T]")
    if many_output is not None:
        want = 2 if many_output else 1
        if y.ndim != want:
            kind = "many-output ([N, T] labels)" if many_output else "one-output ([N] labels)"
            raise InputError(f"{p}: {key} has shape {list(y.shape)} but the model is {kind}")
    lo = -1 if y.ndim == 2 else 0
    if y.size and int(y.min()) < lo:
        raise InputError(f"{p}: {key} holds label {int(y.min())}; labels must be >= {lo}")
    if num_classes is not None and y.size and int(y.max()) >= num_classes:
        raise InputError(f"{p}: {key} holds label {int(y.max())} but the model has {num_classes} classes")
    if y.size and int(y.max()) > np.iinfo(np.int64).max:
        raise InputError(f"{p}: {key} holds label {int(y.max())}, too large")
    return y.astype(np.int64, copy=False)
