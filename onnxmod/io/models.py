"""Reading an ONNX model: checked at the door (external data inside the model's folder, the
checker with strict shape inference, UTF-8 names, decodable constants, onnxmod metadata), so
everything downstream can trust it; and what a model's input expects of data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from .. import safety
from ..errors import InputError
from .files import _first_line, _input_path
from .metadata import check_metadata


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
