"""Rule: a ``Dense`` unrolled once per step (Keras ``TimeDistributed(Dense)`` through tf2onnx)
becomes one ``MatMul`` + ``Add`` over the time axis.

Pattern, N >= 2 copies, step ``t`` = 0..N-1 in order, all reading the same ``s``::

    x_t = Gather(s, t, axis=a)  |  Squeeze(Slice(s, t:t+1, axis=a), a)  |  Slice(s, t:t+1, axis=a)
    y_t = Add(MatMul(x_t, W), b)  |  MatMul(x_t, W)  |  Gemm(x_t, W, b)
    z_t = act(y_t)   (optional, the same per step: elementwise, or Softmax over the last axis)
    Concat(Unsqueeze(z_t, u), axis=u)   (or Concat(z_t, axis=a) for the Slice form)

Rewritten as ``act(Add(MatMul(Transpose(s), W), b))`` with the time axis moved from ``a`` to ``u``
(and ``s`` first cut to its first N steps unless its time axis is statically N, since the copies
read only those). Refused, with the reason, when the copies' weights or biases differ.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import Match, Namer, Rule, add_node, attr_axes, const, producer, rank_of, rowwise, slice_params


def _dense(t):
    """(x, W [H, C], b [C] or None, nodes) of a Dense producing ``t``, else None."""
    p = producer(t)
    if p is None:
        return None
    if p.op == "Gemm":
        w = const(p.inputs[1])
        if (w is None or w.ndim != 2 or int(p.attrs.get("transA", 0)) or float(p.attrs.get("alpha", 1.0)) != 1.0
                or float(p.attrs.get("beta", 1.0)) != 1.0):
            return None
        b = const(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2].name else None
        if len(p.inputs) > 2 and p.inputs[2].name and (b is None or b.ndim > 1):
            return None
        return p.inputs[0], (w.T if int(p.attrs.get("transB", 0)) else w), b, [p]
    b, nodes = None, []
    if p.op == "Add":
        cs = [const(x) for x in p.inputs]
        if sum(c is not None for c in cs) != 1:
            return None
        b = next(c for c in cs if c is not None)
        if b.ndim > 1 and any(s != 1 for s in b.shape[:-1]):
            return None
        nodes = [p]
        p = producer(next(x for x, c in zip(p.inputs, cs) if c is None))
        if p is None:
            return None
    if p.op != "MatMul":
        return None
    w = const(p.inputs[1])
    if w is None or w.ndim != 2:
        return None
    return p.inputs[0], w, None if b is None else b.reshape(-1), [p] + nodes


def _step(graph, x):
    """(s, axis, t, keeps_axis, nodes) of a per-step read of ``s``, else None."""
    p = producer(x)
    if p is None:
        return None
    nodes = []
    squeezed = None
    if p.op == "Squeeze":
        axes = attr_axes(graph, p)
        if not axes or len(axes) != 1:
            return None
        squeezed, nodes = axes[0], [p]
        p = producer(p.inputs[0])
        if p is None or p.op != "Slice":
            return None
    s = p.inputs[0]
    r = rank_of(s)
    if r is None:
        return None
    if p.op == "Gather":
        idx = const(p.inputs[1])
        if idx is None or idx.ndim != 0:
            return None
        return s, int(p.attrs.get("axis", 0)) % r, int(idx), False, [p] + nodes
    if p.op == "Slice":
        sp = slice_params(p, r)
        if sp is None or len(sp[2]) != 1 or sp[3] != [1]:
            return None
        a, t, e = sp[2][0], sp[0][0], sp[1][0]
        one = (t >= 0 or t < -1) and e == t + 1 or t == -1 and e >= 2 ** 31 - 1  # exactly step t
        if not one:
            return None
        if squeezed is not None and squeezed % r != a:
            return None
        return s, a, t, squeezed is None, [p] + nodes
    return None


class TimeDistributed(Rule):
    name = "time_distributed"
    anchor = ("Concat",)

    def match(self, graph, node):
        n = len(node.inputs)
        if n < 2:
            return self.no(node, "fewer than two inputs")
        copies = []
        for i, y in enumerate(node.inputs):
            unsq = None
            p = producer(y)
            nodes = []
            if p is not None and p.op == "Unsqueeze":
                axes = attr_axes(graph, p)
                if not axes or len(axes) != 1:
                    return self.no(p, "unsqueezes several axes")
                unsq, nodes, y = axes[0], [p], p.inputs[0]
            p, act = producer(y), None
            if p is not None and rowwise(p) is not None:
                act, nodes, y = (p.op, rowwise(p)), [p] + nodes, p.inputs[0]
            d = _dense(y)
            if d is None:
                return self.no(node, f"input {i} is not a Dense (MatMul [+ Add] or Gemm with constant weights)")
            x, w, b, dn = d
            st = _step(graph, x)
            if st is None:
                return self.no(node, f"input {i}'s Dense does not read one step (Gather/Slice of one index)")
            copies.append((st, w, b, unsq, st[4] + dn + nodes, act))
        (s0, a0, _, keep0, _), w0, b0, u0, _, act0 = copies[0]
        r = rank_of(s0)
        for i, ((s, a, t, keep, _), w, b, u, _, act) in enumerate(copies):
            if act != act0:
                return self.no(node, f"step {i} applies another activation than step 0")
            if s is not s0 or a != a0 or keep != keep0 or (u is None) != (u0 is None):
                return self.no(node, f"input {i} reads another tensor, axis or form than input 0")
            if w.shape != w0.shape or not np.array_equal(w, w0):
                return self.no(node, f"the weights of step {i} differ from step 0's (not one Dense per step)")
            if (b is None) != (b0 is None) or (b is not None and (b.shape != b0.shape or not np.array_equal(b, b0))):
                return self.no(node, f"the bias of step {i} differs from step 0's (not one Dense per step)")
            length = s0.shape[a0] if s0.shape is not None else None
            tt = t + length if t < 0 and isinstance(length, (int, np.integer)) else t
            if tt != i:
                return self.no(node, f"input {i} reads step {t}; the steps must be 0..{n - 1} in order")
        if a0 == r - 1:
            return self.no(node, "the steps are taken along the last axis (the features)")
        axis = int(node.attrs.get("axis", 0))
        if keep0:
            if u0 is not None or axis % r != a0:
                return self.no(node, "the steps are not concatenated along their own axis")
            dest = a0
        else:
            if u0 is None:
                return self.no(node, "the steps are concatenated along an existing axis (not stacked)")
            u, c = u0 % r, axis % r
            if u != c or u == r - 1:
                return self.no(node, "the steps are not stacked along a new non-feature axis")
            dest = u
        nodes = [x for c in copies for x in c[4]] + [node]
        return Match(node, nodes, {"s": s0, "axis": a0, "dest": dest, "n": n, "w": w0, "b": b0, "act": act0})

    def rewrite(self, graph, m):
        node, d = m.node, m.data
        nm = Namer(graph, node.name)
        s, r = d["s"], rank_of(d["s"])
        dtype = node.outputs[0].dtype
        length = s.shape[d["axis"]]
        if not (isinstance(length, (int, np.integer)) and length == d["n"]):
            c = lambda tag, v: gs.Constant(nm(tag), np.array([v], np.int64))  # noqa: E731
            s = add_node(graph, nm, "Slice", [s, c("starts", 0), c("ends", d["n"]), c("axes", d["axis"])],
                         dtype=dtype, tag="steps")
        if d["dest"] != d["axis"]:
            perm = [i for i in range(r) if i != d["axis"]]
            perm.insert(d["dest"], d["axis"])
            s = add_node(graph, nm, "Transpose", [s], attrs={"perm": perm}, dtype=dtype)
        out = node.outputs[0]
        node.outputs.clear()
        w = gs.Constant(nm("W"), np.ascontiguousarray(d["w"]))
        last = d["b"] is None and d["act"] is None
        y = add_node(graph, nm, "MatMul", [s, w], [out] if last else None, dtype=dtype)
        if d["b"] is not None:
            last = d["act"] is None
            y = add_node(graph, nm, "Add", [y, gs.Constant(nm("B"), np.ascontiguousarray(d["b"]))],
                         [out] if last else None, dtype=dtype)
        if d["act"] is not None:
            add_node(graph, nm, d["act"][0], [y], [out], attrs=d["act"][1])
