"""Replacing a ``Loop`` whose cell a native op computes by that op (``LoopCells``).

The loop's outputs the model reads are rewired to the op's: the final states to ``Y_h``/``Y_c``,
the stacked per-step outputs (a scan output, or a sequence stacked after the loop by
``ConcatFromSequence``) to ``Y``.

A masked cell (Keras ``mask_zero``: ``h' = m h_new + (1 - m) h`` and its output held the same way)
over rows whose real steps are one block — padding before it, after it, or both — is the op run
with ``sequence_lens`` = each row's number of real steps on the row rolled so that its first real
step comes first; its per-step output is the op's ``Y`` read back at ``clip(t - first, 0, len - 1)``
(the state held after the last real step), and 0 before the first real step (the held initial
state). A reader of the output's last step reads ``Y_h``: it is the last real step's state whatever
the mask. Masks with holes differ: the check on traced rows (``verify_forms``) compares the lifted
form with the loop on the model's own data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .general import detach
from .identify import NativeCell
from .loop_plumbing import LoopParts
from .native import lifted_op, time_major


@dataclass(eq=False)
class LoopOutputs:
    """The loop's outputs the model reads, by what they hold."""

    final: gs.Variable  # h's final value
    final_c: gs.Variable | None = None
    final_alias: gs.Variable | None = None  # a masked cell's last output (h's final value too)
    stacked: list = field(default_factory=list)  # scan outputs stacking h: [T, N, H]
    concat: list = field(default_factory=list)  # ConcatFromSequence nodes stacking h (time on their axis)
    mask: gs.Variable | None = None  # the outer mask a masked cell reads step by step
    last_steps: list = field(default_factory=list)  # the model's reads of a masked output's last step (now Y_h)

    def watched(self, graph: gs.Graph) -> list[str]:
        """The model's own tensors of the recurrence's states (checked on traced rows)."""
        names = [t.name for t in self.stacked] + [c.outputs[0].name for c in self.concat]
        return names + [t.name for t in (self.final, self.final_c, self.final_alias)
                        if t is not None and (t.outputs or t in graph.outputs)]


class _Emit:
    """Nodes appended to ``graph``, named under ``p``."""

    def __init__(self, graph: gs.Graph, p: str):
        self.graph, self.p = graph, p

    def const(self, tag: str, value, dtype=np.int64) -> gs.Constant:
        return gs.Constant(f"{self.p}/{tag}", np.array(value, dtype=dtype))

    def __call__(self, op: str, tag: str, inputs, out=None, dtype=np.int64, **attrs) -> gs.Variable:
        out = out if out is not None else gs.Variable(f"{self.p}/{tag}", dtype=dtype)
        self.graph.nodes.append(gs.Node(op, f"{self.p}/{tag}", attrs=attrs, inputs=list(inputs), outputs=[out]))
        return out


def replace(graph: gs.Graph, parts: LoopParts, cell: NativeCell, outs: LoopOutputs) -> gs.Node:
    """The loop replaced by ``cell``'s native op; returns the op's node."""
    name, loop = parts.name, parts.loop
    p = f"{name}/lifted"
    x = time_major(graph, p, parts.X) if parts.axis == 1 else parts.X
    a = {k: v for k, v in cell.attrs.items() if not k.startswith("_")}
    e = _Emit(graph, p)
    ax0, ax1 = e.const("axis0", [0]), e.const("axis1", [1])
    masked = outs.mask is not None
    rows = _masked_rows(e, x, outs.mask, parts.axis) if masked else None
    native, Y, Yh, Yc = lifted_op(graph, name, cell.op_type, rows.x if masked else x, cell.W, cell.R, cell.B, a,
                                  parts.H, [rows.lengths] if masked else [])
    detach(loop)  # its body's nodes read outer tensors: left attached, they would still count as their readers
    e("Squeeze", "final", [Yh, ax0], outs.final, np.float32)
    if outs.final_c is not None:
        e("Squeeze", "final_c", [Yc, ax0], outs.final_c, np.float32)
    if outs.final_alias is not None:  # the masked loop's last output: its last real state
        e("Squeeze", "final_out", [Yh, ax0], outs.final_alias, np.float32)
    seq_tm = gs.Variable(f"{p}/steps", dtype=np.float32)  # [T, N, H]
    if masked:
        steps = e("Squeeze", "steps_rolled", [Y, ax1], dtype=np.float32)
        _held(e, steps, rows, seq_tm)
    else:
        e("Squeeze", "steps", [Y, ax1], seq_tm, np.float32)
    for t in outs.stacked:
        graph.nodes.append(gs.Node("Identity", f"{t.name}/lifted", inputs=[seq_tm], outputs=[t]))
    for c in outs.concat:
        out = c.outputs[0]
        c.outputs.clear()
        c.inputs.clear()
        perm = [0, 1, 2] if int(c.attrs.get("axis", 0)) == 0 else [1, 0, 2]
        graph.nodes.append(gs.Node("Transpose", f"{out.name}/lifted", attrs={"perm": perm},
                                   inputs=[seq_tm], outputs=[out]))
    if masked:
        _last_step_reads_final(e, outs, Yh)
    graph.cleanup().toposort()
    return native


@dataclass(eq=False)
class _Rows:
    x: gs.Variable  # every row rolled so that its first real step comes first
    lengths: gs.Variable  # [N] int32: real steps per row
    first: gs.Variable  # [1, N] int64: each row's first real step
    last: gs.Variable  # [1, N] int64: its number of real steps - 1
    t: gs.Variable  # [T, 1] int64: the step index


def _masked_rows(e: _Emit, x, mask, axis: int) -> _Rows:
    """Each row's real steps from the loop's mask (time on ``axis``), and ``x`` rolled to start at them."""
    mi = e("Cast", "mask_int", [mask], dtype=np.int32, to=onnx.TensorProto.INT32)
    total = e("ReduceSum", "lengths_2d", [mi, e.const("time_axis", [axis])], dtype=np.int32, keepdims=0)
    lengths = e("Reshape", "lengths", [total, e.const("flat", [-1])], dtype=np.int32)
    first_2d = e("ArgMax", "first_2d", [mi], axis=axis, keepdims=0)
    first = e("Reshape", "first", [first_2d, e.const("row", [1, -1])])
    last = e("Sub", "last", [e("Cast", "lengths_64", [e("Reshape", "lengths_row", [lengths, e.const("row2", [1, -1])],
                                                             dtype=np.int32)], to=onnx.TensorProto.INT64),
                             e.const("one", [1])])
    shape = e("Shape", "x_shape", [x])
    steps = e("Squeeze", "T", [e("Slice", "T_1", [shape, e.const("s0", [0]), e.const("s1", [1])]), e.const("a0", [0])])
    t = e("Unsqueeze", "t", [e("Range", "t_1d", [e.const("zero", 0), steps, e.const("step", 1)]), e.const("a1", [1])])
    src = e("Mod", "rolled_step", [e("Add", "from_first", [t, first]), steps])
    idx = e("Expand", "rolled_index", [e("Unsqueeze", "rolled_step_3d", [src, e.const("a2", [2])]), shape])
    rolled = e("GatherElements", "x_rolled", [x, idx], dtype=np.float32, axis=0)
    return _Rows(rolled, lengths, first, last, t)


def _held(e: _Emit, steps, rows: _Rows, out) -> None:
    """The masked loop's per-step output from the op's ``Y`` over rolled rows: step ``t - first`` clipped to
    the real steps (held after the last one), 0 before the first real step."""
    rel = e("Sub", "from_start", [rows.t, rows.first])
    idx = e("Max", "held_step", [e("Min", "held_step_hi", [rel, rows.last]), e.const("zero_i", [0])])
    idx3 = e("Expand", "held_index", [e("Unsqueeze", "held_step_3d", [idx, e.const("a2b", [2])]),
                                      e("Shape", "steps_shape", [steps])])
    got = e("GatherElements", "held", [steps, idx3], dtype=np.float32, axis=0)
    started = e("Not", "started", [e("Less", "before_first", [rel, e.const("zero_j", [0])], dtype=np.bool_)],
                dtype=np.bool_)
    on = e("Unsqueeze", "started_3d", [e("Cast", "started_f", [started], dtype=np.float32, to=onnx.TensorProto.FLOAT),
                                       e.const("a2c", [2])], dtype=np.float32)
    e("Mul", "held_output", [got, on], out, np.float32)


def _last_step(node: gs.Node, t) -> int | None:
    """The time axis when ``node`` reads only the last step of ``t`` (``[T, N, H]`` or ``[N, T, H]``)."""
    ins = node.inputs
    vals = [np.asarray(i.values).reshape(-1).tolist() if isinstance(i, gs.Constant) else None for i in ins[1:]]
    if node.op == "Slice" and len(ins) >= 4 and ins[0] is t and None not in vals[:3] and len(vals[0]) == 1:
        steps = vals[3] if len(vals) > 3 and vals[3] is not None else [1]
        if vals[0] == [-1] and vals[1][0] >= 2 ** 31 - 1 and steps == [1]:
            return int(vals[2][0]) % 3
    return None


def _last_step_reads_final(e: _Emit, outs: LoopOutputs, Yh) -> None:
    """A Slice of the last step of the masked output reads the final state (``Y_h``, ``[1, N, H]``)."""
    tensors = list(outs.stacked) + [c.outputs[0] for c in outs.concat]
    for t in tensors:
        for node in list(t.outputs):
            axis = _last_step(node, t)
            if axis is None:
                continue
            out = node.outputs[0]
            node.outputs.clear()
            node.inputs.clear()
            outs.last_steps.append(out)
            if axis == 0:
                e.graph.nodes.append(gs.Node("Identity", f"{out.name}/final", inputs=[Yh], outputs=[out]))
            else:
                e.graph.nodes.append(gs.Node("Transpose", f"{out.name}/final", attrs={"perm": [1, 0, 2]},
                                             inputs=[Yh], outputs=[out]))
