"""Recurrence front-ends behind one contract (``contract.py``).

Front-ends are listed here (``FRONTENDS``), in the order they are tried. ``recognize`` runs every one of them
over a normalized graph and returns the recurrences found and, for every candidate a front-end
could not take, its reason (``NoMatch``). Adding a front-end is one file in this folder plus one
line in ``FRONTENDS``.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_graphsurgeon as gs

from ..ops import handler_for
from .contract import Form, FrontEnd, NoMatch, Recognition, Recurrence, UnitSelection
from .finals import FinalState, packed_final_states
from .loop import LoopCells
from .native import NativeOps, NativeRecurrence
from .scan import ScanCells
from .unrolled import UnrolledCells
from .unrolled_rnn import UnrolledRNN

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


# Lifted and original states are the same function computed in another summation order: float32
# rounding grows along the sequence (measured: 2.9e-6 on a scripted GRU loop over 8 steps, 1.2e-5 on
# torch's unrolled RNN over 60 steps), so the check allows 1e-4 of max(1, |value|).
TOLERANCE = 1e-4


def verify_forms(model, x, threads=None) -> dict | None:
    """A recurrence a front-end lifted (``form`` other than ``native``) must compute what the model's
    own graph computes: its states (the tensors the front-end watched) and the model's outputs, run
    in onnxruntime on ``x`` (the traced rows), within ``TOLERANCE`` (of ``max(1, |value|)``: float32
    sums in another order differ by that much over long sequences). Returns what was compared (None
    when every recurrence is native); raises ``UnsupportedModelError`` with the gap otherwise."""
    import onnx

    from .. import runtime
    from ..errors import UnsupportedModelError

    lifted = [r for r in model.recurrent if r.form != Form.NATIVE]
    if not lifted:
        return None
    names = list(model.watched)

    def run(proto):
        p = onnx.ModelProto()
        p.CopyFrom(proto)
        have = {o.name for o in p.graph.output}
        for n in names:
            if n not in have:
                p.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
                p.graph.output[-1].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        sess = runtime.session(p, threads=threads)
        outs = [o.name for o in sess.get_outputs()]
        feeds = {model.input.name: x}
        return dict(zip(outs, sess.run(None, feeds)))

    want, got = run(model.original), run(model.runnable)
    def scaled(a, b):  # |a - b| / max(1, |a|): absolute for states (|h| <= 1 in most cells), relative for logits
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float((np.abs(a - b) / np.maximum(1.0, np.abs(a))).max()) if a.size else 0.0

    gap = max(scaled(want[k], got[k]) for k in want if k in got)
    if gap > TOLERANCE:
        forms = ", ".join(f"{r.name!r} ({r.form} -> {r.op_type})" for r in lifted)
        raise UnsupportedModelError(f"{model.source}: the recognized recurrence(s) {forms} differ from the model's own "
                                    f"states by {gap:.3g} (of max(1, |value|)) on {len(x)} traced rows "
                                    f"(tolerance {TOLERANCE:g})")
    return {"recurrences": [f"{r.name} ({r.form} -> {r.op_type})" for r in lifted], "rows": int(len(x)),
            "max_scaled_difference": gap, "compared": sorted(k for k in want if k in got)}


def describe_unrecognized(graph, found) -> list[dict]:
    """What ``inspect`` says of the native recurrent nodes no front-end took (weights given as graph
    inputs, say): read leniently, so a user sees them with the reason ``decompose`` refuses."""
    from .native import describe_node

    taken = {id(n) for r in found for n in r.reader_nodes()}
    return [describe_node(n) for n in graph.nodes if handler_for(n.op) is not None and id(n) not in taken]


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


def unclaimed_control_flow(graph, claimed: set = frozenset()) -> list[NoMatch]:
    """``Loop``/``Scan``/``If`` nodes left in the graph once the front-ends ran (a front-end that
    takes one rewrites it away) that hold a recurrence: a native op somewhere inside, or a loop
    that carries state from one iteration to the next."""
    out = []
    for node in graph.nodes:
        if id(node) in claimed:  # a recurrence a front-end runs as this node (a general cell's Scan)
            continue
        subs = list(_subgraphs(node))
        if not subs:
            continue
        name = node.name or node.op
        for attr, sub in subs:
            inner, path = _native_inside(sub)
            if inner is not None:
                where = " > ".join(path)
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


__all__ = ["FRONTENDS", "TOLERANCE", "FinalState", "Form", "FrontEnd", "NativeRecurrence", "NoMatch", "Recognition",
           "Recurrence", "UnitSelection", "describe_unrecognized", "forms_after", "packed_final_states", "recognize",
           "verify_forms"]
