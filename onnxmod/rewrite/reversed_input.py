"""Rule: a forward recurrent op reading its input reversed in time becomes a reverse op.

Pattern (after ``reverse_sequence``)::

    LSTM/GRU/RNN(Slice(x, -1, INT64_MIN, axes=[0], steps=[-1]), ...)   direction="forward"

Rewritten as the same op on ``x`` with ``direction="reverse"``, whose ``Y`` is reversed in time by
the same Slice to give the original ``Y``; ``Y_h``/``Y_c`` are the same tensors. Exact: the forward
op over reversed ``x`` and the reverse op over ``x`` compute the same cell steps in the same order
(step ``s`` of the first is step ``T-1-s`` of the second).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from .base import RECURRENT_OPS, Match, Namer, Rule, forward_handler, is_full_reverse, producer, reverse_axis



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
        p = producer(node.inputs[0])
        if p is None or is_full_reverse(p) != 0:
            return self.no(node, "its input is not reversed in time")
        return Match(node, [p, node], {"x": p.inputs[0]})

    def rewrite(self, graph, m):
        node = m.node
        nm = Namer(graph, node.name)
        node.inputs[0] = m.data["x"]
        node.attrs["direction"] = "reverse"
        y = node.outputs[0] if node.outputs else None
        if y is not None and y.name:
            fresh = gs.Variable(nm("Y_reverse"), dtype=y.dtype)
            node.outputs[0] = fresh
            reverse_axis(graph, nm, fresh, 0, out=y)
