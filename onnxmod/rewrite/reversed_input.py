"""Rule: a forward recurrent op reading its input reversed in time becomes a reverse op.

Pattern (after ``reverse_sequence`` / ``reverse_gather``)::

    LSTM/GRU/RNN(Slice(x, -1, INT64_MIN, axes=[0], steps=[-1]), ...)                 direction="forward"
    LSTM/GRU/RNN(Transpose(Slice(x, -1, INT64_MIN, axes=[a], steps=[-1]), perm), ...)  perm[0] == a

The second is a batch-major tensor reversed in time and then made time-major (a cell a front-end
lifted from an unrolled chain that read a flipped input). Rewritten as the same op on ``x`` (or on
``Transpose(x, perm)``) with ``direction="reverse"``, whose ``Y`` is reversed in time by the same
Slice to give the original ``Y``; ``Y_h``/``Y_c`` are the same tensors. Exact: the forward op over
reversed ``x`` and the reverse op over ``x`` compute the same cell steps in the same order (step
``s`` of the first is step ``T-1-s`` of the second).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from .base import RECURRENT_OPS, Match, Namer, Rule, add_node, forward_handler, is_full_reverse, producer, reverse_axis


def reversed_in_time(t):
    """(what ``t`` reverses in time, the Transpose that makes it time-major or None) when ``t`` is a
    time-major tensor read reversed in time; else None."""
    p = producer(t)
    if p is None:
        return None
    if is_full_reverse(p) == 0:
        return p.inputs[0], None
    if p.op == "Transpose" and "perm" in p.attrs:
        q = producer(p.inputs[0])
        if q is not None and is_full_reverse(q) == int(p.attrs["perm"][0]):
            return q.inputs[0], p
    return None


class ReversedInput(Rule):
    name = "reversed_input"
    anchor = RECURRENT_OPS

    def match(self, graph, node):
        _, no = forward_handler(self, node)
        if no is not None:
            return no
        if int(node.attrs.get("layout", 0)) != 0:
            return self.no(node, "layout=1")
        if len(node.inputs) > 4 and node.inputs[4].name:
            return self.no(node, "it has sequence_lens")
        got = reversed_in_time(node.inputs[0])
        if got is None:
            return self.no(node, "its input is not reversed in time")
        x, transpose = got
        nodes = [producer(node.inputs[0])] + ([producer(transpose.inputs[0])] if transpose is not None else [])
        return Match(node, [*nodes, node], {"x": x, "transpose": transpose})

    def rewrite(self, graph, m):
        node = m.node
        nm = Namer(graph, node.name)
        x, transpose = m.data["x"], m.data["transpose"]
        if transpose is not None:  # x made time-major as the reversed input was
            x = add_node(graph, nm, "Transpose", [x], attrs={"perm": list(transpose.attrs["perm"])}, dtype=x.dtype,
                         tag="time_major")
        node.inputs[0] = x
        node.attrs["direction"] = "reverse"
        y = node.outputs[0] if node.outputs else None
        if y is not None and y.name:
            fresh = gs.Variable(nm("Y_reverse"), dtype=y.dtype)
            node.outputs[0] = fresh
            reverse_axis(graph, nm, fresh, 0, out=y)
