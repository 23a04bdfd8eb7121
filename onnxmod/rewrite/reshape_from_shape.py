"""Rule: a ``Reshape`` whose target is computed from ``Shape`` of a tensor becomes a constant target.

Pattern (torch's default exporter after ``Transpose(0,2,1,3)`` of ``Y``)::

    Reshape(x, Concat(Gather(Shape(x), 0), Gather(Shape(x), 1), Mul(Gather(Shape(x), 2), ...)))

Each element of the target is evaluated (``dims.evaluate``): a static int stays literal, a dynamic
size equal to ``x``'s own size on that axis becomes 0 (copy), and at most one other dynamic size
becomes -1 (infer). The result uses ``allowzero=0``; an original ``allowzero=1`` target is accepted
only when none of its static elements is 0. Exact for every input with no zero-size axis (with a
-1 element, ONNX cannot infer a size next to a zero-size axis; a 0 copy is exact always).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import Match, Namer, Rule, const
from .dims import dim_of, evaluate, same_dim


class ReshapeFromShape(Rule):
    name = "reshape_from_shape"
    anchor = ("Reshape",)

    def match(self, graph, node):
        if len(node.inputs) < 2 or const(node.inputs[1]) is not None:
            return self.no(node, "the target is already constant")
        dims = evaluate(node.inputs[1])
        if dims is None:
            return self.no(node, "the target is not computed from Shape, Gather/Slice, Mul and constants")
        x = node.inputs[0]
        rank = None if x.shape is None else len(x.shape)
        allowzero = int(node.attrs.get("allowzero", 0))
        target, infer = [], 0
        for k, d in enumerate(dims):
            if isinstance(d, int):
                if d == 0 and allowzero:
                    return self.no(node, f"allowzero=1 with a literal 0 at position {k}")
                if d == 0 and (rank is None or k >= rank):
                    return self.no(node, f"a 0 at position {k} copies an axis the input does not have")
                infer += d == -1
                target.append(d)
            elif rank is not None and k < rank and same_dim(d, dim_of(x, k)):
                target.append(0)
            else:
                infer += 1
                target.append(-1)
        if infer > 1:
            return self.no(node, f"{infer} sizes of the target are dynamic and not copied from the input")
        return Match(node, [node], {"target": np.array(target, dtype=np.int64)})

    def rewrite(self, graph, m):
        node = m.node
        node.inputs[1] = gs.Constant(Namer(graph, node.name)("target"), m.data["target"])
        node.attrs.pop("allowzero", None)  # 0, the default

