"""Reading models and data, writing results atomically.

Inputs are only ever opened for reading. Every output is written under a temporary name in the
destination's folder and renamed into place, so a reader (or an interrupted run) sees either the
previous state or the whole result.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from . import safety
from .errors import InputError, OutputError, UsageError

DATA_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def _check_external_data(p: Path, proto: onnx.ModelProto) -> None:
    """Name the missing file before onnx does (its message is a multi-clause validation error)."""
    try:
        tensors = list(onnx.external_data_helper._get_all_tensors(proto))
    except Exception:  # a private helper: if it moves, onnx's own check below still refuses
        return
    for t in tensors:
        if not onnx.external_data_helper.uses_external_data(t):
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        if not loc:
            raise InputError(f"{p}: tensor {t.name!r} is stored externally but names no data file")
        # inside the model's folder (symlinks resolved) before anything is asked of the file system
        # about it: a missing and an existing path outside give the same answer (no existence oracle)
        folder = safety.real(p.parent)
        if os.path.isabs(loc) or folder not in safety.real(p.parent / loc).parents:
            raise InputError(f"{p}: tensor {t.name!r} is stored externally at {loc!r}, outside the model's folder; "
                             f"onnxmod reads external data only from the model's folder")
        f = p.parent / loc
        if not f.is_file():
            raise InputError(f"{p}: external data file {loc} is missing (needed by tensor {t.name!r}; "
                             f"looked in {p.parent})")


def load_onnx(path) -> onnx.ModelProto:
    """Load and check an ONNX file, refusing anything unreadable with a one-line message."""
    p = _input_path(path, "an ONNX model")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{p}: not an ONNX model (protobuf parse failed: {type(exc).__name__})") from None
    if not proto.graph.node and not proto.graph.output:
        raise InputError(f"{p}: not an ONNX model (no graph)")
    _check_external_data(p, proto)
    try:
        onnx.load_external_data_for_model(proto, str(p.parent))
    except FileNotFoundError as exc:
        raise InputError(f"{p}: external data file missing ({Path(exc.filename or str(exc)).name})") from None
    except Exception as exc:
        raise InputError(f"{p}: cannot load external data ({type(exc).__name__}: {_first_line(exc)})") from None
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise InputError(f"{p}: invalid ONNX model ({_first_line(exc)})") from None
    _check_constants(p, proto)
    _weights_not_inputs(proto)
    check_metadata(proto, str(p))
    try:  # strict shape inference: shapes and types must agree (onnxruntime would refuse otherwise)
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise InputError(f"{p}: inconsistent ONNX model (shape inference: {_first_line(exc)})") from None
    return proto


def _weights_not_inputs(proto: onnx.ModelProto) -> None:
    """IR version 3 (opset <= 8 exporters) lists every initializer among the graph's inputs too.
    Read it as IR 4 does: the weights are constants, the graph's inputs are the data. The graph
    computes the same; rewriting it then keeps weights constant, as for any newer model."""
    if proto.ir_version >= 4:
        return
    weights = {t.name for t in proto.graph.initializer}
    data = [i for i in proto.graph.input if i.name not in weights]
    if len(data) == len(proto.graph.input):
        return
    del proto.graph.input[:]
    proto.graph.input.extend(data)
    proto.ir_version = 4


def _graphs(g: onnx.GraphProto):
    yield g
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(a.g)
            for sub in a.graphs:
                yield from _graphs(sub)


def _bad_text(msg, where: str = "") -> str | None:
    """The first string field that is not valid UTF-8 (protobuf hands those over as bytes), or None."""
    for fd, value in msg.ListFields():
        if fd.type not in (fd.TYPE_STRING, fd.TYPE_MESSAGE):
            continue
        values = value if fd.is_repeated else [value]
        for i, v in enumerate(values):
            here = f"{where}.{fd.name}" + (f"[{i}]" if fd.is_repeated else "")
            if fd.type == fd.TYPE_STRING:
                if not isinstance(v, str):
                    return here.lstrip(".")
            else:
                bad = _bad_text(v, here)
                if bad:
                    return bad
    return None


def _check_constants(p: Path, proto: onnx.ModelProto) -> None:
    """Every name is UTF-8 text, every constant decodes to its declared dims and every string
    attribute is UTF-8: the checker verifies none of these, and a graph library meeting one fails
    with an arbitrary exception."""
    bad = _bad_text(proto)
    if bad:
        raise InputError(f"{p}: field {bad} is not valid UTF-8 text")
    for g in _graphs(proto.graph):
        tensors = list(g.initializer)
        for n in g.node:
            for a in n.attribute:
                where = f"node {n.name or n.op_type!r} attribute {a.name!r}"
                try:
                    a.s.decode("utf-8")
                    for s in a.strings:
                        s.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"{p}: {where} is not valid UTF-8 text") from None
                if a.HasField("t"):
                    tensors.append(a.t)
                tensors.extend(a.tensors)
        for t in tensors:
            try:
                arr = onnx.numpy_helper.to_array(t)
                ok = tuple(arr.shape) == tuple(t.dims)
            except Exception as exc:
                raise InputError(f"{p}: tensor {t.name!r} cannot be decoded ({type(exc).__name__}: "
                                 f"{_first_line(exc, 160)})") from None
            if not ok:
                raise InputError(f"{p}: tensor {t.name!r} holds {arr.shape} values but declares dims {list(t.dims)}")


MAX_CLASS_INDEX = 1 << 16  # one module per class: far beyond any model onnxmod decomposes
KINDS = ("model", "module", "composition", "fused")


def _is_int(v, lo: int, hi: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v < hi)


_INDEX = re.compile(r"0|[1-9][0-9]{0,17}")


def parse_index(text) -> int | None:
    """A metadata integer as onnxmod writes it: plain decimal digits, no sign, no leading zero,
    no spaces or underscores (``int()`` would take ``" 3 "``, ``"1_000"``, 30 digits)."""
    return int(text) if isinstance(text, str) and _INDEX.fullmatch(text) else None


def _json(where: str, key: str, text: str):
    import json

    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise InputError(f"{where}: metadata {key!r} is not valid JSON ({text[:40]!r})") from None


def _signature_ok(sig) -> bool:
    sigs = sig if isinstance(sig, list) else [sig]
    return bool(sigs) and all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("dtype"), str)
        and isinstance(s.get("shape"), list) and all(d is None or _is_int(d, 0) or isinstance(d, str)
                                                     for d in s["shape"]) for s in sigs)


def check_metadata(proto: onnx.ModelProto, where: str) -> None:
    """The ``onnxmod.*`` metadata that modules and compositions carry, checked once at the door so
    composing, splitting and evaluating can trust it (hand-edited or damaged files are refused here
    with the key named, instead of failing somewhere later)."""
    check_metadata_map({e.key: e.value for e in proto.metadata_props}, where)


def check_metadata_map(meta: dict, where: str, nested: bool = False) -> None:
    """``check_metadata`` on a key/value map: a file's, or one module's inside a composition's
    ``onnxmod.modules`` (``nested``: it must then be a module's, with its identity complete)."""
    kind = meta.get("onnxmod.kind")
    if kind is not None and kind not in KINDS:
        raise InputError(f"{where}: metadata 'onnxmod.kind' is {str(kind)[:40]!r}, expected one of {', '.join(KINDS)}")
    if nested:
        if kind != "module":
            raise InputError(f"{where}: metadata 'onnxmod.kind' is {kind!r}, expected 'module'")
        for key in ("onnxmod.class_index", "onnxmod.class_name", "onnxmod.input_signature"):
            if key not in meta:
                raise InputError(f"{where}: metadata {key!r} is missing")

    def integer(key, lo, hi=None):
        if key in meta:
            v = parse_index(meta[key])
            if v is None or not _is_int(v, lo, hi):
                bound = f"{lo}..{hi - 1}" if hi else f">= {lo}"
                raise InputError(f"{where}: metadata {key!r} is {meta[key][:40]!r}, expected a plain decimal "
                                 f"integer {bound}")

    integer("onnxmod.class_index", 0, MAX_CLASS_INDEX)
    integer("onnxmod.max_steps", 1, 1 << 31)
    integer("onnxmod.lang_token", 0, 1 << 31)
    integer("onnxmod.ctc_blank", 0, MAX_CLASS_INDEX)
    if "onnxmod.input_signature" in meta:
        if not _signature_ok(_json(where, "onnxmod.input_signature", meta["onnxmod.input_signature"])):
            raise InputError(f"{where}: metadata 'onnxmod.input_signature' is malformed (expected name, dtype and "
                             f"shape per input)")
    if "onnxmod.classes" in meta:
        classes = _json(where, "onnxmod.classes", meta["onnxmod.classes"])
        if not isinstance(classes, list) or not all(
                isinstance(c, dict) and _is_int(c.get("class_index"), 0, MAX_CLASS_INDEX)
                and isinstance(c.get("class_name"), str) for c in classes):
            raise InputError(f"{where}: metadata 'onnxmod.classes' is malformed (expected a list of "
                             f"class_index/class_name entries)")
    if "onnxmod.modules" in meta:
        mods = _json(where, "onnxmod.modules", meta["onnxmod.modules"])
        if nested or not isinstance(mods, list) or not all(
                isinstance(m, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
                for m in mods):
            raise InputError(f"{where}: metadata 'onnxmod.modules' is malformed (expected one key/value map per module)")
        for k, m in enumerate(mods):
            check_metadata_map(m, f"{where}: metadata 'onnxmod.modules' entry {k}", nested=True)
    if "onnxmod.module_outputs" in meta:
        outs = _json(where, "onnxmod.module_outputs", meta["onnxmod.module_outputs"])
        if not isinstance(outs, list) or not all(
                isinstance(o, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p)
                                            for p in o) for o in outs):
            raise InputError(f"{where}: metadata 'onnxmod.module_outputs' is malformed "
                             f"(expected per module a list of [output name, tensor name] pairs)")
    if "onnxmod.class_names" in meta:
        names = _json(where, "onnxmod.class_names", meta["onnxmod.class_names"])
        if not isinstance(names, list):
            raise InputError(f"{where}: metadata 'onnxmod.class_names' is not a list")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:limit] if text else type(exc).__name__)


def input_spec(proto: onnx.ModelProto) -> dict:
    """``load_data`` keywords (``input_dtype``, ``input_shape``) for a graph's first real input, so data
    for a module or composition is checked against it as data for a model is."""
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if not inputs or not inputs[0].type.HasField("tensor_type"):
        return {}
    t = inputs[0].type.tensor_type
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
    except (KeyError, TypeError, ValueError):
        return {}
    shape = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim] if t.HasField("shape") else []
    return {"input_dtype": dtype, "input_shape": shape or None, "max_token": token_limit(proto)}


def token_limit(proto: onnx.ModelProto) -> int | None:
    """The rows of the embedding table(s) a ``Gather`` reads with the graph's input as indices (the
    vocabulary size), or None: token ids must stay below it, or onnxruntime fails mid-run."""
    inits = {t.name: t for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in inits]
    if not inputs:
        return None
    limits = []
    for n in proto.graph.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == inputs[0] and n.input[0] in inits:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            dims = list(inits[n.input[0]].dims)
            if -len(dims) <= axis < len(dims):
                limits.append(int(dims[axis]))
    return min(limits) if limits else None


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
            raise InputError(f"{p}: key {key!r} cannot be read ({type(exc).__name__}: {_first_line(exc, 120)})") from None
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
            raise InputError(f"{p}: key {key!r} cannot be read ({type(exc).__name__}: {_first_line(exc, 120)})") from None


def read_npz(path, what: str = "an .npz file") -> NpzArrays:
    """The guarded reader every ``.npz`` onnxmod reads goes through (data, probe data, zoo data,
    fingerprint tables): an existing regular file, opened lazily (``NpzArrays``), each array
    checked against ``MAX_ARRAY_BYTES`` before it is decompressed."""
    return NpzArrays(_input_path(path, what))


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


def _read_npz(p: Path) -> NpzArrays:
    return NpzArrays(p)


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


# ---- atomic outputs -------------------------------------------------------------------------
_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM until the block ends, so a create-and-register or rename sequence is
    never cut in half (the signal is delivered, and acted on, right after)."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _make_parent(p: Path) -> list[Path]:
    """Create ``p``'s missing folders; returns them (deepest first) so a failure can remove them."""
    missing = []
    with contextlib.suppress(OSError):
        for a in (p.parent, *p.parent.parents):
            if a.exists():
                break
            missing.append(a)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        return missing
    except OSError as exc:
        _remove_empty(missing)
        reason = _os_reason(exc)
        with contextlib.suppress(OSError):
            blocker = next((a for a in (p.parent, *p.parent.parents) if a.exists()), None)
            if blocker is not None and not blocker.is_dir():
                reason = f"{blocker} is a file, not a directory"
        raise OutputError(f"{p}: cannot create its folder ({reason})") from None


def _remove_empty(folders: list[Path]) -> None:
    for a in folders:  # deepest first; only if still empty
        with contextlib.suppress(OSError):
            a.rmdir()


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling ``.name.*.tmp`` renamed into place."""
    p = Path(path)
    created = _make_parent(p)
    safety.sweep_stale(p)
    tmp = None
    try:
        with signals_deferred():
            fd, tmp = tempfile.mkstemp(prefix=safety.temp_prefix(p.name), suffix=".tmp", dir=str(p.parent))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        with signals_deferred():
            os.replace(tmp, p)
            tmp = None
    except BaseException as exc:
        with signals_deferred():
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            _remove_empty(created)
        if isinstance(exc, OSError):
            raise OutputError(f"{p}: cannot write ({_os_reason(exc)})") from None
        raise


def save_model_atomic(proto: onnx.ModelProto, path) -> None:
    write_bytes_atomic(path, proto.SerializeToString(deterministic=True))


check_output_file = safety.check_output_file
check_output_dir = safety.check_output_dir


@contextlib.contextmanager
def atomic_directory(path, force: bool = False, inputs=()):
    """Build a directory under a temporary name (``.name.PID.*.partial``); rename it into place only
    on success, with the ``safety.MARKER`` file listing what it holds. With ``force`` an existing
    previous onnxmod output is replaced, and put back if the swap fails; anything else is refused
    (``safety.check_output_dir``)."""
    final = safety.check_output_dir(path, force, inputs)
    created = _make_parent(final)
    safety.sweep_stale(final)
    tmp = None
    try:
        with signals_deferred():
            try:
                tmp = Path(tempfile.mkdtemp(prefix=safety.temp_prefix(final.name), suffix=".partial",
                                            dir=str(final.parent)))
                os.chmod(tmp, 0o777 & ~_umask())
                (tmp / safety.MARKER).write_bytes(safety.partial_stamp())
            except OSError as exc:
                raise OutputError(f"{final}: cannot create a directory next to it ({_os_reason(exc)})") from None
        yield tmp
        files = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file() and p != tmp / safety.MARKER]
        write_bytes_atomic(tmp / safety.MARKER, safety.marker_bytes(files))
        with signals_deferred():
            _swap_into_place(tmp, final)
            tmp = None
    except BaseException:
        with signals_deferred():
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            _remove_empty(created)
        raise


def _swap_into_place(tmp: Path, final: Path) -> None:
    old = None
    try:
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=safety.temp_prefix(final.name), suffix=".old", dir=str(final.parent)))
            os.rmdir(old)
            os.replace(final, old)
        os.replace(tmp, final)
    except OSError as exc:
        if old is not None and not final.exists():
            with contextlib.suppress(OSError):
                os.replace(old, final)
        raise OutputError(f"{final}: cannot move the finished output into place ({_os_reason(exc)})") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
