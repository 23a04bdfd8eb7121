"""Control flow that holds a recurrence no front-end took: what ``decompose`` refuses first, naming
the construct (an ``If`` whose branch holds an LSTM says so, rather than "no recurrent op found")."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..ops import handler_for
from .contract import NoMatch


def _subgraphs(node: gs.Node):
    for k, v in node.attrs.items():
        if isinstance(v, gs.Graph):
            yield k, v


def carried(node: gs.Node) -> int:
    """How many state tensors a ``Loop``/``Scan`` carries from one iteration to the next (0 otherwise)."""
    if node.op == "Loop":
        return len(node.inputs) - 2  # M, cond, then the loop-carried values
    if node.op == "Scan":
        return len(node.inputs) - int(node.attrs.get("num_scan_inputs", 0))
    return 0


def _recurrence_inside(g: gs.Graph, path=()):
    """The first recurrence anywhere inside graph ``g`` (nested subgraphs too) — a native recurrent
    node, or a ``Loop``/``Scan`` carrying state — and the attribute path that leads to it."""
    for n in g.nodes:
        if handler_for(n.op) is not None or carried(n) > 0:
            return n, path
        for k, sub in _subgraphs(n):
            hit = _recurrence_inside(sub, (*path, f"{n.name or n.op}.{k}"))
            if hit[0] is not None:
                return hit
    return None, path


def _held(node: gs.Node, attr: str, inner: gs.Node, path: tuple) -> str:
    what = (f"a {inner.op} node {inner.name!r}" if handler_for(inner.op) is not None else
            f"a {inner.op} {inner.name!r} carrying {carried(inner)} state tensor(s) (a recurrence in its body)")
    where = " > ".join(path)
    return (f"holds {what} in its {attr}{(' (inside ' + where + ')') if where else ''}; recurrences inside "
            f"{node.op} are not supported: export that part as a model of its own")


def unclaimed_control_flow(graph: gs.Graph, claimed: set = frozenset()) -> list[NoMatch]:
    """``Loop``/``Scan``/``If`` nodes left in the graph once the front-ends ran (a front-end that
    takes one rewrites it away) that hold a recurrence: a native op or a state-carrying loop somewhere
    inside, or a loop that carries state from one iteration to the next itself."""
    out = []
    for node in graph.nodes:
        if id(node) in claimed:  # a recurrence a front-end runs as this node (a general cell's Scan)
            continue
        subs = list(_subgraphs(node))
        if not subs:
            continue
        name = node.name or node.op
        for attr, sub in subs:
            inner, path = _recurrence_inside(sub)
            if inner is not None:
                out.append(NoMatch("control-flow", name, node.op, _held(node, attr, inner, path)))
                break
        else:
            k = carried(node)
            if k > 0:
                out.append(NoMatch("control-flow", name, node.op,
                                   f"carries {k} state tensor(s) from one iteration to the next (a recurrence "
                                   f"in a {node.op} body) that no front-end recognizes; not supported yet: re-export "
                                   f"with native LSTM/GRU/RNN ops"))
    return out
