"""Rule: a ``Transpose`` after the output layer moves in front of it.

Pattern (the output of ``TimeDistributed(Dense)`` transposed to batch-major)::

    Transpose(act(Add(MatMul(x, W[H, C]), b[C])), perm)   with perm[-1] == the last axis
    -> Softmax / LogSoftmax / Identity ... -> graph output

(the ``Add`` and ``act``, a Softmax/LogSoftmax over the last axis as a per-step Dense writes it, are
optional). Rewritten as
``act(Add(MatMul(Transpose(x, perm), W), b))``, so the output layer produces the output (what
``Model`` looks for). Exact: a MatMul by a 2-D weight, a bias over the last axis and a row-wise
activation act on each row alone, so they commute with a permutation that keeps the last axis last.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import Match, Namer, Rule, add_node, const, producer, rank_of, rowwise

_POST = {"Softmax", "LogSoftmax", "Identity"}


def _reaches_output(graph, t, depth=0) -> bool:
    if any(o is t for o in graph.outputs):
        return True
    if depth > 8 or len(t.outputs) != 1 or t.outputs[0].op not in _POST:
        return False
    return _reaches_output(graph, t.outputs[0].outputs[0], depth + 1)


def _only_reader(t, node) -> bool:
    return len(t.outputs) == 1 and t.outputs[0] is node and not t.is_empty()


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
        t, reader, acts = node.inputs[0], node, []
        p = producer(t)
        while p is not None and p.op in _POST and rowwise(p) is not None and _only_reader(t, reader) and len(acts) < 8:
            acts.insert(0, (p.op, rowwise(p), p))
            t, reader, p = p.inputs[0], p, producer(p.inputs[0])
        bias = None
        if p is not None and p.op == "Add" and _only_reader(t, reader):
            cs = [const(x) for x in p.inputs]
            if sum(c is not None for c in cs) != 1:
                return self.no(p, "not one constant bias")
            bias = next(c for c in cs if c is not None)
            if bias.ndim > r or (bias.ndim > 1 and any(s != 1 for s in bias.shape[:-1])):
                return self.no(p, "the bias varies along an axis other than the last")
            t, reader = next(x for x, c in zip(p.inputs, cs) if c is None), p
            p = producer(t)
        if p is None or p.op != "MatMul" or not _only_reader(t, reader):
            return self.no(node, "it does not read a MatMul [+ Add] [+ row-wise activations] read only by it")
        w = const(p.inputs[1])
        if w is None or w.ndim != 2 or rank_of(p.inputs[0]) != r:
            return self.no(p, "its weight is not a constant 2-D matrix")
        nodes = [p] + ([reader] if bias is not None else []) + [a[2] for a in acts] + [node]
        return Match(node, nodes, {"x": p.inputs[0], "w": p.inputs[1], "b": bias, "acts": [a[:2] for a in acts],
                                   "perm": [int(q) for q in perm]})

    def rewrite(self, graph, m):
        node, d = m.node, m.data
        nm = Namer(graph, node.name)
        out = node.outputs[0]
        node.outputs.clear()
        steps = [("MatMul", [d["w"]], {})]
        if d["b"] is not None:
            steps.append(("Add", [gs.Constant(nm("B"), np.ascontiguousarray(d["b"].reshape(-1)))], {}))
        steps += [(op, [], attrs) for op, attrs in d["acts"]]
        y = add_node(graph, nm, "Transpose", [d["x"]], attrs={"perm": d["perm"]}, dtype=out.dtype)
        for i, (op, extra, attrs) in enumerate(steps):
            last = i == len(steps) - 1
            y = add_node(graph, nm, op, [y, *extra], [out] if last else None, attrs=attrs, dtype=out.dtype)
