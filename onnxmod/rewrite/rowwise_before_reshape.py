"""Rule: a softmax in front of a ``Reshape`` that keeps the last axis moves after it.

Pattern (tf_keras's ``TimeDistributed(Dense(C, activation="softmax"))`` as tf2onnx writes it: the
rows flattened, the Dense, its softmax, the rows unflattened)::

    Reshape(act(y), t)   with y [..., C], t[-1] == C (or 0, copying it)

where ``act`` is a Softmax/LogSoftmax over the last axis read only by the ``Reshape``, and the
``Reshape`` leads to the graph output (through reshapes, transposes and softmaxes only). Rewritten
as ``act(Reshape(y, t))``, so the activation is the last op before the output and the output layer
is found behind the reshape (what ``Model`` looks for). Exact: a reshape whose input and output both
end in the same ``C`` maps every row of ``C`` values, in order, onto one row, and a softmax over the
last axis acts on each row alone.
"""
from __future__ import annotations

from .base import Match, Namer, Rule, add_node, producer, rowwise
from .dims import dim_of, evaluate, same_dim

_TOWARD_OUTPUT = {"Reshape", "Transpose", "Identity", "Softmax", "LogSoftmax"}


def _reaches_output(graph, t, depth: int = 0) -> bool:
    """``t`` is a graph output, or reaches one through single readers that only move or normalize it."""
    if any(o is t for o in graph.outputs):
        return True
    if depth > 8 or len(t.outputs) != 1 or t.outputs[0].op not in _TOWARD_OUTPUT:
        return False
    return _reaches_output(graph, t.outputs[0].outputs[0], depth + 1)


class RowwiseBeforeReshape(Rule):
    name = "rowwise_before_reshape"
    anchor = ("Reshape",)

    def match(self, graph, node):
        if not _reaches_output(graph, node.outputs[0]):
            return self.no(node, "its output does not reach the graph output")
        act = producer(node.inputs[0])
        if act is None or act.op not in ("Softmax", "LogSoftmax") or rowwise(act) is None:
            return self.no(node, "its input is not a softmax over the last axis")
        if len(act.outputs[0].outputs) != 1:
            return self.no(act, "its output is read by more than the Reshape")
        if any(o is act.outputs[0] for o in graph.outputs):
            return self.no(act, "its output is a graph output")
        y = act.inputs[0]
        C = dim_of(y, -1)
        target = evaluate(node.inputs[1])
        if not target:
            return self.no(node, "its target is not a shape onnxmod can read")
        last = target[-1]
        copied = last == 0 and not node.attrs.get("allowzero", 0) and len(target) == len(y.shape or [])
        if not copied and not same_dim(last, C):
            return self.no(node, "its target does not keep the input's last axis")
        return Match(node, [act, node], {"y": y, "op": act.op, "attrs": rowwise(act)})

    def rewrite(self, graph, m):
        node, d = m.node, m.data
        nm = Namer(graph, node.name)
        out = node.outputs[0]
        node.outputs.clear()
        moved = add_node(graph, nm, "Reshape", [d["y"], node.inputs[1]], attrs=dict(node.attrs), dtype=out.dtype)
        add_node(graph, nm, d["op"], [moved], [out], attrs=d["attrs"], dtype=out.dtype)
