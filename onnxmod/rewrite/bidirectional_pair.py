"""Rule: a forward and a reverse op of one cell reading the same input become one bidirectional op.

Pattern (tf2onnx's ``Bidirectional(GRU)``: two Loops, the backward one on a reversed input; once
the loop front-end has lifted them and ``reversed_input`` has turned the second into a reverse
op)::

    A = GRU(x, W_a, R_a, B_a)   direction="forward"
    B = GRU(x, W_b, R_b, B_b)   direction="reverse"     same op, hidden size and attributes

Rewritten as one ``direction="bidirectional"`` op with the weights stacked (forward first), whose
``Y`` (``Y_h``, ``Y_c``) is sliced on its direction axis back into A's and B's. Exact: a
bidirectional op computes each direction independently with that direction's weights. The unit
flow then sees both directions' units as one layer's (``direction_slice`` makes the slices forms
it follows), so a ``Concat`` of the two directions is a concatenation of one layer's units.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ops import handler_for
from .base import RECURRENT_OPS, Match, Namer, Rule, forward_handler, producer


def _plain(node):
    """Constant W, R (B, P) and no sequence_lens or initial state: what the merge can stack."""
    ins = node.inputs
    if len(ins) < 3 or not all(isinstance(ins[i], gs.Constant) for i in (1, 2)):
        return False
    if len(ins) > 3 and ins[3].name and not isinstance(ins[3], gs.Constant):
        return False
    if any(len(ins) > i and ins[i].name for i in (4, 5, 6)):
        return False
    return not (len(ins) > 7 and ins[7].name and not isinstance(ins[7], gs.Constant))


def _same_tensors(x) -> list:
    """``x``, and every other transposition of the tensor ``x`` transposes by the same ``perm`` (two
    front-ends each made a time-major copy of one batch-major input)."""
    p = producer(x)
    if p is None or p.op != "Transpose":
        return [x]
    perm = list(p.attrs.get("perm", []))
    return [t.outputs[0] for t in p.inputs[0].outputs if t.op == "Transpose" and list(t.attrs.get("perm", [])) == perm]


def _attrs(node):
    return {k: v for k, v in node.attrs.items() if k != "direction"}


class BidirectionalPair(Rule):
    name = "bidirectional_pair"
    anchor = RECURRENT_OPS

    def match(self, graph, node):
        h, no = forward_handler(self, node)
        if no is not None:
            return no
        if not _plain(node):
            return self.no(node, "its weights are not constants, or it reads sequence_lens or an initial state")
        same = _same_tensors(node.inputs[0])
        for other in [n for t in same for n in t.outputs]:
            if other is node or other.op != node.op or not any(other.inputs[0] is t for t in same):
                continue
            if h.direction(other) == "reverse" and _plain(other) and _attrs(other) == _attrs(node):
                return Match(node, [node, other], {"reverse": other})
        return self.no(node, "no reverse op of the same cell reads the same input")

    def rewrite(self, graph, m):
        fwd, rev = m.node, m.data["reverse"]
        nm = Namer(graph, fwd.name)
        h = handler_for(fwd.op)
        Wf, Rf, Bf = h.weights(fwd)
        Wr, Rr, Br = h.weights(rev)
        ins = [fwd.inputs[0], gs.Constant(nm("W"), np.concatenate([Wf, Wr])),
               gs.Constant(nm("R"), np.concatenate([Rf, Rr])), gs.Constant(nm("B"), np.concatenate([Bf, Br]))]
        Pf, Pr = h.peepholes(fwd), h.peepholes(rev)
        if Pf is not None or Pr is not None:
            zf = np.zeros((1, 3 * h.hidden_size(fwd)), Wf.dtype)
            ins += [gs.Variable.empty()] * 3 + [gs.Constant(nm("P"), np.concatenate([
                Pf if Pf is not None else zf, Pr if Pr is not None else zf]))]
        n_out = max(len(fwd.outputs), len(rev.outputs))
        outs = [gs.Variable(nm(f"out{i}"), dtype=np.float32) for i in range(n_out)]
        attrs = dict(_attrs(fwd), direction="bidirectional")
        for k in ("activations", "activation_alpha", "activation_beta"):  # listed per direction
            if k in fwd.attrs:
                attrs[k] = list(fwd.attrs[k]) + list(rev.attrs[k])
        both = gs.Node(fwd.op, nm("bidirectional"), attrs=attrs, inputs=ins, outputs=outs)
        graph.nodes.append(both)
        for d, node in enumerate((fwd, rev)):
            for i, t in enumerate(list(node.outputs)):
                if t is None or not t.name:
                    continue
                axis = 1 if i == 0 else 0  # Y [T, D, N, H]; Y_h, Y_c [D, N, H]
                graph.nodes.append(gs.Node("Slice", nm(f"direction{d}_{i}"), inputs=[
                    outs[i], gs.Constant(nm("start"), np.array([d], np.int64)),
                    gs.Constant(nm("end"), np.array([d + 1], np.int64)),
                    gs.Constant(nm("axis"), np.array([axis], np.int64))], outputs=[t]))
            node.outputs.clear()
            node.inputs.clear()
        return {both.name: fwd.name}
