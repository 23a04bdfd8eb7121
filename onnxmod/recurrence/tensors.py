"""Small questions about one tensor, asked the same way by every front-end: its constant value, the
tensor it is through ``Identity`` nodes, whether it descends from another."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def constant(t) -> np.ndarray | None:
    """The value of ``t`` (float64) when it is a constant or a ``Constant`` node's output, else None."""
    if isinstance(t, gs.Constant):
        return np.asarray(t.values, dtype=np.float64)
    if t.inputs and t.inputs[0].op == "Constant":
        v = t.inputs[0].attrs.get("value")
        if v is None:
            return None
        return np.asarray(v.values if isinstance(v, gs.Constant) else v, dtype=np.float64)
    return None


def int_constant(t) -> list[int] | None:
    """The elements of a constant integer tensor ``t`` as ints (flattened), else None."""
    v = constant(t)
    return None if v is None else [int(x) for x in v.reshape(-1)]


def through_identity(t):
    """``t``, or the tensor it copies through a chain of ``Identity`` nodes."""
    while t.inputs and t.inputs[0].op == "Identity":
        t = t.inputs[0].inputs[0]
    return t


def same(a, b) -> bool:
    """Whether ``a`` and ``b`` are one tensor up to ``Identity`` copies."""
    return through_identity(a) is through_identity(b)


def depends(t, on, limit: int = 5000) -> bool:
    """Whether tensor ``t`` is computed from tensor ``on`` (looking back at most ``limit`` tensors)."""
    seen, todo = set(), [t]
    while todo and len(seen) < limit:
        u = todo.pop()
        if u is on:
            return True
        if id(u) in seen or isinstance(u, gs.Constant) or not u.inputs:
            continue
        seen.add(id(u))
        todo.extend(x for x in u.inputs[0].inputs if x.name)
    return False
