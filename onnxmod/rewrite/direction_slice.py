"""Rule: one direction read out of a bidirectional recurrent op becomes a unit selection.

Pattern (tf2onnx ``Bidirectional(LSTM)``; torch ``Y[:, d]``)::

    Slice(Y, d:d+1, axes=[1])  |  Gather(Y, d, axis=1)          Y   = [T, 2, B, H]
    Slice(Y_h, d:d+1, axes=[0]) |  Gather(Y_h, d, axis=0)       Y_h = [2, B, H]  (and Y_c)

The unit flow cannot select along the direction axis while the hidden axis also carries units, so
the read is rewritten as the forms it follows: the direction axis is merged into the hidden one
(``Transpose`` + ``Reshape`` to ``2H``) and the direction's units are gathered (``Gather`` of
``d*H .. d*H+H-1``), then ``Unsqueeze`` restores the axis a Slice keeps. Exact (a copy).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ops import handler_for
from .base import Match, Namer, Rule, add_node, const, producer, slice_params, unsqueeze


class DirectionSlice(Rule):
    name = "direction_slice"
    anchor = ("Slice", "Gather")

    def match(self, graph, node):
        t = node.inputs[0]
        p = producer(t)
        h = handler_for(p.op) if p is not None else None
        if h is None:
            return self.no(node, "does not read a recurrent op's output")
        which = next((i for i, o in enumerate(p.outputs) if o is t), None)
        if which is None or which > 2:
            return self.no(node, "does not read Y, Y_h or Y_c")
        D, H = h.directions(p), h.hidden_size(p)
        if D != 2:
            return self.no(node, "the recurrent op has one direction")
        axis, rank = (1, 4) if which == 0 else (0, 3)
        if node.op == "Gather":
            idx = const(node.inputs[1])
            if int(node.attrs.get("axis", 0)) % rank != axis:
                return self.no(node, "does not gather along the direction axis")
            if idx is None or idx.size != 1:
                return self.no(node, "does not gather one constant direction")
            d, keep = int(idx.reshape(-1)[0]) % D, idx.ndim == 1
        else:
            sp = slice_params(node, rank)
            if sp is None:
                return self.no(node, "slice bounds are not constant")
            if axis not in sp[2]:
                return self.no(node, "does not slice the direction axis")
            if len(sp[2]) != 1:
                return self.no(node, "slices the direction axis together with other axes")
            pos = np.arange(D)[slice(sp[0][0], sp[1][0], sp[3][0])]
            if pos.size != 1:
                return self.no(node, f"selects {pos.size} directions, not one")
            d, keep = int(pos[0]), True
        return Match(node, [node], {"t": t, "axis": axis, "rank": rank, "d": d, "H": H, "keep": keep})

    def rewrite(self, graph, m):
        node, d = m.node, m.data
        nm = Namer(graph, node.name)
        out = node.outputs[0]
        node.outputs.clear()
        H, dt = d["H"], out.dtype
        if d["rank"] == 4:  # [T, 2, B, H] -> [T, B, 2, H] -> [T, B, 2H]
            perm, target, gaxis = [0, 2, 1, 3], [0, 0, 2 * H], 2
        else:  # [2, B, H] -> [B, 2, H] -> [B, 2H]
            perm, target, gaxis = [1, 0, 2], [0, 2 * H], 1
        x = add_node(graph, nm, "Transpose", [d["t"]], attrs={"perm": perm}, dtype=dt)
        x = add_node(graph, nm, "Reshape", [x, gs.Constant(nm("target"), np.array(target, np.int64))], dtype=dt)
        idx = gs.Constant(nm("units"), np.arange(d["d"] * H, (d["d"] + 1) * H, dtype=np.int64))
        if not d["keep"]:
            add_node(graph, nm, "Gather", [x, idx], [out], attrs={"axis": gaxis})
            return
        x = add_node(graph, nm, "Gather", [x, idx], attrs={"axis": gaxis}, dtype=dt)
        unsqueeze(graph, nm, x, [d["axis"]], out=out)
