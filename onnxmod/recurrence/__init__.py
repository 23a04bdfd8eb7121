"""Recurrence front-ends behind one contract (``contract.py``).

Front-ends are registered here, in the order they are tried. ``recognize`` runs every one of them
over a normalized graph and returns the recurrences found and, for every candidate a front-end
could not take, its reason (``NoMatch``). Adding a front-end is one file in this folder plus one
line in ``FRONTENDS``.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..ops import handler_for
from .contract import FrontEnd, NoMatch, Recurrence, UnitSelection
from .native import NativeOps, NativeRecurrence

FRONTENDS: list[FrontEnd] = [NativeOps()]


def register(frontend: FrontEnd) -> FrontEnd:
    FRONTENDS.append(frontend)
    return frontend


def recognize(graph, source: str) -> tuple[list[Recurrence], list[NoMatch]]:
    """Every recurrence of ``graph`` (in graph order within each front-end) and every miss,
    including control flow that holds a recurrence no front-end took."""
    found: list[Recurrence] = []
    misses: list[NoMatch] = []
    for fe in FRONTENDS:
        for r in fe.find(graph, source, len(found)):
            (found if isinstance(r, Recurrence) else misses).append(r)
    misses += unclaimed_control_flow(graph)
    return found, misses


def _subgraphs(node):
    for k, v in node.attrs.items():
        if isinstance(v, gs.Graph):
            yield k, v


def _native_inside(g, path=()):
    """The first native recurrent node anywhere inside graph ``g`` (nested subgraphs too), and the
    attribute path that leads to it."""
    for n in g.nodes:
        if handler_for(n.op) is not None:
            return n, path
        for k, sub in _subgraphs(n):
            hit = _native_inside(sub, (*path, f"{n.name or n.op}.{k}"))
            if hit[0] is not None:
                return hit
    return None, path


def unclaimed_control_flow(graph) -> list[NoMatch]:
    """``Loop``/``Scan``/``If`` nodes left in the graph once the front-ends ran (a front-end that
    takes one rewrites it away) that hold a recurrence: a native op somewhere inside, or a loop
    that carries state from one iteration to the next."""
    out = []
    for node in graph.nodes:
        subs = list(_subgraphs(node))
        if not subs:
            continue
        name = node.name or node.op
        for attr, sub in subs:
            inner, path = _native_inside(sub)
            if inner is not None:
                where = " > ".join((*path, "")).rstrip(" > ")
                out.append(NoMatch("control-flow", name, node.op,
                                   f"holds a {inner.op} node {inner.name!r} in its {attr}"
                                   f"{(' (inside ' + where + ')') if where else ''}; recurrences inside "
                                   f"{node.op} are not supported: export that part as a model of its own"))
                break
        else:
            carried = {"Loop": len(node.inputs) - 2,  # M, cond, then the loop-carried values
                       "Scan": len(node.inputs) - int(node.attrs.get("num_scan_inputs", 0))}.get(node.op, 0)
            if carried > 0:
                out.append(NoMatch("control-flow", name, node.op,
                                   f"carries {carried} state tensor(s) from one iteration to the next (a recurrence "
                                   f"in a {node.op} body) that no front-end recognizes; not supported yet: re-export "
                                   f"with native LSTM/GRU/RNN ops"))
    return out


__all__ = ["FRONTENDS", "FrontEnd", "NativeRecurrence", "NoMatch", "Recurrence", "UnitSelection", "recognize",
           "register"]
