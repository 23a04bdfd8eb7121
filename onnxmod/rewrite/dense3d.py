"""Rule: tf2onnx's many-to-many ``Dense`` becomes one 3-D ``MatMul``.

Pattern::

    Reshape(x, [n, H]) -> MatMul(., W[H, C]) -> Reshape(., t) [-> Add(b)]

where ``x`` is ``[..., H]``, ``[n, H]`` has two elements the second of which is ``H`` (whatever
``n`` is, a reshape that succeeds gives the rows of ``x`` in order; tf2onnx computes it with
``ReduceProd`` of ``Shape``), and ``t`` evaluates to ``shape(x)[:-1] + [C]`` (a constant, or
computed from ``Shape``). Rewritten as ``MatMul(x, W)`` producing the second Reshape's output; the ``Add``
that follows is untouched. Exact: ONNX MatMul of ``[..., H]`` by ``[H, C]`` is the row-wise product.
"""
from __future__ import annotations

from .base import Match, Namer, Rule, add_node, const, producer
from .dims import dim_of, evaluate, same_dim


class Dense3D(Rule):
    name = "dense_3d"
    anchor = ("Reshape",)

    def match(self, graph, node):
        mm = producer(node.inputs[0])
        if mm is None or mm.op != "MatMul":
            return self.no(node, "its input is not a MatMul")
        w = const(mm.inputs[1])
        if w is None or w.ndim != 2:
            return self.no(mm, "the MatMul's weight is not a constant 2-D matrix")
        flat = producer(mm.inputs[0])
        if flat is None or flat.op != "Reshape":
            return self.no(node, "the MatMul's input is not a Reshape")
        x = flat.inputs[0]
        ft = evaluate(flat.inputs[1])
        H, C = int(w.shape[0]), int(w.shape[1])
        if x.shape is None or len(x.shape) < 3 or dim_of(x, -1) != H:
            return self.no(flat, f"its input is not [..., {H}] of rank 3 or more")
        if ft is None or len(ft) != 2 or not same_dim(ft[1], H):
            return self.no(flat, f"the target is not [rows, {H}]")
        dims = evaluate(node.inputs[1])
        want = [dim_of(x, k) for k in range(len(x.shape) - 1)] + [C]
        if dims is None or len(dims) != len(want) or not all(same_dim(a, b) for a, b in zip(dims, want)):
            return self.no(node, f"the target is not the shape of {x.name!r} with its last axis {C}")
        return Match(node, [flat, mm, node], {"x": x, "w": mm.inputs[1]})

    def rewrite(self, graph, m):
        node = m.node
        out = node.outputs[0]
        node.outputs.clear()
        add_node(graph, Namer(graph, node.name), "MatMul", [m.data["x"], m.data["w"]], [out], tag="matmul")
