"""Unrolled modules: a concern per timestep, as an ordinary ONNX graph.

In unrolled mode a unit may serve the class at step t and not at step t+1. Every unrolled module is
first sliced physically to the units kept at *some* step (rolled slicing, exact); then the per-step
concerns apply in one of two ways:

* ``output`` (default): a unit outside step t's concern is cut from step t's *outputs*: what the
  next layer and the output layer read at step t is ``Y_t * mask_t``, as if each step had its own
  copy of the consumers' weights with that unit's column zeroed. The layer's own recurrence runs
  as the native op. Fast (one Mul per layer), and it keeps the units' memory intact.
* ``state``: a unit outside step t's concern is *removed* at step t: h_t[j] = c_t[j] = 0 after that
  step, as a per-step copy of the cell's weights with the unit sliced out computes. Each op becomes
  one ``Scan`` per direction whose body computes the cell in plain ONNX ops (MatMul, Sigmoid,
  Tanh, ...) and multiplies h (and c) by the step's mask; the input projection ``X·Wᵀ + Wb`` is one
  MatMul outside the loop. Measured on the 1:N fixture it costs far more accuracy (−3.3 vs −0.6
  points): zeroing a state wipes the unit's memory for every later step.

Mask tables ``[T_max, ...]`` are sliced to the input's length, so a module accepts any sequence up
to the longest seen in tracing (``onnxmod.max_steps`` in its metadata); onnxmod refuses longer
inputs before running.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .concern import Concern
from .errors import UnsupportedModelError
from .graph import Model
from .ops.base import UnitSelection


def _mask_outputs(m: Model, op, masks: list[np.ndarray]) -> None:
    """``Y * mask[:T]`` for every consumer of the op's sequence output (the recurrence runs as is)."""
    y = op.y
    M = np.stack(masks, axis=1)[:, :, None, :] > 0.5  # [T_max, D, 1, H'], stored as bool (1 byte a step)
    p = f"onnxmod_unrolled/{op.index}"
    shape, steps = gs.Variable(f"{p}/y_shape", dtype=np.int64), gs.Variable(f"{p}/steps", dtype=np.int64)
    mask_b = gs.Variable(f"{p}/mask_bool", dtype=np.bool_)
    mask, masked = gs.Variable(f"{p}/mask", dtype=np.float32), gs.Variable(f"{p}/y_masked", dtype=np.float32)
    consumers = list(y.outputs)
    m.graph.nodes += [
        gs.Node("Shape", f"{p}/shape", inputs=[y], outputs=[shape]),
        gs.Node("Slice", f"{p}/steps", inputs=[shape, gs.Constant(f"{p}/c0", np.array([0])),
                                               gs.Constant(f"{p}/c1", np.array([1]))], outputs=[steps]),
        gs.Node("Slice", f"{p}/mask", inputs=[gs.Constant(f"{p}/masks", M), gs.Constant(f"{p}/m0", np.array([0])),
                                              steps, gs.Constant(f"{p}/ax", np.array([0]))], outputs=[mask_b]),
        gs.Node("Cast", f"{p}/mask_float", attrs={"to": onnx.TensorProto.FLOAT}, inputs=[mask_b], outputs=[mask]),
        gs.Node("Mul", f"{p}/apply", inputs=[y, mask], outputs=[masked]),
    ]
    for c in consumers:
        c.inputs = [masked if x is y else x for x in c.inputs]


SEMANTICS = ("output", "state")


def why_not_unrolled(m: Model) -> str | None:
    """None when unrolled modules can be built for ``m``, else why not (one line)."""
    opset = m.opset.get("", m.opset.get("ai.onnx", 0))
    if opset < 13:  # the Scan cells use opset-13 forms (Unsqueeze/Split take their axes/sizes as inputs)
        return f"unrolled mode needs opset >= 13, the model uses opset {opset}"
    return None


def apply_unrolled(m: Model, concern: Concern, semantics: str = "output") -> None:
    """Rewrite ``m`` into the unrolled module of ``concern`` (``keep[k]`` is ``[T, U]``)."""
    why = why_not_unrolled(m)
    if why:
        raise UnsupportedModelError(f"{m.source}: {why}; use --mode rolled or re-export with a newer opset")
    sels = {}
    for op in m.recurrent:
        keep = concern.keep[op.index]
        H = op.hidden_size
        union = keep.any(axis=0)
        sels[op.index] = UnitSelection.from_keep(H, [np.flatnonzero(union[d * H:(d + 1) * H])
                                                     for d in range(op.directions)])
    m.apply_selection(sels)
    for op in m.recurrent:
        keep, sel, H = concern.keep[op.index], sels[op.index], sels[op.index].hidden_size
        masks = []
        for d in range(op.directions):
            md = keep[:, d * H + sel.kept[d]].astype(np.float32)
            md[:, np.isin(sel.kept[d], sel.inert[d])] = 0
            masks.append(md)
        if semantics == "output":
            _mask_outputs(m, op, masks)
        else:
            op.mask_states(m.graph, masks, f"onnxmod_unrolled/{op.index}", m.source)
    m.graph.cleanup().toposort()

