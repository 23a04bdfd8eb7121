"""Shape arithmetic: what a shape tensor (``Shape`` → ``Gather``/``Slice`` → ``Mul`` → ``Concat``)
holds, element by element, as static ints or *dynamic dims* identified by where they come from.

Two dynamic dims are the same when they resolve to the same axis of the same tensor (through
``Transpose`` and shape-preserving ops), or when ONNX shape inference gave them the same symbol.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import optable
from .base import const, producer, slice_params


@dataclass(frozen=True)
class Dyn:
    """A dynamic size: ``origin`` is (tensor name, axis) after resolution, ``symbol`` the inferred
    dim_param (or None); ``opaque`` marks an expression of sizes (only ever inferable as -1)."""

    origin: tuple | None
    symbol: str | None = None
    opaque: bool = False

    def same(self, other) -> bool:
        if not isinstance(other, Dyn) or self.opaque or other.opaque:
            return False
        if self.origin is not None and self.origin == other.origin:
            return True
        return self.symbol is not None and self.symbol == other.symbol


def dim_of(t, axis: int):
    """Axis ``axis`` of tensor ``t``: an int when static, else a ``Dyn``."""
    shape = t.shape
    d = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    if isinstance(d, (int, np.integer)) and d > 0:
        return int(d)
    sym = d if isinstance(d, str) and d else None
    return Dyn(_resolve(t, axis % len(shape) if shape is not None else axis), sym)


def _resolve(t, axis: int, depth: int = 0) -> tuple:
    p = producer(t)
    if p is None or depth > 64:
        return (t.name, axis)
    if p.op == "Transpose" and p.inputs:
        r = len(t.shape) if t.shape is not None else None
        perm = p.attrs.get("perm", list(range(r))[::-1] if r is not None else None)
        if perm is not None:
            return _resolve(p.inputs[0], int(perm[axis]), depth + 1)
    if optable.keeps_shape(p.op) and p.inputs:
        return _resolve(p.inputs[0], axis, depth + 1)
    return (t.name, axis)


def evaluate(t, depth: int = 0) -> list | None:
    """The elements of a 0-/1-D integer tensor as ints and ``Dyn``s, or None if not a shape expression."""
    if depth > 64:
        return None
    v = const(t)
    if v is not None:
        if v.ndim > 1 or not np.issubdtype(v.dtype, np.integer):
            return None
        return [int(x) for x in np.atleast_1d(v)]
    p = producer(t)
    if p is None:
        return None
    o = p.op
    if o == "Shape":
        x = p.inputs[0]
        if x.shape is None:
            return None
        r = len(x.shape)
        start, end = int(p.attrs.get("start", 0)), p.attrs.get("end")
        axes = range(r)[slice(start, None if end is None else int(end))]
        return [dim_of(x, a) for a in axes]
    if o in ("Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten"):
        return evaluate(p.inputs[0], depth + 1)
    if o == "Cast":
        to = p.attrs.get("to")
        return evaluate(p.inputs[0], depth + 1) if to in (6, 7) else None  # int32 / int64
    if o == "Concat":
        parts = [evaluate(x, depth + 1) for x in p.inputs]
        return None if any(x is None for x in parts) else [d for x in parts for d in x]
    if o == "Gather":
        data, idx = evaluate(p.inputs[0], depth + 1), const(p.inputs[1])
        if data is None or idx is None or idx.ndim > 1 or int(p.attrs.get("axis", 0)) != 0:
            return None
        try:
            return [data[int(i)] for i in np.atleast_1d(idx)]
        except IndexError:
            return None
    if o == "Slice":
        data = evaluate(p.inputs[0], depth + 1)
        sp = slice_params(p, 1)
        if data is None or sp is None or sp[2] != [0]:
            return None
        return data[slice(sp[0][0], sp[1][0], sp[3][0])]
    if o == "ReduceProd":
        data = evaluate(p.inputs[0], depth + 1)
        axes = p.attrs.get("axes", const(p.inputs[1]) if len(p.inputs) > 1 and p.inputs[1].name else None)
        if data is None or (axes is not None and [int(a) for a in np.atleast_1d(axes)] not in ([0], [-1])):
            return None
        if all(isinstance(d, int) for d in data):
            return [int(np.prod(data, dtype=np.int64))]
        return [data[0]] if len(data) == 1 else [Dyn(None, None, opaque=True)]
    if o in ("Mul", "Add", "Sub", "Div"):
        a, b = evaluate(p.inputs[0], depth + 1), evaluate(p.inputs[1], depth + 1)
        if a is None or b is None:
            return None
        if len(a) == 1 and len(b) > 1:
            a = a * len(b)
        if len(b) == 1 and len(a) > 1:
            b = b * len(a)
        if len(a) != len(b):
            return None
        out = []
        for x, y in zip(a, b):
            if isinstance(x, int) and isinstance(y, int):
                if o == "Div" and y == 0:
                    return None
                q = abs(x) // abs(y) * (1 if (x >= 0) == (y > 0) else -1) if o == "Div" else 0  # truncating
                out.append({"Mul": x * y, "Add": x + y, "Sub": x - y, "Div": q}[o])
            elif o == "Mul" and (x == 1 or y == 1):
                out.append(y if x == 1 else x)
            else:
                out.append(Dyn(None, None, opaque=True))
        return out
    return None


def same_dim(a, b) -> bool:
    if isinstance(a, int) or isinstance(b, int):
        return isinstance(a, int) and isinstance(b, int) and a == b
    return a.same(b)
