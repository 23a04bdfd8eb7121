"""General cells: any recurrence whose state is one or more vectors, whatever its equations.

A cell that no ONNX op names (a DuRNN, a cell of one's own) is cut out of its ``Loop`` body or out
of one step of its unrolled chain as a *step* (``step.py``) and run as one ``Scan``:

    Scan(zero states…, x [T, N, I]) -> (final states…, Y [T, N, U]),  body = the step

The ``Loop`` front-end (``loop.py``) and the unrolled-cell front-end (``unrolled.py``) hand a cell
here when it is none of the cells a native op computes (those are lifted into the native op); the
``Scan`` front-end (``scan.py``) takes a cell a model wrote as a ``Scan``, and this form again.
Units are positions of the state vectors, found by the cell's unit flow (``cellflow.py``), which
also says which weight rows and columns, biases and element-wise parameters each unit owns:
removing a unit slices all of them out of the body, and gives exactly the model whose unit is
held at 0 wherever the step reads it (``mask_states`` with a constant mask is that model; fused
compositions hold each row group's units so, ``silence_groups``). Each unit is scored by the rule
its own activation calls for (``rule``, per unit).

What a general cell does not offer, it says: gate monitoring (no named gates), mean compensation
and the embedding's feature reduction (no single input weight to fold into).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import UnsupportedModelError
from .cellflow import CellFlow
from .contract import Form, NoMatch, Recurrence, UnitSelection
from .native import _is_zero
from .step import Step, StepError


class CellRecurrence(Recurrence):
    """A general cell run as a ``Scan`` (``form`` says what the model wrote: ``loop``, ``unrolled``)."""

    cell = None
    input_weight = False

    scan: gs.Node
    widths_at: list  # per state: the Constant holding its width (in its zero initial state's shape)
    finals: list  # per state: the tensor the model reads its final value from (or None)
    emitted: int  # how many units the model's own per-step output holds (the first ones of ``y``)
    step: Step
    flow: CellFlow

    def __init__(self, index: int, name: str, scan: gs.Node, y: gs.Variable, form: Form, widths_at: list,
                 finals: list, emitted: int, watch=()):
        super().__init__(index, name, form, watch)
        self.scan, self._y = scan, y
        self.widths_at, self.finals, self.emitted = widths_at, finals, emitted
        self.reflow()

    def reflow(self) -> None:
        self.step = Step(self.scan.attrs["body"], self.name)
        self.flow = CellFlow(self.step)

    # ---- identity ---------------------------------------------------------------------------
    @property
    def op_type(self) -> str:
        return "Cell"

    @property
    def hidden_size(self) -> int:
        return self.flow.units

    directions = 1
    lengths = None

    @property
    def rule(self):
        """Per unit, ``relu`` or ``logistic`` (one string when every unit has the same)."""
        rules = self.flow.rules()
        return str(rules[0]) if len(set(rules.tolist())) == 1 else rules

    @property
    def x(self):
        return self.scan.inputs[self.step.n_states]

    @property
    def y(self):
        return self._y

    def reversed_directions(self):
        return [False]

    def output_activation(self) -> str:
        return "+".join(dict.fromkeys(self.flow.activations().tolist()))

    def activations(self):
        return [[(a, None, None) for a in dict.fromkeys(self.flow.activations().tolist())]]

    def describe(self) -> dict:
        acts = self.flow.activations()
        rules = self.flow.rules()
        states = []
        for k, w in enumerate(self.step.widths):
            lab = self.flow.state_labels(k)
            states.append({"width": int(w), "activation": "+".join(dict.fromkeys(acts[lab].tolist())),
                           "rule": "+".join(dict.fromkeys(rules[lab].tolist()))})
        return {"name": self.name, "index": self.index, "form": self.form, "op_type": self.op_type, "cell": "general",
                "hidden_size": self.hidden_size, "directions": 1, "input_size": self.step.input_size,
                "rule": self.rule if isinstance(self.rule, str) else "mixed", "states": states,
                "attributes": {"states": " + ".join(f"{s['width']} {s['activation']}" for s in states),
                               "body_nodes": len(self.step.graph.nodes)}}

    def unit_outputs(self):
        out = [(self._y, np.arange(self.hidden_size).reshape(1, 1, 1, -1))]
        for k, t in enumerate(self.finals):
            if t is not None:
                out.append((t, self.flow.state_labels(k).reshape(1, -1)))
        return [(t, lab) for t, lab in out if t is not None and t.name]

    def reader_nodes(self):
        return [self.scan]

    def reads(self, node, tensor):
        if node is not self.scan:
            return None
        return "x" if tensor is self.x else "other"

    def state_input_index(self, node, tensor) -> int:  # pragma: no cover - no state is read from outside
        raise UnsupportedModelError(f"node {self.name!r}: a general cell starts from a zero state")

    # ---- what a general cell cannot do ------------------------------------------------------
    def _cannot(self, what: str):
        raise UnsupportedModelError(f"node {self.name!r} (a general cell, {self.form}): {what}")

    def weights(self):
        self._cannot("it has no single input weight (mean compensation and the embedding's feature reduction need one)")

    def parameter_blocks(self):
        """Every parameter the cell's units index (weights as ``[in, out]``, biases and element-wise
        vectors flat), ordered by shape and size: the same for every export of one cell."""
        seen, blocks = set(), []
        for kind, node, i, _, _ in self.flow.sites:
            if kind != "param" or (id(node), i) in seen:
                continue
            seen.add((id(node), i))
            v = np.asarray(node.inputs[i].values, dtype=np.float64)
            if node.op == "Gemm" and i == 1 and int(node.attrs.get("transB", 0)):
                v = v.T
            v = v.reshape(-1) if i != 1 or node.op not in ("MatMul", "Gemm") else v.reshape(-1, v.shape[-1])
            blocks.append(v)
        blocks.sort(key=lambda v: (v.ndim, v.shape, float(f"{np.linalg.norm(v):.4g}")))
        return [self.hidden_size, self.step.input_size, self.step.n_states], [("block", v) for v in blocks]

    def reference(self, x, masks=None, sequence_lens=None, initial=None):
        self._cannot("its equations are its ONNX body; run it in onnxruntime")

    def gates_from_trace(self, x, y):
        self._cannot("it has no named gates to monitor; use --monitor hidden")

    def silencer(self):
        return None  # no input offset: units are held at 0 inside the step (silence_groups)

    def set_input_weights(self, W):
        self.weights()

    def absorb(self, input_delta=None, own=None):
        self.weights()

    def widen_input(self, x, columns):
        self._cannot("it has no input weight to widen (fused compositions hold its units at 0 in its step)")

    # ---- rewrites ---------------------------------------------------------------------------
    def slice_units(self, sel: UnitSelection) -> None:
        U = self.hidden_size
        keep = np.zeros(U, bool)
        keep[sel.kept[0]] = True
        self.flow.slice(keep, zero_units=np.isin(np.arange(U), sel.inert[0]))
        for k, c in enumerate(self.widths_at):
            c.values = np.array([self.step.states[k].shape[-1]], dtype=np.int64)
        self.reflow()

    def slice_input(self, positions, zero=None) -> None:
        I = self.step.input_size
        keep = np.isin(np.arange(I), positions)
        z = np.zeros(I, bool)
        if zero is not None and np.any(zero):
            z[np.asarray(positions)[np.asarray(zero, bool)]] = True
        self.flow.slice(np.ones(self.hidden_size, bool), keep, zero_input=z)
        self.reflow()

    def mask_states(self, graph, masks, prefix, source) -> None:
        """Units outside step t's row of ``masks[0]`` (``[T_max, units]``, sliced to the input's length)
        removed at step t: 0 wherever the step reads them through a weight, and in its new states and
        output — what the step computes with those units sliced out (with a constant mask: exactly the
        physically sliced model). Each distinct arrangement of units the step multiplies is gathered
        from the table once, outside the Scan, and scanned in as one more input."""
        M = np.asarray(masks[0], dtype=np.float32)
        U, p = M.shape[1], prefix
        shape, steps = gs.Variable(f"{p}/x_shape", dtype=np.int64), gs.Variable(f"{p}/steps", dtype=np.int64)
        mask_b, mask = gs.Variable(f"{p}/mask_bool", dtype=np.bool_), gs.Variable(f"{p}/mask", dtype=np.float32)
        table = np.concatenate([M, np.ones((M.shape[0], 1), np.float32)], axis=1) > 0.5  # [T_max, U + 1], 1 byte each
        graph.nodes += [
            gs.Node("Shape", f"{p}/shape", inputs=[self.x], outputs=[shape]),
            gs.Node("Slice", f"{p}/steps", inputs=[shape, gs.Constant(f"{p}/c0", np.array([0])),
                                                   gs.Constant(f"{p}/c1", np.array([1]))], outputs=[steps]),
            gs.Node("Slice", f"{p}/mask", inputs=[gs.Constant(f"{p}/masks", table),
                                                  gs.Constant(f"{p}/m0", np.array([0])),
                                                  steps, gs.Constant(f"{p}/ax", np.array([0]))], outputs=[mask_b]),
            gs.Node("Cast", f"{p}/mask_float", attrs={"to": onnx.TensorProto.FLOAT}, inputs=[mask_b], outputs=[mask]),
        ]

        def feed(j, idx):  # [T, W] gathered outside, one row a step inside
            outer, inner = gs.Variable(f"{p}/masks_{j}", dtype=np.float32), gs.Variable(f"{p}/m_{j}", np.float32)
            graph.nodes.append(gs.Node("Gather", f"{p}/masks_{j}", attrs={"axis": 1}, outputs=[outer],
                                       inputs=[mask, gs.Constant(f"{p}/lab_{j}", idx)]))
            self.scan.inputs.append(outer)
            self.scan.attrs["num_scan_inputs"] = int(self.scan.attrs["num_scan_inputs"]) + 1
            self.scan.attrs["body"].inputs.append(inner)
            return inner

        self._hold_at_zero(feed, U, p)

    def why_not_silenced(self):
        return None

    def silence_groups(self, graph, code, keeps, prefix) -> None:
        """Each row's group mask (``code @ keeps``) gathered once, outside the Scan, for each distinct
        arrangement of units the step multiplies, and carried through it as a state that never
        changes; the step multiplies it in wherever it reads a unit and into its new states."""
        p, K = prefix, self.step.n_states
        body = self.scan.attrs["body"]
        M = np.concatenate([np.stack([np.asarray(k, np.float32) for k in keeps]),
                            np.ones((len(keeps), 1), np.float32)], axis=1)  # [K, U + 1]: positions no unit take 1
        rows = gs.Variable(f"{p}/row_masks", dtype=np.float32)
        graph.nodes.append(gs.Node("MatMul", f"{p}/row_masks", inputs=[code, gs.Constant(f"{p}/keeps", M)],
                                   outputs=[rows]))
        carried = [0]

        def feed(j, idx):  # [K*B, W], the same at every step
            outer, inner = gs.Variable(f"{p}/rows_{j}", dtype=np.float32), gs.Variable(f"{p}/m_{j}", np.float32)
            out, last = gs.Variable(f"{p}/m_{j}_next", np.float32), gs.Variable(f"{p}/rows_{j}_last", np.float32)
            graph.nodes.append(gs.Node("Gather", f"{p}/rows_{j}", attrs={"axis": 1}, outputs=[outer],
                                       inputs=[rows, gs.Constant(f"{p}/lab_{j}", idx)]))
            body.nodes.append(gs.Node("Identity", f"{p}/carry_{j}", inputs=[inner], outputs=[out]))
            at = K + carried[0]
            carried[0] += 1
            body.inputs.insert(at, inner)
            body.outputs.insert(at, out)
            self.scan.inputs.insert(at, outer)
            self.scan.outputs.insert(at, last)
            return inner

        self._hold_at_zero(feed, self.hidden_size, p)

    def _hold_at_zero(self, feed, U: int, p: str) -> None:
        """Multiply a unit mask into every tensor the step reads a unit through a weight from, and into
        its new states and output. ``feed(j, indices)`` makes the body tensor of mask ``j``: the unit
        masks (a last entry 1 for positions that are no unit) at ``indices``."""
        body = self.scan.attrs["body"]
        made: dict[bytes, object] = {}
        K = self.step.n_states  # read before feed adds inputs
        labels = [self.flow.state_labels(k) for k in range(K)] + [self.flow.labels(self.step.y)]
        own = list(self.step.new_states) + [self.step.y]  # (feed may insert carried masks among the outputs)

        def masked(t, lab, tag):
            idx = np.where(lab >= 0, lab, U).astype(np.int64)
            key = idx.tobytes()
            if key not in made:
                made[key] = feed(len(made), idx)
            out = gs.Variable(f"{p}/masked_{tag}", dtype=np.float32)
            body.nodes.append(gs.Node("Mul", f"{p}/apply_{tag}", inputs=[t, made[key]], outputs=[out]))
            return out

        reads = [(node, node.inputs[0], self.flow.labels(node.inputs[0])) for node in list(body.nodes)
                 if node.op in ("MatMul", "Gemm") and id(node.inputs[0]) in self.flow.pos]
        for i, (node, t, lab) in enumerate(reads):
            if (lab >= 0).any():
                node.inputs[0] = masked(t, lab, f"read_{i}")
        swap = {id(o): masked(o, lab, f"out_{i}") for i, (o, lab) in enumerate(zip(own, labels))}
        body.outputs = [swap.get(id(o), o) for o in body.outputs]
        body.toposort()


# ---- building the Scan ----------------------------------------------------------------------
def _emit_units(step: Step, flow: CellFlow) -> np.ndarray:
    """Make the step's output every unit, in unit order (what tracing reads): the units it does not
    emit are appended, from the states' new values. Returns the unit of each position of what it
    emitted before, which the model reads (a prefix of the new output)."""
    read = flow.labels(step.y)
    U = flow.units
    if np.array_equal(read, np.arange(U)):
        return read
    g = step.graph
    y_node = step.y.inputs[0]
    parts = [y_node.inputs[0]]
    for k in range(step.n_states):
        idx = [i for _, kk, i in flow.extra_units() if kk == k]
        if idx:
            t = gs.Variable(f"{step.name}/extra{k}", dtype=np.float32)
            g.nodes.append(gs.Node("Gather", f"{step.name}/extra{k}", attrs={"axis": 1}, outputs=[t], inputs=[
                step.new_states[k].inputs[0].inputs[0],
                gs.Constant(f"{step.name}/extra{k}_idx", np.array(idx, np.int64))]))
            parts.append(t)
    out = gs.Variable(f"{step.name}/y_every_unit", dtype=np.float32)
    g.nodes.append(gs.Node("Concat", f"{step.name}/y_every_unit", attrs={"axis": 1}, inputs=parts, outputs=[out]))
    y_node.inputs[0] = out
    g.toposort()
    return read


@dataclass(eq=False)
class CellOutputs:
    """Where the model reads a general cell: ``steps`` (tensors ``[T, N, W]`` or ``[N, T, W]`` of every
    step's output: (tensor, time axis)) and ``finals`` (per state, the tensor the model reads its final
    value from, or None)."""

    steps: list = field(default_factory=list)
    finals: list = field(default_factory=list)


def build(graph: gs.Graph, name: str, step: Step, X_tm, form: Form, index: int, outs: CellOutputs,
          watch=()) -> CellRecurrence:
    """Replace the model's cell by ``Scan`` over ``X_tm`` (``[T, N, I]``), read where ``outs`` says;
    ``watch``: the model's own tensors of the cell's states (``Recurrence.watch``)."""
    p = f"{name}/cell"
    K = step.n_states
    zero = gs.Variable(f"{p}/zero_state", dtype=np.float32)
    graph.nodes.append(gs.Node("ConstantOfShape", f"{p}/zero_state", inputs=[gs.Constant(f"{p}/zero_shape",
                                                                                     np.array([1, 1], np.int64))],
                               attrs={"value": gs.Constant(f"{p}/zero", np.zeros(1, np.float32))}, outputs=[zero]))
    finals = [gs.Variable(f"{p}/state{k}_last", dtype=np.float32) for k in range(K)]
    Y_tm = gs.Variable(f"{p}/Y_steps", dtype=np.float32)
    scan = gs.Node("Scan", f"{p}/scan", attrs={"body": step.graph, "num_scan_inputs": 1},
                   inputs=[zero] * K + [X_tm], outputs=[*finals, Y_tm])
    graph.nodes.append(scan)
    for t, axis in outs.steps:
        graph.nodes.append(gs.Node("Transpose", f"{t.name}/cell", attrs={"perm": [0, 1, 2] if axis == 0 else [1, 0, 2]},
                                   inputs=[Y_tm], outputs=[t]))
        t.dtype, t.shape = np.float32, None
    for k, t in enumerate(outs.finals):
        if t is not None:
            graph.nodes.append(gs.Node("Identity", f"{t.name}/cell", inputs=[finals[k]], outputs=[t]))
    rec = canonical(graph, scan, form, index)
    rec.watch = list(watch)
    for t, axis in outs.steps:
        t.shape = ["T", "N", rec.emitted] if axis == 0 else ["N", "T", rec.emitted]
    return rec


def canonical(graph: gs.Graph, scan: gs.Node, form: Form, index: int, built: bool = False) -> CellRecurrence:
    """A forward ``Scan`` over one time-major input whose body is a cell, in the form the pipeline
    works on: zero initial states of the batch's size (``ConstantOfShape``, widths in constants the
    slicing updates), a body that emits every unit, ``[1, N, U]`` a step, so that the Scan's per-step
    output is ``Y`` ``[T, 1, N, U]``, read through a Squeeze. ``built``: the Scan is one this function
    made before (a graph recognized again), already in that form. Raises ``StepError`` when the body
    cannot be followed."""
    body = scan.attrs["body"]
    K = len(scan.inputs) - 1
    name = scan.name
    step = Step(body, name)
    flow = CellFlow(step)
    read = _emit_units(step, flow)
    emitted = len(read)
    p = name.removesuffix("/scan")
    X_tm = scan.inputs[K]
    inits, widths_at = list(scan.inputs[:K]), []
    batch = None
    for k, init in enumerate(inits):
        w = step.widths[k]
        if built:  # ConstantOfShape(Concat(batch, width)): the width is the Concat's constant
            widths_at.append(init.inputs[0].inputs[0].inputs[0].inputs[1])
            continue
        if not _is_zero(init):
            raise StepError(scan, f"its initial state {k} is not provably zero")
        if batch is None:
            shape, batch = gs.Variable(f"{p}/x_shape", dtype=np.int64), gs.Variable(f"{p}/batch", dtype=np.int64)
            graph.nodes += [gs.Node("Shape", f"{p}/shape", inputs=[X_tm], outputs=[shape]),
                            gs.Node("Slice", f"{p}/batch", inputs=[shape, gs.Constant(f"{p}/b0", np.array([1])),
                                                                   gs.Constant(f"{p}/b1", np.array([2]))],
                                    outputs=[batch])]
        dims, new = gs.Variable(f"{p}/state{k}_shape", dtype=np.int64), gs.Variable(f"{p}/state{k}_0", dtype=np.float32)
        wc = gs.Constant(f"{p}/state{k}_width", np.array([w], dtype=np.int64))
        graph.nodes += [gs.Node("Concat", f"{p}/state{k}_shape", attrs={"axis": 0}, inputs=[batch, wc], outputs=[dims]),
                        gs.Node("ConstantOfShape", f"{p}/state{k}_0", attrs={
                            "value": gs.Constant(f"{p}/zero{k}", np.zeros(1, np.float32))},
                                inputs=[dims], outputs=[new])]
        scan.inputs[k] = new
        widths_at.append(wc)
    if not built:
        # the body emits [1, N, U] a step: the Scan's own output is Y [T, 1, N, U] (a native op's layout),
        # which lives as long as the Scan does, whoever reads it
        y1 = gs.Variable(f"{p}/y_t_1NU", dtype=np.float32)
        body.nodes.append(gs.Node("Unsqueeze", f"{p}/y_t_1NU", outputs=[y1], inputs=[
            body.outputs[K], gs.Constant(f"{p}/y_t_axis0", np.array([0], dtype=np.int64))]))
        body.outputs[K] = y1
        Y_tm = scan.outputs[K]
        readers = list(Y_tm.outputs)
        y, steps = gs.Variable(f"{p}/Y", dtype=np.float32), gs.Variable(f"{p}/steps", dtype=np.float32)
        scan.outputs[K] = y
        graph.nodes.append(gs.Node("Squeeze", f"{p}/steps", inputs=[y, gs.Constant(f"{p}/axis1", np.array([1]))],
                                   outputs=[steps]))
        reading = steps  # the model reads what the cell emitted: the first positions (the others are traced only)
        if emitted < flow.units:
            reading = gs.Variable(f"{p}/emitted", dtype=np.float32)
            graph.nodes.append(gs.Node("Slice", f"{p}/emitted", inputs=[
                steps, gs.Constant(f"{p}/e0", np.array([0])), gs.Constant(f"{p}/e1", np.array([emitted])),
                gs.Constant(f"{p}/e2", np.array([2]))], outputs=[reading]))
        for r in readers:
            r.inputs = [reading if t is Y_tm else t for t in r.inputs]
        if Y_tm in graph.outputs:
            graph.outputs = [reading if t is Y_tm else t for t in graph.outputs]
        body.toposort()
    else:
        y = scan.outputs[K]
    for t in body.tensors().values():  # the body changed: its tensors' shapes are inferred again
        if isinstance(t, gs.Variable) and t not in body.inputs:
            t.shape = None
    finals = [t if (t.outputs or t in graph.outputs) else None for t in scan.outputs[:K]]
    graph.cleanup().toposort()
    return CellRecurrence(index, name, scan, y, form, widths_at, finals, emitted)


def miss(frontend: str, name: str, op: str, why) -> NoMatch:
    """A general cell's refusal of ``name`` (``why``: a ``StepError`` or a sentence)."""
    return NoMatch(frontend, name, op, f"as a general cell, {why}", final=True)


def detach(node: gs.Node) -> None:
    """Take ``node`` out of the graph, with every node of its subgraphs (which read outer tensors:
    left attached, they would still count as those tensors' readers)."""
    for v in node.attrs.values():
        if isinstance(v, gs.Graph):
            for n in v.nodes:
                detach(n)
    node.inputs.clear()
    node.outputs.clear()
