"""Concrete sizes for the flow's reshapes: a tensor's static shape with its dynamic dimensions
given values, and where the literal that sizes an output axis is written (so slicing can rewrite
it), or that it follows the units by itself (``-1``, a copied ``0``, ``Shape`` of the tensor)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

# two assignments of distinct values to dynamic dimensions: a reshape that gives the units the same
# layout under both never merges them with a dynamic axis
FILLS = ((2, 3, 5, 7, 11, 13, 17, 19), (3, 5, 7, 11, 13, 17, 19, 23))


class Sizes:
    """Dynamic dimensions named consistently: the same ``dim_param`` gets the same value."""

    def __init__(self, which: int):
        self.values = FILLS[which]
        self.named: dict = {}

    def dim(self, d):
        if isinstance(d, (int, np.integer)) and d >= 0:
            return int(d)
        key = d if isinstance(d, str) and d else object()
        if key not in self.named:
            seen = len(self.named)
            self.named[key] = self.values[seen % len(self.values)] * (1 + seen // len(self.values))
        return self.named[key]

    def shape(self, shape) -> list[int] | None:
        return None if shape is None else [self.dim(d) for d in shape]


def reshape_target(in_shape: list[int], target: np.ndarray, allowzero: int) -> list[int] | None:
    out = [int(v) for v in np.asarray(target).reshape(-1)]
    for i, v in enumerate(out):
        if v == 0 and not allowzero:
            if i >= len(in_shape):
                return None
            out[i] = in_shape[i]
    if out.count(-1) > 1:
        return None
    if -1 in out:
        known = int(np.prod([v for v in out if v != -1]))
        total = int(np.prod(in_shape))
        if known == 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return out


def groups(a: list[int], b: list[int]) -> list[tuple[range, range]] | None:
    """The reshape from shape ``a`` to ``b`` as matched groups of contiguous axes (equal products),
    size-1 axes each their own group where they can be; None when the products never match."""
    i = j = 0
    out = []
    while i < len(a) or j < len(b):
        if i < len(a) and j < len(b) and a[i] == b[j]:
            out.append((range(i, i + 1), range(j, j + 1)))
            i, j = i + 1, j + 1
            continue
        if i < len(a) and a[i] == 1:
            out.append((range(i, i + 1), range(j, j)))
            i += 1
            continue
        if j < len(b) and b[j] == 1:
            out.append((range(i, i), range(j, j + 1)))
            j += 1
            continue
        i0, j0 = i, j
        pa = pb = 1
        if i < len(a):
            pa, i = a[i], i + 1
        if j < len(b):
            pb, j = b[j], j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                pa, i = pa * a[i], i + 1
            elif pb < pa and j < len(b):
                pb, j = pb * b[j], j + 1
            else:
                return None
        out.append((range(i0, i), range(j0, j)))
    return out


def literal(t, index: int, source_of_units) -> tuple | str | None:
    """Where element ``index`` of the 1-D int tensor ``t`` (a shape) is written: ``("const",
    node, input_index, flat_index)`` for a literal slicing must rewrite, ``"auto"`` for a value that
    follows the units by itself (element ``axis`` of a ``Shape`` node that reads them sliced, on
    their axis: ``source_of_units(shape_node, axis)`` says so), None when neither can be told."""
    if isinstance(t, gs.Constant):
        return None  # the caller rewrites its own constant input
    if not t.inputs:
        return None
    node = t.inputs[0]
    if node.op == "Concat":
        k = 0
        for i, piece in enumerate(node.inputs):
            n = vector_length(piece)
            if n is None:
                return None
            if k <= index < k + n:
                if isinstance(piece, gs.Constant):
                    return ("const", node, i, index - k)
                return literal(piece, index - k, source_of_units)
            k += n
        return None
    if node.op == "Unsqueeze" and index == 0:
        return _scalar(node.inputs[0], source_of_units)
    if node.op == "Shape" and not node.attrs.get("start") and node.attrs.get("end") is None:
        return "auto" if source_of_units(node, index) else None
    if node.op == "Identity" or node.op == "Cast":
        return literal(node.inputs[0], index, source_of_units)
    return None


def _scalar(t, source_of_units):
    if isinstance(t, gs.Constant):
        return None
    if not t.inputs:
        return None
    node = t.inputs[0]
    if node.op == "Gather" and isinstance(node.inputs[1], gs.Constant) and node.inputs[0].inputs \
            and node.inputs[0].inputs[0].op == "Shape":
        idx = int(np.asarray(node.inputs[1].values).reshape(-1)[0])
        shape_node = node.inputs[0].inputs[0]
        rank = len(shape_node.inputs[0].shape or [])
        return "auto" if rank and source_of_units(shape_node, idx % rank) else None
    if node.op in ("Squeeze", "Identity", "Cast"):
        return _scalar(node.inputs[0], source_of_units)
    return None


def vector_length(t) -> int | None:
    """How many elements the 1-D integer tensor ``t`` (a piece of a shape) holds, when the graph
    tells: a constant, a declared length, an ``Unsqueeze``-d scalar, a ``Shape`` of a tensor of
    known rank (with its ``start``/``end``)."""
    if isinstance(t, gs.Constant):
        return int(np.asarray(t.values).size)
    if t.shape is not None and len(t.shape) == 1 and isinstance(t.shape[0], (int, np.integer)):
        return int(t.shape[0])
    if t.inputs and t.inputs[0].op == "Unsqueeze":
        return 1
    if t.inputs and t.inputs[0].op == "Shape":
        src = t.inputs[0].inputs[0]
        if src.shape is not None:
            return len(list(range(len(src.shape)))[slice(t.inputs[0].attrs.get("start", 0),
                                                        t.inputs[0].attrs.get("end"))])
    return None
