"""A ``Loop`` whose cell no native op computes, handed to the general cell front-end (``general.py``):
its step cut out of the body and run as a ``Scan``."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .cellflow import CellFlow
from .contract import Form
from .general import CellOutputs, build, detach
from .general import miss as general_miss
from .loop_plumbing import LoopParts
from .native import _is_zero, time_major
from .step import StepError, extract
from .tensors import through_identity


def _used(graph: gs.Graph, t) -> bool:
    return bool(t.outputs) or t in graph.outputs


def _widths(parts: LoopParts):
    """Every state's width (from its tensors' shapes), or why not."""
    widths = []
    for k, st in enumerate(parts.every_state):
        if not _is_zero(st.init):
            return f"its initial state {k} is not provably zero"
        w = next((t.shape[-1] for t in (st.vin, st.init, st.vout, parts.loop.outputs[st.j])
                  if t.shape is not None and len(t.shape) and isinstance(t.shape[-1], (int, np.integer))), None)
        if w is None:
            return f"the width of its state {k} is not known"
        widths.append(int(w))
    return widths


def _per_step(graph: gs.Graph, parts: LoopParts):
    """(the per-step values the model reads, where they are stacked after the loop: (tensor or
    ConcatFromSequence node, time axis)), or why not."""
    loop, per_step, stacked = parts.loop, [], []
    for js, val in parts.seqs:
        used = list(loop.outputs[js].outputs)
        if not used:
            continue
        for c in used:
            if c.op != "ConcatFromSequence" or not int(c.attrs.get("new_axis", 0)) \
                    or int(c.attrs.get("axis", 0)) not in (0, 1):
                return f"its per-step outputs are read by {c.op} {c.name!r}, not stacked by ConcatFromSequence"
            stacked.append((c, int(c.attrs.get("axis", 0))))
        per_step.append(val)
    for k, t in parts.scan_outs:
        out = loop.outputs[parts.n_carried + k]
        if _used(graph, out):
            per_step.append(t)
            stacked.append((out, 0))
    if len({id(through_identity(v)) for v in per_step}) > 1:
        return "it emits more than one per-step value that the model reads"
    state_js = {st.j for st in parts.every_state}
    seq_js = {js for js, _ in parts.seqs}
    for j in range(parts.n_carried):
        t = loop.outputs[j]
        if _used(graph, t) and j not in state_js and j not in seq_js:
            return f"its loop output {t.name!r} (neither a state nor a per-step output) is read after the loop"
    return per_step, stacked


def as_general_cell(graph: gs.Graph, parts: LoopParts, index: int, frontend: str = "loop"):
    """The loop as a general cell: a ``CellRecurrence`` (the loop replaced by a Scan), or a ``NoMatch``
    (the general cell front-end's refusal: ``final``)."""
    name, loop = parts.name, parts.loop

    def no(why):
        return general_miss(frontend, name, "Loop", why)

    widths = _widths(parts)
    if isinstance(widths, str):
        return no(widths)
    got = _per_step(graph, parts)
    if isinstance(got, str):
        return no(got)
    per_step, stacked = got
    states = parts.every_state
    # what the cell emits: the per-step value the model reads; else the state whose final value it reads
    read_finals = [st for st in states if _used(graph, loop.outputs[st.j])]
    y_t = per_step[0] if per_step else (read_finals or states)[0].vout
    try:
        step = extract(name, [s.vin for s in states], parts.x_t, [s.vout for s in states], y_t, widths, parts.I,
                       opset=parts.body.opset)
        CellFlow(step)
    except StepError as exc:
        return general_miss(frontend, name, "Loop", exc)
    outs = CellOutputs()
    for c, ax in stacked:
        t = c.outputs[0] if isinstance(c, gs.Node) else c
        outs.steps.append((t, 1 if (isinstance(c, gs.Node) and ax == 1) else 0))
    for st in states:
        t = loop.outputs[st.j]
        outs.finals.append(t if _used(graph, t) else None)
    for c, _ in stacked:
        if isinstance(c, gs.Node):
            c.outputs.clear()
            c.inputs.clear()
    x_tm = time_major(graph, f"{name}/cell", parts.X) if parts.axis == 1 else parts.X
    detach(loop)
    try:
        return build(graph, name, step, x_tm, Form.LOOP, index, outs,
                     [t.name for t, _ in outs.steps] + [t.name for t in outs.finals if t is not None])
    except StepError as exc:  # pragma: no cover - the flow was checked before the graph changed
        return general_miss(frontend, name, "Loop", exc)
