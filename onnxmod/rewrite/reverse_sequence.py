"""Rule: a ``ReverseSequence`` over the full length becomes a ``Slice`` with step -1.

Pattern (tf2onnx's backward direction, Keras ``go_backwards=True``)::

    ReverseSequence(x, sequence_lens, time_axis=a)   with every sequence_lens == x.shape[a]

``sequence_lens`` is proved full when it is a constant equal to a static length, or a broadcast
(``Expand``/``Tile``/``ConstantOfShape``/``Cast``/reshapes) of ``Shape(x)[a]`` (or of a size shape
inference ties to it). Rewritten as ``Slice(x, -1, INT64_MIN, axes=[a], steps=[-1])``, which the
unit flow follows and ``reversed_input`` turns into a reverse recurrent op. Exact (a copy).
"""
from __future__ import annotations

import numpy as np

from .. import optable
from .base import Match, ReversesAnAxis, const, producer
from .dims import dim_of, evaluate, same_dim


def _all_equal_to(t, length, depth: int = 0) -> bool:
    """Every element of ``t`` is ``length`` (an int or a ``Dyn``)."""
    if depth > 32:
        return False
    v = const(t)
    if v is not None:
        return isinstance(length, int) and v.size > 0 and bool(np.all(v == length))
    vals = evaluate(t)
    if vals is not None:
        return len(vals) > 0 and all(same_dim(x, length) for x in vals)
    p = producer(t)
    if p is None:
        return False
    if optable.copies_values(p.op) and p.op != "Concat":  # its elements are its input's
        return _all_equal_to(p.inputs[0], length, depth + 1)
    if p.op == "ConstantOfShape":
        val = p.attrs.get("value")
        arr = np.asarray(val.values if hasattr(val, "values") else val) if val is not None else np.zeros(1)
        return isinstance(length, int) and bool(np.all(arr == length))
    if p.op == "Concat":
        return all(_all_equal_to(x, length, depth + 1) for x in p.inputs)
    return False


class ReverseSequence(ReversesAnAxis):
    name = "reverse_sequence"
    anchor = ("ReverseSequence",)

    def match(self, graph, node):
        x = node.inputs[0]
        if x.shape is None:
            return self.no(node, "the input's rank is unknown")
        a = int(node.attrs.get("time_axis", 0))
        if not _all_equal_to(node.inputs[1], dim_of(x, a)):
            return self.no(node, "sequence_lens is not provably the full length of every row")
        return Match(node, [node], {"axis": a})
