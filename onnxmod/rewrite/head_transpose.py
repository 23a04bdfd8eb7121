"""Rule: a ``Transpose`` after the output layer moves in front of it.

Pattern (the output of ``TimeDistributed(Dense)`` transposed to batch-major)::

    Transpose(Add(MatMul(x, W[H, C]), b[C]), perm)   with perm[-1] == last axis
    -> Softmax / LogSoftmax / Identity ... -> graph output

Rewritten as ``Add(MatMul(Transpose(x, perm), W), b)``, so the output layer produces the output
(what ``Model`` looks for). Exact: a MatMul by a 2-D weight and a bias over the last axis act on
each row alone, so they commute with any permutation that keeps the last axis last.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import Match, Namer, Rule, add_node, const, producer, rank_of, register

_POST = {"Softmax", "LogSoftmax", "Identity"}


def _reaches_output(graph, t, depth=0) -> bool:
    if any(o is t for o in graph.outputs):
        return True
    if depth > 8 or len(t.outputs) != 1 or t.outputs[0].op not in _POST:
        return False
    return _reaches_output(graph, t.outputs[0].outputs[0], depth + 1)


@register
class HeadTranspose(Rule):
    name = "head_transpose"
    anchor = ("Transpose",)

    def match(self, graph, node):
        out = node.outputs[0]
        if not _reaches_output(graph, out):
            return self.no(node, "its output is not the graph output")
        r = rank_of(node.inputs[0])
        perm = node.attrs.get("perm")
        if r is None or perm is None or int(perm[-1]) != r - 1:
            return self.no(node, "its permutation moves the last axis")
        add = producer(node.inputs[0])
        if add is None or add.op != "Add" or len(add.outputs[0].outputs) != 1:
            return self.no(node, "its input is not an Add read only by it")
        cs = [const(x) for x in add.inputs]
        if sum(c is not None for c in cs) != 1:
            return self.no(add, "not one constant bias")
        b = next(c for c in cs if c is not None)
        if b.ndim > 1 and any(s != 1 for s in b.shape[:-1]):
            return self.no(add, "the bias varies along an axis other than the last")
        mm = producer(next(x for x, c in zip(add.inputs, cs) if c is None))
        if mm is None or mm.op != "MatMul" or len(mm.outputs[0].outputs) != 1:
            return self.no(add, "its input is not a MatMul read only by it")
        w = const(mm.inputs[1])
        if w is None or w.ndim != 2 or rank_of(mm.inputs[0]) != r:
            return self.no(mm, "its weight is not a constant 2-D matrix")
        return Match(node, [mm, add, node], {"x": mm.inputs[0], "w": mm.inputs[1], "b": b, "perm": [int(p) for p in perm]})

    def rewrite(self, graph, m):
        node, d = m.node, m.data
        nm = Namer(graph, node.name)
        out = node.outputs[0]
        node.outputs.clear()
        xt = add_node(graph, nm, "Transpose", [d["x"]], attrs={"perm": d["perm"]}, dtype=out.dtype)
        y = add_node(graph, nm, "MatMul", [xt, d["w"]], dtype=out.dtype)
        add_node(graph, nm, "Add", [y, gs.Constant(nm("B"), np.ascontiguousarray(d["b"].reshape(-1)))], [out])
