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


class _Body:
    """Builds one Scan body graph with unique tensor names."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[gs.Node] = []
        self.n = 0

    def var(self, tag: str) -> gs.Variable:
        self.n += 1
        return gs.Variable(f"{self.prefix}/{tag}_{self.n}", dtype=np.float32)

    def const(self, tag: str, value) -> gs.Constant:
        self.n += 1
        return gs.Constant(f"{self.prefix}/{tag}_{self.n}", np.ascontiguousarray(value))

    def op(self, op: str, inputs, attrs=None, tag=None) -> gs.Variable:
        out = self.var(tag or op.lower())
        self.nodes.append(gs.Node(op, f"{out.name}/node", attrs=attrs or {}, inputs=list(inputs), outputs=[out]))
        return out

    def act(self, x, spec) -> gs.Variable:
        name, a, b = spec
        if name in ("Sigmoid", "Tanh", "Relu", "Softsign", "Softplus"):
            return self.op(name, [x])
        if name == "HardSigmoid":
            return self.op(name, [x], {"alpha": float(a), "beta": float(b)})
        if name in ("LeakyRelu", "ThresholdedRelu", "Elu"):
            return self.op(name, [x], {"alpha": float(a)})
        if name == "Affine":
            return self.op("Add", [self.op("Mul", [x, self.const("a", np.float32(a))]), self.const("b", np.float32(b))])
        if name == "ScaledTanh":
            t = self.op("Tanh", [self.op("Mul", [x, self.const("b", np.float32(b))])])
            return self.op("Mul", [t, self.const("a", np.float32(a))])
        raise UnsupportedModelError(f"activation {name!r} is not supported in unrolled mode")

    def split(self, x, sizes: list[int]) -> list[gs.Variable]:
        outs = [self.var("part") for _ in sizes]
        self.nodes.append(gs.Node("Split", f"{outs[0].name}/split", attrs={"axis": -1},
                                  inputs=[x, self.const("sizes", np.array(sizes, dtype=np.int64))], outputs=outs))
        return outs


def _cell_body(handler, node, d: int, Rd: np.ndarray, Rb: np.ndarray, acts, H: int, prefix: str) -> gs.Graph:
    """Scan body: (h[, c], xp_t, m_t) -> (h'[, c'], y_t) with h' = m_t ⊙ cell(...)."""
    b = _Body(prefix)
    lstm = handler.op_type == "LSTM"
    h = gs.Variable(f"{prefix}/h_in", dtype=np.float32, shape=["B", H])
    c = gs.Variable(f"{prefix}/c_in", dtype=np.float32, shape=["B", H]) if lstm else None
    xp = gs.Variable(f"{prefix}/xp_in", dtype=np.float32, shape=["B", handler.num_gates * H])
    m = gs.Variable(f"{prefix}/m_in", dtype=np.float32, shape=[H])
    if handler.op_type == "LSTM":
        (f, g, hh) = acts
        z = b.op("Add", [xp, b.op("Add", [b.op("MatMul", [h, b.const("Rt", Rd.T)]), b.const("Rb", Rb)])])
        i_, o_, f_, c_ = b.split(z, [H] * 4)
        i_, o_, f_, ct = b.act(i_, f), b.act(o_, f), b.act(f_, f), b.act(c_, g)
        c_new = b.op("Mul", [b.op("Add", [b.op("Mul", [f_, c]), b.op("Mul", [i_, ct])]), m])
        h_new = b.op("Mul", [b.op("Mul", [o_, b.act(c_new, hh)]), m])
        states = [h_new, c_new]
    elif handler.op_type == "GRU":
        (f, g) = acts
        xz, xr, xn = b.split(xp, [H] * 3)
        rzr = b.op("Add", [b.op("MatMul", [h, b.const("Rzr", Rd[:2 * H].T)]), b.const("Rbzr", Rb[:2 * H])])
        hz, hr = b.split(rzr, [H, H])
        z = b.act(b.op("Add", [xz, hz]), f)
        r = b.act(b.op("Add", [xr, hr]), f)
        Rn, Rbn = b.const("Rn", Rd[2 * H:].T), b.const("Rbn", Rb[2 * H:])
        if int(node.attrs.get("linear_before_reset", 0)):
            hn = b.op("Mul", [r, b.op("Add", [b.op("MatMul", [h, Rn]), Rbn])])
        else:
            hn = b.op("Add", [b.op("MatMul", [b.op("Mul", [r, h]), Rn]), Rbn])
        n = b.act(b.op("Add", [xn, hn]), g)
        h_new = b.op("Mul", [b.op("Add", [n, b.op("Mul", [z, b.op("Sub", [h, n])])]), m])
        states = [h_new]
    else:
        (f,) = acts
        pre = b.op("Add", [xp, b.op("Add", [b.op("MatMul", [h, b.const("Rt", Rd.T)]), b.const("Rb", Rb)])])
        h_new = b.op("Mul", [b.act(pre, f), m])
        states = [h_new]
    y = b.op("Identity", [h_new], tag="y")
    inputs = [h] + ([c] if lstm else []) + [xp, m]
    return gs.Graph(nodes=b.nodes, inputs=inputs, outputs=states + [y], name=prefix)


def _replace_op(m: Model, op, masks: list[np.ndarray]) -> None:
    """Swap ``op`` (already sliced) for Scans applying ``masks[d]`` ``[T_max, H']``."""
    node, handler = op.node, op.handler
    H, G, D = handler.hidden_size(node), handler.num_gates, handler.directions(node)
    Wt, Rt, Bt = handler.weights(node)
    acts = handler.activations(node)
    lstm = handler.op_type == "LSTM"
    x = node.inputs[0]
    p = f"onnxmod_unrolled/{op.index}"
    nodes: list[gs.Node] = []

    def v(tag, dtype=np.float32):
        return gs.Variable(f"{p}/{tag}", dtype=dtype)

    # batch size and zero initial state [B, H']
    shape = v("x_shape", np.int64)
    nodes.append(gs.Node("Shape", f"{p}/shape", inputs=[x], outputs=[shape]))
    steps, batch = v("steps", np.int64), v("batch", np.int64)
    nodes.append(gs.Node("Slice", f"{p}/steps", inputs=[shape, gs.Constant(f"{p}/c0", np.array([0])),
                                                          gs.Constant(f"{p}/c1", np.array([1]))], outputs=[steps]))
    nodes.append(gs.Node("Slice", f"{p}/batch", inputs=[shape, gs.Constant(f"{p}/c1b", np.array([1])),
                                                          gs.Constant(f"{p}/c2", np.array([2]))], outputs=[batch]))
    state_shape = v("state_shape", np.int64)
    nodes.append(gs.Node("Concat", f"{p}/state_shape", attrs={"axis": 0},
                         inputs=[batch, gs.Constant(f"{p}/H", np.array([H]))], outputs=[state_shape]))
    zero = v("zero_state")
    nodes.append(gs.Node("ConstantOfShape", f"{p}/zero", attrs={"value": gs.Constant(f"{p}/zv", np.zeros(1, np.float32))},
                         inputs=[state_shape], outputs=[zero]))
    ys, hs, cs = [], [], []
    for d in range(D):
        q = f"{p}/d{d}"
        xp = gs.Variable(f"{q}/xp", dtype=np.float32)
        mm = gs.Variable(f"{q}/xw", dtype=np.float32)
        nodes.append(gs.Node("MatMul", f"{q}/xw", inputs=[x, gs.Constant(f"{q}/Wt", np.ascontiguousarray(Wt[d].T))],
                             outputs=[mm]))
        nodes.append(gs.Node("Add", f"{q}/xp", inputs=[mm, gs.Constant(f"{q}/Wb", Bt[d][:G * H].copy())],
                             outputs=[xp]))
        mask = gs.Variable(f"{q}/mask", dtype=np.float32)
        nodes.append(gs.Node("Slice", f"{q}/mask", inputs=[gs.Constant(f"{q}/masks", masks[d].astype(np.float32)),
                                                            gs.Constant(f"{q}/m0", np.array([0])), steps,
                                                            gs.Constant(f"{q}/ax", np.array([0]))], outputs=[mask]))
        body = _cell_body(handler, node, d, Rt[d], Bt[d][G * H:], acts[d], H, f"{q}/body")
        h_last, y = v(f"d{d}/h_last"), v(f"d{d}/y")
        c_last = v(f"d{d}/c_last") if lstm else None
        rev = 1 if d == 1 or handler.direction(node) == "reverse" else 0
        nstate = 2 if lstm else 1
        nodes.append(gs.Node("Scan", f"{q}/scan", attrs={
            "body": body, "num_scan_inputs": 2, "scan_input_directions": [rev, rev],
            "scan_output_directions": [rev]},
            inputs=[zero] * nstate + [xp, mask], outputs=[h_last] + ([c_last] if lstm else []) + [y]))
        ys.append(y), hs.append(h_last), cs.append(c_last)

    def stack(parts, axis, out):
        ups = []
        for i, t in enumerate(parts):
            u = v(f"{out.name.split('/')[-1] or 'o'}_u{i}")
            nodes.append(gs.Node("Unsqueeze", f"{u.name}/node", inputs=[t, gs.Constant(f"{u.name}/ax", np.array([axis]))],
                                 outputs=[u]))
            ups.append(u)
        nodes.append(gs.Node("Concat", f"{p}/{len(nodes)}/concat", attrs={"axis": axis}, inputs=ups, outputs=[out]))

    outs = list(node.outputs)
    node.outputs.clear()
    node.inputs.clear()
    if outs and outs[0].name:
        stack(ys, 1, outs[0])
    if len(outs) > 1 and outs[1].name and outs[1].outputs:
        stack(hs, 0, outs[1])
    if lstm and len(outs) > 2 and outs[2].name and outs[2].outputs:
        stack(cs, 0, outs[2])
    m.graph.nodes.extend(nodes)


def _mask_outputs(m: Model, op, masks: list[np.ndarray]) -> None:
    """``Y * mask[:T]`` for every consumer of the op's sequence output (the recurrence runs as is)."""
    y = op.node.outputs[0]
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


def apply_unrolled(m: Model, concern: Concern, semantics: str = "output") -> None:
    """Rewrite ``m`` into the unrolled module of ``concern`` (``keep[k]`` is ``[T, U]``)."""
    opset = m.opset.get("", m.opset.get("ai.onnx", 0))
    if opset < 13:  # the Scan cells use opset-13 forms (Unsqueeze/Split take their axes/sizes as inputs)
        raise UnsupportedModelError(f"{m.source}: unrolled mode needs opset >= 13, the model uses opset {opset}; "
                                    f"use --mode rolled or re-export with a newer opset")
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
            _replace_op(m, op, masks)
    m.graph.cleanup().toposort()

