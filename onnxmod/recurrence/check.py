"""Checking an identified cell against the step it was read from, in numbers.

The identification (``identify.py``) reads forms; before a front-end lifts a step into a native op,
the step itself (a ``Loop`` body, or a step cut out of an unrolled chain) is run in onnxruntime on
random inputs and states and compared with onnxmod's own equations of the cell (``onnxmod.cells``)
with the identified parameters. ``TOL`` is the largest difference that lifts.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.util.exception import OnnxGraphSurgeonException
from onnxruntime.capi import onnxruntime_pybind11_state as _ort

from .. import runtime
from ..cells import CellParams, cell_for
from ..cells import activations as act
from ..cells.backend import Numpy
from ..errors import InputError
from .identify import NativeCell
from .step import Step

TOL = 1e-5
PROBES = 64  # random rows each state update is compared on
# what running a graph cut out of a model may raise: onnxruntime refuses it (a counter or an outer
# value left unbound), or graphsurgeon cannot order or export it
CANNOT_RUN = (InputError, OnnxGraphSurgeonException, _ort.Fail, _ort.InvalidArgument, _ort.InvalidGraph,
              _ort.RuntimeException, _ort.NotImplemented)


def _numpy_step(cell: NativeCell, x: np.ndarray, states: list[np.ndarray], H: int) -> dict:
    c = cell_for(cell.op_type)
    acts = act.resolve(cell.attrs["activations"], cell.attrs.get("activation_alpha", []),
                       cell.attrs.get("activation_beta", []), f"lifted {cell.op_type}")
    p = CellParams(R=cell.R[0], Rb=cell.B[0][c.num_gates * H:], acts=acts,
                   linear_before_reset=bool(cell.attrs.get("linear_before_reset", 0)))
    xp = x.astype(np.float64) @ cell.W[0].T + cell.B[0][:c.num_gates * H]
    new, _ = c.step(Numpy(), xp, {k: a.astype(np.float64) for k, a in zip(c.states, states)}, p)
    return new


def _probes(I: int, H: int, n_states: int):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (PROBES, I)).astype(np.float32)
    return x, [rng.uniform(-1, 1, (PROBES, H)).astype(np.float32) for _ in range(n_states)]


def _largest_gap(cell: NativeCell, x, st, want, H: int) -> float:
    new = _numpy_step(cell, x, st, H)
    return max(float(np.abs(new[k] - w).max()) for k, w in zip(cell_for(cell.op_type).states, want))


def _run(g: gs.Graph, opset: int | None, feeds: dict) -> list | None:
    """``g`` run in onnxruntime (None when it cannot run on its own)."""
    try:
        g.cleanup().toposort()
        m = gs.export_onnx(g)
        del m.opset_import[:]
        m.opset_import.append(onnx.helper.make_opsetid("", max(int(opset or 17), 13)))
        m.ir_version = 8
        return runtime.session(m).run(None, feeds)
    except CANNOT_RUN:
        return None


def body_gap(body: gs.Graph, x_t, states: list, known: dict, cell: NativeCell, I: int, H: int,
             opset: int | None = None, mask=None) -> float | None:
    """Largest difference between a ``Loop`` body (onnxruntime) and ``cell`` on random steps: every new
    state (``states``: (state in, state out) pairs, h first). ``known``: the values (by tensor name)
    the form reader worked out: loop invariants and what the graph computes from constants before
    the loop. ``mask``: the per-step mask the body reads (fed 1: every step real). None when the body
    cannot run on its own."""
    g = body.copy()
    tmap = g.tensors()
    xv = tmap[x_t.name]
    ins = [tmap[a.name] for a, _ in states]
    outs_in_body = [tmap[b.name] for _, b in states]
    for n in g.nodes:
        for i, t in enumerate(n.inputs):
            if isinstance(t, gs.Variable) and t.name in known and not t.inputs:
                dt = t.dtype if t.dtype is not None else np.float32
                n.inputs[i] = gs.Constant(f"{t.name}__bound", np.asarray(known[t.name]).astype(dt))
    feeds_extra = {}
    for v in [xv] + ([tmap[mask.name]] if mask is not None else []):
        for n in list(v.inputs):
            n.outputs = [gs.Variable(f"{o.name}__unused") if o is v else o for o in n.outputs]
        v.inputs.clear()
    xv.dtype, xv.shape = np.float32, ["P", I]
    if mask is not None:  # every step real: the blend passes the cell's new state through
        mv = tmap[mask.name]
        mv.dtype, mv.shape = np.bool_, ["P", 1]
        feeds_extra[mv.name] = np.ones((PROBES, 1), dtype=bool)
    for v in ins:
        v.dtype, v.shape = np.float32, ["P", H]
    probes = []
    for k, o in enumerate(outs_in_body):
        out = gs.Variable(f"{o.name}__probe{k}", dtype=np.float32)
        g.nodes.append(gs.Node("Identity", f"probe_out{k}", inputs=[o], outputs=[out]))
        probes.append(out)
    g.inputs, g.outputs = [xv, *ins, *[tmap[k] for k in feeds_extra]], probes
    x, st = _probes(I, H, len(states))
    want = _run(g, opset, {xv.name: x, **{v.name: a for v, a in zip(ins, st)}, **feeds_extra})
    return None if want is None else _largest_gap(cell, x, st, want, H)


def step_gap(step: Step, cell: NativeCell, order: list[int], opset: int | None = None) -> float | None:
    """Largest difference between a cut-out ``step`` (onnxruntime) and ``cell`` on random inputs and
    states. ``order[k]``: the step's state that is the cell's state k (h first, then c)."""
    H = step.widths[order[0]]
    x, st = _probes(step.input_size, H, len(order))
    g = step.graph.copy()
    feeds = {g.inputs[-1].name: x}
    for k, j in enumerate(order):
        feeds[g.inputs[j].name] = st[k]
    g.outputs = [g.outputs[j] for j in order]
    want = _run(g, opset, feeds)
    return None if want is None else _largest_gap(cell, x, st, want, H)
