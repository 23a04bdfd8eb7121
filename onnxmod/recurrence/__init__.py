"""Recurrence front-ends behind one contract (``contract.py``).

Front-ends are listed here (``FRONTENDS``), in the order they are tried. ``recognize`` runs every one of them
over a normalized graph and returns the recurrences found and, for every candidate a front-end
could not take, its reason (``NoMatch``). Adding a front-end is one file in this folder plus one
line in ``FRONTENDS``.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..ops import handler_for
from .contract import Form, FrontEnd, NoMatch, Recognition, Recurrence, UnitSelection
from .control_flow import unclaimed_control_flow
from .finals import FinalState, packed_final_states
from .loop import LoopCells
from .native import NativeOps, NativeRecurrence
from .scan import ScanCells
from .unrolled import UnrolledCells
from .unrolled_rnn import UnrolledRNN
from .verify import TOLERANCE, verify_forms

# The order front-ends are tried in: lifting front-ends first (they make native ops the native
# front-end then leaves to them), the Scan front-end last (it takes the general cells the others built).
FRONTENDS: tuple[FrontEnd, ...] = (LoopCells(), UnrolledRNN(), UnrolledCells(), NativeOps(), ScanCells())


def recognize(graph, source: str, known: Mapping[str, Form] | None = None) -> tuple[list[Recurrence], list[NoMatch]]:
    """Every recurrence of ``graph`` (in graph order within each front-end) and every miss,
    including control flow that holds a recurrence no front-end took. ``known``: the forms of the
    recurrences onnxmod lifted or built in this graph before, by node name (``Recognition``)."""
    found: list[Recurrence] = []
    misses: list[NoMatch] = []
    ctx = Recognition(source, dict(known or {}))
    for fe in FRONTENDS:
        ctx.found = len(found)
        for r in fe.find(graph, ctx):
            if isinstance(r, Recurrence):
                found.append(r)
                ctx.claimed.update(id(n) for n in r.reader_nodes())
            else:
                misses.append(r)
    # a miss on a node a later front-end took after all (an unrolled chain the vanilla-RNN front-end
    # could not read, lifted as a general cell) is no miss
    left = {n.name for n in graph.nodes}
    misses = [m for m in misses if m.node in left]
    misses += unclaimed_control_flow(graph, ctx.claimed)
    graph.toposort()  # recurrences are numbered in graph order, whichever front-end found them
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    found.sort(key=lambda r: position.get(id(r.reader_nodes()[0]), len(position)))
    for i, r in enumerate(found):
        r.index = i
    return found, misses


def forms_after(lifted: Mapping[str, Form], applied) -> dict[str, Form]:
    """The forms of lifted recurrences once the rewrite rules ran (``applied``: their ``Applied``
    records, in order): a recurrent op a rule made from lifted ones (``Applied.made``: new node ->
    the node it replaces) has the form of the one it replaces."""
    forms = dict(lifted)
    for a in applied:
        for new, old in a.made:
            if old in forms:
                forms[new] = forms[old]
    return forms


def describe_unrecognized(graph, found) -> list[dict]:
    """What ``inspect`` says of the native recurrent nodes no front-end took (weights given as graph
    inputs, say): read leniently, so a user sees them with the reason ``decompose`` refuses."""
    from .native import describe_node

    taken = {id(n) for r in found for n in r.reader_nodes()}
    return [describe_node(n) for n in graph.nodes if handler_for(n.op) is not None and id(n) not in taken]


__all__ = ["FRONTENDS", "TOLERANCE", "FinalState", "Form", "FrontEnd", "NativeRecurrence", "NoMatch", "Recognition",
           "Recurrence", "UnitSelection", "describe_unrecognized", "forms_after", "packed_final_states", "recognize",
           "verify_forms"]
