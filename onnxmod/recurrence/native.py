"""Front-end: native ``LSTM``/``GRU``/``RNN`` ops, with their whole ONNX spec.

Per-op knowledge (weight layout, slicing, attribute checks) is in ``onnxmod.ops``; the equations
in ``onnxmod.cells``. This file says what a native op *is* as a recurrence: which tensors are its
``x``, ``y`` and states, and how its initial states are read (provably zero, a constant, or the
final state of another recurrence: an encoder handing over to a decoder).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .. import optable
from ..cells.backend import Onnx
from ..errors import OnnxmodError, UnsupportedModelError
from ..ops import handler_for
from ..ops.base import SEQUENCE_LENS, RecurrentOpHandler
from .contract import Form, FrontEnd, NoMatch, Recurrence, UnitSelection


def _is_zero(t, depth: int = 0) -> bool:
    """True when tensor ``t`` is provably all zeros (constant, or ConstantOfShape(0) reshaped)."""
    if depth > 32:
        return False
    if t is None or t.name == "":
        return True
    if isinstance(t, gs.Constant):
        return not np.any(np.asarray(t.values))
    if not t.inputs:
        return False
    p = t.inputs[0]
    if p.op == "ConstantOfShape":
        v = p.attrs.get("value")
        return v is None or not np.any(np.asarray(v.values if isinstance(v, gs.Constant) else v))
    if p.op == "Constant":
        v = p.attrs.get("value")
        return v is not None and not np.any(np.asarray(v.values if isinstance(v, gs.Constant) else v))
    if optable.copies_values(p.op):  # its elements are its input's (every input's: Concat)
        data = p.inputs[:] if p.op == "Concat" else p.inputs[:1]
        return all(_is_zero(x, depth + 1) for x in data)
    return False


def _state_producer(t, depth: int = 0):
    """The recurrent node whose final state (Y_h / Y_c) ``t`` is, through reshapes; else None."""
    if depth > 16 or isinstance(t, gs.Constant) or not t.inputs:
        return None
    p = t.inputs[0]
    if handler_for(p.op) is not None:
        return p if any(o is t for o in p.outputs[1:3]) else None
    if p.op in ("Identity", "Reshape", "Squeeze", "Unsqueeze"):
        return _state_producer(p.inputs[0], depth + 1)
    return None


class NativeRecurrence(Recurrence):
    """A native ``LSTM``/``GRU``/``RNN`` node. Other front-ends may hand over their recurrences in
    this form too (``form`` then says what the model wrote)."""

    node: gs.Node
    handler: RecurrentOpHandler

    def __init__(self, index: int, node: gs.Node, form: Form = Form.NATIVE, watch=(),
                 state_from_node: gs.Node | None = None):
        super().__init__(index, node.name, form, watch, state_from_node)
        self.node, self.handler = node, handler_for(node.op)
        self.cell = self.handler.cell

    @property
    def hidden_size(self) -> int:
        return self.handler.hidden_size(self.node)

    @property
    def directions(self) -> int:
        return self.handler.directions(self.node)

    @property
    def x(self) -> gs.Variable:
        return self.node.inputs[0]

    @property
    def y(self) -> gs.Variable:
        """Every step's h ``[T, D, N, H]`` (named here if the model left that output unnamed)."""
        y = self.node.outputs[0] if self.node.outputs else None
        if y is None or not y.name:
            y = gs.Variable(f"{self.name}/Y", dtype=np.float32)
            if self.node.outputs:
                self.node.outputs[0] = y
            else:
                self.node.outputs.append(y)
        return y

    @property
    def lengths(self):
        return self.node.inputs[SEQUENCE_LENS] if self.handler._has_input(self.node, SEQUENCE_LENS) else None

    def reversed_directions(self):
        return self.handler.reversed_directions(self.node)

    def output_activation(self) -> str:
        return self.handler.output_activation(self.node)

    def activations(self) -> list:
        return self.handler.activations(self.node)

    def describe(self) -> dict:
        return describe_node(self.node, index=self.index, form=self.form)

    def unit_outputs(self):
        D, H = self.directions, self.hidden_size
        ids = np.arange(D * H).reshape(D, H)
        outs = self.node.outputs
        starts = [(outs[0], ids.reshape(1, D, 1, H))] if outs else []
        starts += [(o, ids.reshape(D, 1, H)) for o in outs[1:3]]
        return [(t, lab) for t, lab in starts if t is not None and t.name]

    def reader_nodes(self):
        return [self.node]

    def reads(self, node, tensor):
        if node is not self.node:
            return None
        idx = [i for i, x in enumerate(node.inputs) if x is tensor]
        if idx and idx[0] in self.handler.state_inputs:
            return "state"
        return "x" if idx and idx[0] == 0 else "other"

    def weights(self):
        return self.handler.weights(self.node)

    def parameter_blocks(self):
        """Per direction and gate: W's rows, R's rows, R's diagonal, both bias halves."""
        W, R, B = self.weights()
        H, G = self.hidden_size, self.handler.num_gates
        blocks = []
        for d in range(W.shape[0]):
            for g in range(G):
                rows = slice(g * H, (g + 1) * H)
                blocks += [("block", W[d, rows]), ("block", R[d, rows]), ("diagonal", np.diag(R[d, rows])),
                           ("block", B[d, rows]), ("block", B[d, G * H + g * H:G * H + (g + 1) * H])]
        return [H, W.shape[2], G], blocks

    def reference(self, x, masks=None, sequence_lens=None, initial=None):
        return self.handler.run_numpy(self.node, x, masks=masks, sequence_lens=sequence_lens, initial=initial)

    def gates_from_trace(self, x, y):
        return self.handler.gates_from_trace(self.node, x, y)

    def silencer(self):
        return self.handler.silencer(self.node)

    def why_not_silenced(self):
        if self.silencer() is None:
            return (f"{self.name} ({self.op_type} with activations {[a[0] for a in self.activations()[0]]}) "
                    f"cannot silence a unit from its input")
        return None

    def silence_groups(self, graph, code, keeps, prefix) -> None:
        """The op reads ``[X, code]`` (the group code tiled over time) and its W gets one column per
        module: for module k's removed unit j, the silencing offset on the gates that hold j at 0."""
        K = len(keeps)
        x, p = self.x, prefix
        tsteps, target, code3, tiled, joined = (gs.Variable(f"{p}/{n}", dtype=d) for n, d in (
            ("steps", np.int64), ("code_target", np.int64), ("code_1", np.float32),
            ("code_t", np.float32), ("x_coded", np.float32)))
        xshape = gs.Variable(f"{p}/x_shape", dtype=np.int64)
        graph.nodes += [
            gs.Node("Shape", f"{p}/x_shape", inputs=[x], outputs=[xshape]),
            gs.Node("Slice", f"{p}/steps", inputs=[xshape, gs.Constant(f"{p}/0", np.array([0])),
                                                   gs.Constant(f"{p}/1", np.array([1]))], outputs=[tsteps]),
            gs.Node("Concat", f"{p}/code_target", attrs={"axis": 0},
                    inputs=[tsteps, gs.Constant(f"{p}/ones", np.array([1, 1]))], outputs=[target]),
            gs.Node("Unsqueeze", f"{p}/code_1", inputs=[code, gs.Constant(f"{p}/axis0", np.array([0]))],
                    outputs=[code3]),
            gs.Node("Expand", f"{p}/code_t", inputs=[code3, target], outputs=[tiled]),
            gs.Node("Concat", f"{p}/x_coded", attrs={"axis": 2}, inputs=[x, tiled], outputs=[joined]),
        ]
        W = self.weights()[0]
        D, GH, _ = W.shape
        H = self.hidden_size
        cols = np.zeros((D, GH, K), dtype=W.dtype)
        gates = self.cell.gates
        for gate, offset in self.silencer().items():
            gi = gates.index(gate)
            for k, keep in enumerate(keeps):
                removed = ~np.asarray(keep).reshape(D, H)
                for d in range(D):
                    cols[d, gi * H + np.flatnonzero(removed[d]), k] = offset
        self.widen_input(joined, cols)

    def slice_units(self, sel: UnitSelection) -> None:
        self.handler.slice_units(self.node, sel)

    def slice_input(self, positions, zero=None) -> None:
        self.handler.slice_input(self.node, positions, zero)

    def set_input_weights(self, W) -> None:
        self.handler.set_input_weights(self.node, W)

    def absorb(self, input_delta=None, own=None) -> None:
        self.handler.absorb(self.node, input_delta=input_delta, own=own)

    def widen_input(self, x, columns) -> None:
        self.handler.widen_input(self.node, x, columns)

    def mask_states(self, graph, masks, prefix, source) -> None:
        _masked_scans(graph, self, masks, prefix, source)


def time_major(graph: gs.Graph, p: str, X: gs.Variable) -> gs.Variable:
    """``X`` ``[N, T, I]`` transposed to the ``[T, N, I]`` a native op reads."""
    x = gs.Variable(f"{p}/x_time_major", dtype=np.float32)
    graph.nodes.append(gs.Node("Transpose", f"{p}/to_time_major", attrs={"perm": [1, 0, 2]}, inputs=[X], outputs=[x]))
    return x


def lifted_op(graph: gs.Graph, name: str, op_type: str, x, W, R, B, attrs: dict, hidden: int, extra=()):
    """The native op a front-end lifts a recurrence into (weights ``[1, G*H, ...]``), appended to
    ``graph``: returns (node, Y, Y_h, Y_c or None). ``extra``: inputs after B (``sequence_lens``)."""
    p = f"{name}/lifted"
    Y, Yh = gs.Variable(f"{p}/Y", dtype=np.float32), gs.Variable(f"{p}/Y_h", dtype=np.float32)
    Yc = gs.Variable(f"{p}/Y_c", dtype=np.float32) if op_type == "LSTM" else None
    node = gs.Node(op_type, f"{name}/{op_type}", attrs=dict(attrs, hidden_size=int(hidden)), inputs=[
        x, *(gs.Constant(f"{p}/{k}", np.asarray(v, dtype=np.float32)) for k, v in (("W", W), ("R", R), ("B", B))),
        *extra], outputs=[Y, Yh] + ([Yc] if Yc is not None else []))
    graph.nodes.append(node)
    return node, Y, Yh, Yc


def describe_node(n: gs.Node, index: int | None = None, form: Form = Form.NATIVE) -> dict:
    """What ``inspect`` says of a native recurrent node (read leniently: weights may be graph inputs)."""
    h = handler_for(n.op)
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in n.attrs.items()}
    for k, v in attrs.items():
        if isinstance(v, list):
            attrs[k] = [x.decode() if isinstance(x, bytes) else x for x in v]
    w = n.inputs[1] if len(n.inputs) > 1 else None
    shape = getattr(w, "shape", None) or []
    out = {"name": n.name, "form": form, "op_type": n.op, "cell": h.cell.op_type}
    if index is not None:
        out["index"] = index
    try:
        out.update({"hidden_size": h.hidden_size(n), "directions": h.directions(n)})
        out["rule"] = "relu" if h.output_activation(n) == "Relu" else "logistic"
    except (OnnxmodError, KeyError, TypeError, ValueError):
        pass
    size = h.input_size(n)
    if size is None and len(shape) == 3 and isinstance(shape[2], (int, np.integer)):
        size = int(shape[2])  # a weight given as a graph input, of a declared shape
    out["input_size"] = size
    out["attributes"] = attrs
    out["inputs"] = {k: (n.inputs[i].name if len(n.inputs) > i and n.inputs[i].name else None)
                     for i, k in enumerate(("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"))
                     if i < len(n.inputs)}
    return out


class NativeOps(FrontEnd):
    """Every ``LSTM``/``GRU``/``RNN`` node whose weights are constants (after normalization)."""

    name = "native"

    def candidates(self, graph):
        return [n for n in graph.nodes if handler_for(n.op) is not None]

    def lift(self, graph, node, index, ctx):
        h = handler_for(node.op)
        if not node.name:
            node.name = f"{node.op}_{index}"
        try:
            h.check(node)
        except OnnxmodError as exc:
            return NoMatch(self.name, node.name, node.op, str(exc).split(f"({node.op}): ", 1)[-1], type(exc))
        coupled = None
        for i in h.state_inputs:
            if len(node.inputs) > i and node.inputs[i].name:
                if _is_zero(node.inputs[i]):
                    node.inputs[i] = gs.Variable.empty()
                    continue
                if h.constant_state(node, i)[0] is not None:
                    continue  # a constant (or learned, batch-broadcast) initial state: sliced with the units
                src = _state_producer(node.inputs[i])
                if src is None:
                    which = "initial_h" if i == 5 else "initial_c"
                    what = ("a graph input (a streaming model's state)" if node.inputs[i] in graph.inputs
                            else "computed at run time")
                    return NoMatch(self.name, node.name, node.op,
                                   f"{which} is {what}, neither a constant nor the final state of another recurrent "
                                   f"op; such initial states are not supported yet")
                coupled = src
        return NativeRecurrence(index, node, ctx.known.get(node.name, Form.NATIVE), state_from_node=coupled)


def _cell_body(cell, p, H: int, prefix: str) -> gs.Graph:
    """Scan body: (state..., xp_t, m_t) -> (state'..., y_t), every state' = m_t ⊙ the cell's step
    (``onnxmod.cells``, emitted as ONNX nodes)."""
    be = Onnx(prefix)
    states = {k: gs.Variable(f"{prefix}/{k}_in", dtype=np.float32, shape=["B", H]) for k in cell.states}
    xp = gs.Variable(f"{prefix}/xp_in", dtype=np.float32, shape=["B", cell.num_gates * H])
    m = gs.Variable(f"{prefix}/m_in", dtype=np.float32, shape=[H])
    new, _ = cell.step(be, xp, dict(states), p)
    outs = [be.mul(new[k], m) for k in cell.states]
    y = be.op("Identity", [outs[0]], tag="y")
    return gs.Graph(nodes=be.nodes, inputs=[*states.values(), xp, m], outputs=[*outs, y], name=prefix)


def _masked_scans(graph: gs.Graph, rec, masks: list[np.ndarray], p: str, source: str) -> None:
    """Swap native recurrence ``rec`` (already sliced) for Scans applying ``masks[d]`` ``[T_max, H']``
    to its states after every step (the cell's equations as ONNX nodes)."""
    node, handler = rec.node, rec.handler
    H, G, D = handler.hidden_size(node), handler.num_gates, handler.directions(node)
    if handler.domain:  # the Scans compute in float: the module would be the model's float copy
        raise UnsupportedModelError(f"{source}: node {rec.name!r} ({node.op}): --unrolled-semantics state does not "
                                    f"support quantized recurrences; use --unrolled-semantics output")
    if any(handler._has_input(node, i) for i in (4, *handler.state_inputs)):
        raise UnsupportedModelError(f"{source}: node {rec.name!r}: --unrolled-semantics state does not support "
                                    f"sequence_lens or initial states; use --unrolled-semantics output")
    Wt, _, Bt = handler.weights(node)
    params, reverse = handler.params(node), handler.reversed_directions(node)
    lstm = len(handler.cell.states) == 2
    x = node.inputs[0]
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
    nodes.append(gs.Node("ConstantOfShape", f"{p}/zero",
                         attrs={"value": gs.Constant(f"{p}/zv", np.zeros(1, np.float32))},
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
        body = _cell_body(handler.cell, params[d], H, f"{q}/body")
        h_last, y = v(f"d{d}/h_last"), v(f"d{d}/y")
        c_last = v(f"d{d}/c_last") if lstm else None
        rev = int(reverse[d])
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
            nodes.append(gs.Node("Unsqueeze", f"{u.name}/node",
                                 inputs=[t, gs.Constant(f"{u.name}/ax", np.array([axis]))],
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
    graph.nodes.extend(nodes)


