"""Front-end: a known cell inside a ``Loop`` body (tf2onnx's Keras GRU and SimpleRNN, scripted
torch loops; vanilla RNN, GRU or LSTM), lifted into the native op that computes the same thing.

Recognition reads the loop's plumbing, then the cell:

1. **Plumbing.** Loop-carried values are classified: pass-through (loop invariants such as the
   weights tf2onnx threads through), the step counter, sequences of per-step outputs
   (``SequenceInsert``, stacked after the loop by ``ConcatFromSequence``) and the state (h, and c).
   The input step is a ``Gather`` of an outer tensor by the step index (time on axis 0 or 1).
2. **Cell.** The state update is read as affine forms ``x A + h B + c`` (``MatMul`` by constants,
   ``Add``/``Sub`` of constants or forms, ``Mul`` by a scalar, ``Split``/``Slice`` of the last axis)
   joined by activations (``Sigmoid``, ``Tanh``, ``Relu``, ``HardSigmoid``, and ``Min``/``Max`` or
   ``Clip`` to [0, 1], a hard sigmoid written by hand). A vanilla RNN is ``act(form)``; a GRU is two
   gates (sigmoid-like, on forms) and a candidate ``act(form_x + r * form_h)``, blended with h; an
   LSTM carries h and c with ``c' = f c + i g`` and ``h' = o act(c')``.
3. **Check.** The cell's parameters are run through onnxmod's own equations (``onnxmod.cells``) and
   compared with the body itself in onnxruntime on random inputs and states: the lift happens only
   when they agree within 1e-5; otherwise the reason says how far apart they were.

The loop is then replaced by the native op (and Squeeze/Transpose to the loop's output layouts);
the recurrence's ``form`` stays ``loop``. A cell that is none of these (two state vectors that are
not an LSTM's, an element-wise recurrence, any equations) goes to the general cell front-end
(``general.py``): its step is cut out of the body and run as a ``Scan``.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..cells import CellParams, cell_for
from ..cells.backend import Numpy
from .contract import Form, FrontEnd, NoMatch
from .cellflow import CellFlow
from .general import build, detach, miss as general_miss
from .step import StepError, extract
from .native import NativeRecurrence, _is_zero, lifted_op, time_major

TOL = 1e-5


MASK, NOT_MASK = ("mask",), ("not_mask",)


class Lin:
    """``x @ A + h @ B + c`` (columns = the tensor's last axis)."""

    def __init__(self, A, B, c):
        self.A, self.B, self.c = A, B, c

    @property
    def width(self):
        return self.c.shape[-1]

    def cols(self, a, b):
        return Lin(self.A[:, a:b], self.B[:, a:b], self.c[a:b])

    def __add__(self, o):
        if isinstance(o, Lin):
            return Lin(self.A + o.A, self.B + o.B, self.c + o.c)
        return Lin(self.A, self.B, self.c + o)

    def scale(self, s):
        return Lin(self.A * s, self.B * s, self.c * s)

    @property
    def only_x(self):
        return not np.any(self.B)

    @property
    def only_h(self):
        return not np.any(self.A)


class Act:
    """``name(alpha, beta)`` applied to a ``Lin`` (an ONNX recurrent activation)."""

    def __init__(self, name, lin, alpha=None, beta=None):
        self.name, self.lin, self.alpha, self.beta = name, lin, alpha, beta

    @property
    def spec(self):
        return (self.name, self.alpha, self.beta)


class Opaque:
    """Any other value: the node that made it and its operands' values."""

    def __init__(self, node, args):
        self.node, self.args = node, args


def _const(t):
    if isinstance(t, gs.Constant):
        return np.asarray(t.values, dtype=np.float64)
    if t.inputs and t.inputs[0].op == "Constant":
        v = t.inputs[0].attrs.get("value")
        return np.asarray(v.values if isinstance(v, gs.Constant) else v, dtype=np.float64)
    return None


class _Cell:
    """Reads a body's state update as forms and activations (``values[tensor] = Lin | Act | ...``)."""

    def __init__(self, x, I, states, H, consts, mask=None):
        self.I, self.H = I, H
        self.values = {id(x): Lin(np.eye(I), np.zeros((H, I)), np.zeros(I))}
        if mask is not None:  # a per-step mask (1 on real steps): blends are read as ("blend", new, held)
            self.values[id(mask)] = MASK
        for k, s in enumerate(states):
            self.values[id(s)] = ("state", k)
        self.consts = consts  # id(tensor) -> ndarray: loop invariants bound to their outer constants

    def const(self, t):
        v = self.consts.get(id(t))
        return v if v is not None else _const(t)

    def value(self, t, depth=0):
        if id(t) in self.values:
            return self.values[id(t)]
        c = self.const(t)
        if c is not None:
            return c
        if depth > 200 or not t.inputs:
            return None
        node = t.inputs[0]
        v = self._eval(node, t, depth)
        self.values[id(t)] = v
        return v

    @staticmethod
    def _masking(op, args):
        """The mask through Cast/Not, ``mask * v`` / ``(not mask) * v``, and their sum: a blend."""
        def tag(v):
            return v if isinstance(v, tuple) and v and v[0] in ("mask", "not_mask", "masked", "held") else None

        tags = [tag(a) for a in args]
        if op in ("Cast", "Identity") and args and tags[0] in (MASK, NOT_MASK):
            return tags[0]
        if op == "Not" and args and tags[0] in (MASK, NOT_MASK):
            return NOT_MASK if tags[0] == MASK else MASK
        if op == "Mul" and len(args) == 2:
            for a, b in ((0, 1), (1, 0)):
                if tags[a] == MASK:
                    return ("masked", args[b])
                if tags[a] == NOT_MASK:
                    return ("held", args[b])
        if op == "Add" and len(args) == 2 and tags[0] and tags[1] and {tags[0][0], tags[1][0]} == {"masked", "held"}:
            m = tags[0] if tags[0][0] == "masked" else tags[1]
            h = tags[1] if m is tags[0] else tags[0]
            return ("blend", m[1], h[1])
        return None

    def _lin(self, v):
        if isinstance(v, tuple) and v[0] == "state":  # the state itself: h (as a form) — c stays opaque
            if v[1] == 0:
                return Lin(np.zeros((self.I, self.H)), np.eye(self.H), np.zeros(self.H))
            return None
        return v if isinstance(v, Lin) else None

    def _eval(self, node, t, depth):
        op = node.op
        args = [self.value(i, depth + 1) if i.name else None for i in node.inputs]
        if args and all(isinstance(a, np.ndarray) or (a is None and not i.name) for a, i in zip(args, node.inputs)) \
                and not any(isinstance(v, gs.Graph) for v in node.attrs.values()):
            folded = _fold(node, t, node.inputs, args)
            if folded is not None:
                return folded
        masked = self._masking(op, args)
        if masked is not None:
            return masked
        lins = [self._lin(a) for a in args]
        if op in ("Identity", "Dropout") and args:
            return args[0]
        if op == "MatMul" and lins[0] is not None and isinstance(args[1], np.ndarray) and args[1].ndim == 2 \
                and args[1].shape[0] == lins[0].width:
            w = args[1]
            L = lins[0]
            return Lin(L.A @ w, L.B @ w, L.c @ w)
        if op == "Gemm" and lins[0] is not None and isinstance(args[1], np.ndarray):
            if int(node.attrs.get("transA", 0)):
                return Opaque(node, args)
            w = args[1].T if int(node.attrs.get("transB", 0)) else args[1]
            if w.ndim != 2 or w.shape[0] != lins[0].width:
                return Opaque(node, args)
            a, b = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
            L = lins[0]
            out = Lin(L.A @ w * a, L.B @ w * a, L.c @ w * a)
            return out + (b * args[2] if len(args) > 2 and isinstance(args[2], np.ndarray) else 0)
        if op in ("Add", "Sub"):
            sign = 1.0 if op == "Add" else -1.0
            if lins[0] is not None and lins[1] is not None:
                return lins[0] + lins[1].scale(sign)
            if lins[0] is not None and (row := _row(args[1], lins[0].width)) is not None:
                return lins[0] + sign * row
            if lins[1] is not None and (row := _row(args[0], lins[1].width)) is not None:
                return lins[1].scale(sign) + row
        if op == "Mul":  # by a scalar, or by a vector along the last axis (an element-wise recurrence)
            for a, b in ((0, 1), (1, 0)):
                if lins[a] is not None and isinstance(args[b], np.ndarray) and args[b].size in (1, lins[a].width) \
                        and args[b].shape[-1:] in ((1,), (lins[a].width,), ()):
                    return lins[a].scale(np.broadcast_to(args[b].reshape(-1), (lins[a].width,)))
        if op == "Neg" and lins[0] is not None:
            return lins[0].scale(-1.0)
        if op == "Split" and lins[0] is not None:
            axis = int(node.attrs.get("axis", 0))
            if axis not in (-1, 1):
                return Opaque(node, args)
            W = lins[0].width
            sizes = (args[1].astype(int).tolist() if len(args) > 1 and isinstance(args[1], np.ndarray)
                     else node.attrs.get("split") or [W // len(node.outputs)] * len(node.outputs))
            edges = np.cumsum([0, *sizes])
            k = next(i for i, o in enumerate(node.outputs) if o is t)
            return lins[0].cols(int(edges[k]), int(edges[k + 1]))
        if op == "Slice" and lins[0] is not None and all(isinstance(a, np.ndarray) for a in args[1:]):
            shape = node.inputs[0].shape
            rank = len(shape) if shape is not None else 2
            starts, ends = args[1].astype(np.int64).reshape(-1), args[2].astype(np.int64).reshape(-1)
            axes = args[3].astype(int).reshape(-1).tolist() if len(args) > 3 else list(range(len(starts)))
            steps = args[4].astype(np.int64).reshape(-1) if len(args) > 4 else np.ones(len(starts), np.int64)
            last = None
            for a, b, ax, st in zip(starts, ends, axes, steps):
                if ax % rank == rank - 1:
                    last = (int(a), int(min(b, lins[0].width)), int(st))
                elif not (a == 0 and b >= 2 ** 30 and st == 1):  # any other axis must be kept whole
                    return Opaque(node, args)
            if last is None:
                return lins[0]
            a, b, st = last
            if st != 1 or a < 0 or b < 0:
                return Opaque(node, args)
            return lins[0].cols(a, b)
        if op in ("Sigmoid", "Tanh", "Relu") and lins[0] is not None:
            return Act(op, lins[0])
        if op == "HardSigmoid" and lins[0] is not None:
            return Act("HardSigmoid", lins[0], float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5)))
        if op == "Clip" and lins[0] is not None:
            lo = args[1] if len(args) > 1 else None
            hi = args[2] if len(args) > 2 else None
            if isinstance(lo, np.ndarray) and isinstance(hi, np.ndarray) and float(lo) == 0 and float(hi) == 1:
                return Act("HardSigmoid", lins[0], 1.0, 0.0)
        if op in ("Min", "Max") and len(args) == 2:  # clip to [0, 1] written as Min(.., 1) then Max(.., 0)
            bound = 1.0 if op == "Min" else 0.0
            inner = next((a for a in args if not isinstance(a, np.ndarray)), None)
            k = next((a for a in args if isinstance(a, np.ndarray)), None)
            if k is not None and k.size == 1 and float(k.reshape(-1)[0]) == bound:
                if isinstance(inner, Lin):
                    return ("half_clip", op, inner)
                if isinstance(inner, tuple) and inner[0] == "half_clip" and inner[1] != op:
                    return Act("HardSigmoid", inner[2], 1.0, 0.0)
        return Opaque(node, args)


def _row(c, width: int) -> np.ndarray | None:
    """A constant operand as the vector it adds to every row (``[width]``): a scalar, a vector, or any
    tensor whose rows are all that vector (a bias an exporter broadcast over a static batch); else None."""
    if not isinstance(c, np.ndarray):
        return None
    if c.size in (1, width):
        return np.broadcast_to(c.reshape(-1), (width,))
    if c.ndim >= 2 and c.shape[-1] == width:
        rows = c.reshape(-1, width)
        return rows[0] if np.array_equal(rows, np.broadcast_to(rows[0], rows.shape)) else None
    return None


def _fold(node, t, inputs, args):
    """The value of ``t`` when every input of ``node`` is a constant (ONNX's reference evaluator);
    None when it cannot say (the tensor then stays opaque)."""
    from onnx.reference import ReferenceEvaluator

    if node.op in ("ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Pad", "OneHot"):
        want = args[0] if node.op == "ConstantOfShape" else (args[1] if len(args) > 1 else None)
        if want is None or np.prod(np.abs(np.asarray(want, dtype=np.float64)).clip(1, None)) > 2 ** 22:
            return None  # could be a large tensor: left opaque (never folded here)
    names = [f"in{i}" if i_.name else "" for i, i_ in enumerate(inputs)]
    dtypes = [np.asarray(i_.values).dtype if isinstance(i_, gs.Constant) else
              (i_.dtype if i_.dtype is not None else np.float32) for i_ in inputs]
    feeds = {n: np.asarray(a).astype(d) for n, a, d in zip(names, args, dtypes) if n}
    outs = [f"out{i}" for i in range(len(node.outputs))]
    attrs = {k: v for k, v in node.attrs.items()}
    try:
        proto = onnx.helper.make_node(node.op, names, outs, domain=node.domain or "", **{
            k: (v.values if isinstance(v, gs.Constant) else v) for k, v in attrs.items()})
        g = onnx.helper.make_graph([proto], "fold", [onnx.helper.make_tensor_value_info(
            n, onnx.helper.np_dtype_to_tensor_dtype(feeds[n].dtype), feeds[n].shape) for n in names if n],
            [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs])
        m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
        res = ReferenceEvaluator(m).run(None, feeds)
        k = next(i for i, o in enumerate(node.outputs) if o is t)
        return np.asarray(res[k], dtype=np.float64) if np.issubdtype(np.asarray(res[k]).dtype, np.number) else None
    except Exception:  # noqa: BLE001 - an op the evaluator does not know: not folded
        return None


class LoopCells(FrontEnd):
    """``Loop`` nodes: a vanilla RNN, GRU or LSTM cell lifted to the native op, any other cell handed
    to the general cell front-end."""

    name, reads_op = "loop", "Loop"

    # ---- plumbing ---------------------------------------------------------------------------
    def lift(self, graph, loop, index, ctx):
        name = loop.name or f"Loop_{index}"
        body = loop.attrs.get("body")

        def miss(why):
            return NoMatch(self.name, name, "Loop", why)

        if not isinstance(body, gs.Graph):
            return miss("has no body graph")
        n_carried = len(loop.inputs) - 2
        b_in, b_out = body.inputs, body.outputs
        if len(b_in) != n_carried + 2 or len(b_out) < n_carried + 1:
            return miss("its body's inputs and outputs do not match its loop-carried values")
        it_var = b_in[0]
        counters, passes, seqs, states = [], {}, [], []
        for j in range(n_carried):
            vin, vout, init = b_in[2 + j], b_out[1 + j], loop.inputs[2 + j]
            src = vout
            while src.inputs and src.inputs[0].op == "Identity":
                src = src.inputs[0].inputs[0]
            if src is vin:
                passes[id(vin)] = init
            elif (src.inputs and src.inputs[0].op == "Add" and any(x is vin for x in src.inputs[0].inputs)
                  and any((c := _const(x)) is not None and c.size == 1 and float(c.reshape(-1)[0]) == 1
                          for x in src.inputs[0].inputs if x is not vin)):
                counters.append((j, vin))
            elif src.inputs and src.inputs[0].op == "SequenceInsert" and src.inputs[0].inputs[0] is vin:
                seqs.append((j, src.inputs[0].inputs[1]))
            else:
                states.append((j, vin, vout, init))
        step_vars = [it_var] + [v for _, v in counters]
        read = [n for n in body.nodes if n.op == "Gather" and len(n.inputs) == 2
                and any(n.inputs[1] is v for v in step_vars)]
        masks = [n for n in read if n.inputs[0].dtype == np.bool_ or any(
            c.op in ("Not", "Cast") for c in n.outputs[0].outputs)]
        mask_gather = None
        if len(read) > 1 and masks:
            if len(read) != 2 or len(masks) != 1:
                return miss(f"reads {len(read)} tensors by the step index, {len(masks)} of them masks")
            mask_gather = masks[0]
            read = [n for n in read if n is not mask_gather]
        if not states:
            return None  # no state carried from one step to the next: not a recurrence (left to the graph)
        emitted = [v for _, v in seqs] + list(b_out[1 + n_carried:])
        alias = None
        if mask_gather is not None:  # a masked cell (Keras mask_zero) also carries its last output
            outs_ = [st for st in states if any(self._same(t, st[2]) for t in emitted)]
            if len(outs_) == 1 and len(states) > 1:
                alias = outs_[0]
                states = [st for st in states if st is not alias]
        every_state = list(states)
        if len(states) == 2 and any(self._same(t, states[1][2]) for t in emitted):
            states = states[::-1]  # h is the state the loop emits at every step; c the other
        j, h_in, h_out, h_init = states[0]
        c_state = states[1] if len(states) == 2 else None
        if any(not _is_zero(st[3]) for st in states + ([alias] if alias else [])):
            return miss("its initial state is not provably zero")
        consts = {}
        for vid, init in passes.items():
            c = _const(init)
            if c is not None:
                consts[vid] = c
        # the input step: a Gather by the step index of an outer tensor (maybe through a no-op Slice)
        gathers = read
        if len(gathers) != 1:
            return miss(f"reads {len(gathers)} tensors by the step index; a cell reads one input step")
        ga = gathers[0]
        axis = int(ga.attrs.get("axis", 0))
        x_t = ga.outputs[0]
        H = next((t.shape[-1] for t in (h_in, h_init, h_out, loop.outputs[j])
                  if t.shape is not None and len(t.shape) and isinstance(t.shape[-1], (int, np.integer))), None)
        if H is None:
            return miss("the state's width is not known")
        X = ga.inputs[0]
        if X.inputs and X.inputs[0] in body.nodes:
            s = X.inputs[0]
            vals = [_Cell(x_t, 1, [h_in], H, consts).value(i) for i in s.inputs[1:]]
            if s.op != "Slice" or any(not isinstance(v, np.ndarray) for v in vals) or vals[0].reshape(-1)[0] != 0 \
                    or vals[1].reshape(-1)[0] < 2 ** 30 or (len(vals) > 3 and vals[3].reshape(-1)[0] != 1):
                return miss(f"its input step is read from {s.op} {s.name!r} computed inside the body")
            X = s.inputs[0]
        if axis not in (0, 1) or X.shape is None or len(X.shape) != 3 or not isinstance(X.shape[2], int):
            return miss("its input step is not a slice of a [T, N, I] or [N, T, I] tensor with a known I")
        I = int(X.shape[2])

        def general():  # none of the cells a native op computes: the general cell front-end
            if mask_gather is not None:
                return miss("reads a per-step mask and is none of the cells onnxmod lifts (vanilla RNN, GRU, LSTM); "
                            "masked general cells are not supported")
            scan_outs_ = [(k, b_out[1 + n_carried + k]) for k in range(len(b_out) - 1 - n_carried)]
            return _as_general_cell(graph, loop, name, index, X, axis, x_t, every_state, seqs, scan_outs_, n_carried,
                                    self.name)

        if len(states) > 2:
            return general()
        cell_states = [h_in] + ([c_state[1]] if c_state else [])
        if mask_gather is not None and c_state is not None:
            # which of the two is h: the one whose new value the loop also emits as its output
            probe = _Cell(x_t, I, cell_states + ([alias[1]] if alias else []), H, consts, mask=mask_gather.outputs[0])
            a_upd = probe.value(alias[2]) if alias else None
            if a_upd is not None and isinstance(probe.value(c_state[2]), tuple) and \
                    probe.value(c_state[2])[:2] == ("blend", a_upd[1] if isinstance(a_upd, tuple) else None):
                j, h_in, h_out, h_init = c_state
                c_state = states[0]
                cell_states = [h_in, c_state[1]]
        reader = _Cell(x_t, I, cell_states + ([alias[1]] if alias else []), H, consts,
                       mask=None if mask_gather is None else mask_gather.outputs[0])
        upd = reader.value(h_out)
        upd_c = reader.value(c_state[2]) if c_state else None
        if mask_gather is not None:
            got = self._unblend(upd, 0), (self._unblend(upd_c, 1) if c_state else None)
            a_upd = self._unblend(reader.value(alias[2]), len(cell_states)) if alias else got[0]
            if got[0] is None or (c_state and got[1] is None) or a_upd is not got[0]:
                return miss("reads a per-step mask, but its states are not held on masked steps as Keras' mask_zero "
                            "holds them (h' = m h_new + (1 - m) h)")
            upd, upd_c = got
        cell = (self._lstm(reader, upd, upd_c, H) if c_state else self._identify(reader, upd, h_in, H))
        if isinstance(cell, str):
            return general()
        op_type, W, R, Bv, attrs = cell
        known = {t.name: (reader.consts[id(t)] if id(t) in reader.consts else reader.values.get(id(t)))
                 for t in body.tensors().values()}
        known = {k: v for k, v in known.items() if isinstance(v, np.ndarray)}
        gap = self._check(body, x_t, [(h_in, h_out)] + ([(c_state[1], c_state[2])] if c_state else []), known,
                          op_type, W, R, Bv, attrs, I, H, graph.opset,
                          mask=None if mask_gather is None else mask_gather.outputs[0])
        if gap is None or gap > TOL:  # looked like a native cell, but is not one: a general cell
            return general()
        # per-step outputs: a scan output, or a sequence stacked after the loop
        scan_outs = [(k, b_out[1 + n_carried + k]) for k in range(len(b_out) - 1 - n_carried)]
        outs = {"final": loop.outputs[j], "final_c": loop.outputs[c_state[0]] if c_state else None,
                "final_alias": loop.outputs[alias[0]] if alias else None, "stacked": [], "concat": [],
                "mask": None if mask_gather is None else mask_gather.inputs[0]}
        def is_h(t):  # the state h, or (masked cells) the last output, which equals h at every step
            return self._same(t, h_out) or (alias is not None and self._same(t, alias[2]))

        for k, t in scan_outs:
            if is_h(t):
                outs["stacked"].append(loop.outputs[n_carried + k])
            elif loop.outputs[n_carried + k].outputs:  # emits something else: a general cell (or its reason)
                return general()
        for js, val in seqs:
            seq_out = loop.outputs[js]
            if not is_h(val):
                if seq_out.outputs:  # collects something else: a general cell (or its reason)
                    return general()
                continue
            for c in list(seq_out.outputs):
                if c.op != "ConcatFromSequence" or not int(c.attrs.get("new_axis", 0)) \
                        or int(c.attrs.get("axis", 0)) not in (0, 1):
                    return miss(f"its per-step outputs are read by {c.op} {c.name!r}, not stacked by ConcatFromSequence")
                outs["concat"].append(c)
        for k, t in enumerate(loop.outputs):
            used = bool(t.outputs) or t in graph.outputs
            kept = [outs["final"], outs["final_c"], outs["final_alias"], *outs["stacked"]]
            if used and not any(t is o for o in kept) and not any(
                    t is loop.outputs[js] for js, _ in seqs):
                return general()  # reads another loop output after the loop: a general cell (or its reason)
        watch = [t.name for t in outs["stacked"]] + [c.outputs[0].name for c in outs["concat"]]
        for t in (outs["final"], outs["final_c"], outs["final_alias"]):
            if t is not None and (t.outputs or t in graph.outputs):
                watch.append(t.name)
        node = self._replace(graph, loop, name, X, axis, op_type, W, R, Bv, attrs, H, outs)
        return NativeRecurrence(index, node, Form.LOOP, watch)

    @staticmethod
    def _unblend(v, k):
        """``new`` of ``("blend", new, state k)``, else None."""
        if isinstance(v, tuple) and len(v) == 3 and v[0] == "blend" and v[2] == ("state", k):
            return v[1]
        return None

    @staticmethod
    def _same(a, b):
        while a.inputs and a.inputs[0].op == "Identity":
            a = a.inputs[0].inputs[0]
        while b.inputs and b.inputs[0].op == "Identity":
            b = b.inputs[0].inputs[0]
        return a is b

    # ---- the cell ---------------------------------------------------------------------------
    def _identify(self, reader, upd, h_in, H):
        if isinstance(upd, Act):  # vanilla RNN: h' = act(x A + h B + c)
            L = upd.lin
            if L.width != H:
                return "its state update has the wrong width"
            if H > 1 and not np.any(L.B - np.diag(np.diag(L.B))):
                # an element-wise recurrence (IndRNN): as a native RNN it would store H x H recurrent
                # weights for H; the general cell keeps the vector (and the modules smaller than the model)
                return "its recurrence is element-wise (IndRNN): a general cell"
            W, R = L.A.T[None], L.B.T[None]
            B = np.concatenate([L.c, np.zeros(H)])[None]
            return "RNN", W, R, B, {"activations": [upd.name], **self._ab([upd])}
        gates = [v for v in reader.values.values() if isinstance(v, Act) and v.name in ("Sigmoid", "HardSigmoid")]
        if len(gates) >= 2:
            return self._gru(reader, gates, H)
        names = sorted({type(v).__name__ if not isinstance(v, Opaque) else v.node.op for v in [upd]})
        return f"its state update ({', '.join(names)}) is not a vanilla RNN or GRU cell onnxmod recognizes"

    def _lstm(self, reader, upd_h, upd_c, H):
        """c' = f c + i g and h' = o act(c'), gates on forms (ONNX order i, o, f, c)."""
        def mul_of(v):
            return v.args if isinstance(v, Opaque) and v.node.op == "Mul" and len(v.args) == 2 else None

        no = "carries two state vectors but is not an LSTM cell: "
        if not (isinstance(upd_c, Opaque) and upd_c.node.op == "Add"):
            return no + "its cell state update is not f * c + i * g"
        f = i = g = None
        for term in upd_c.args:
            pair = mul_of(term)
            if pair is None:
                return no + "its cell state update is not f * c + i * g"
            if any(isinstance(a, tuple) and a == ("state", 1) for a in pair):
                f = next((a for a in pair if isinstance(a, Act)), None)
            else:
                acts = [a for a in pair if isinstance(a, Act)]
                if len(acts) == 2:
                    i, g = sorted(acts, key=lambda a: a.name not in ("Sigmoid", "HardSigmoid"))
        pair = mul_of(upd_h)
        o = hact = None
        if pair is not None:
            o = next((a for a in pair if isinstance(a, Act)), None)
            hact = next((a for a in pair if isinstance(a, Opaque) and a.node.op in ("Tanh", "Relu", "Sigmoid")
                         and a.args and a.args[0] is upd_c), None)
        if None in (f, i, g, o, hact):
            return no + "its state updates are not c' = f * c + i * g and h' = o * act(c')"
        if not (f.spec == i.spec == o.spec) or any(a.lin.width != H for a in (f, i, g, o)):
            return "its LSTM gates use different activations or widths"
        gates = (i, o, f, g)  # ONNX order
        W = np.concatenate([a.lin.A.T for a in gates])[None]
        R = np.concatenate([a.lin.B.T for a in gates])[None]
        B = np.concatenate([np.concatenate([a.lin.c for a in gates]), np.zeros(4 * H)])[None]
        return "LSTM", W, R, B, {"activations": [f.name, g.name, hact.node.op], **self._ab([f, g])}

    @staticmethod
    def _ab(acts):
        alphas = [a.alpha for a in acts if a.alpha is not None]
        betas = [a.beta for a in acts if a.beta is not None]
        return {**({"activation_alpha": alphas} if alphas else {}), **({"activation_beta": betas} if betas else {})}

    def _gru(self, reader, gates, H):
        """Two gates on forms; a candidate act(form_x + r * form_h) (linear_before_reset) or
        act(form_x + (r * h) U + c) (not); z found as the gate that is not r."""
        # find the candidate activation: an Opaque Tanh/Relu whose input is Add(Lin_x, Mul(r, Lin_h))
        for t_id, v in list(reader.values.items()):
            if not isinstance(v, Opaque) or v.node.op not in ("Tanh", "Relu"):
                continue
            pre = v.args[0]
            parts = self._terms(pre)
            if parts is None:
                continue
            lin_x, gated = parts
            if gated is None:
                continue
            r_act, inner, lbr = gated
            z_acts = [g for g in gates if g is not r_act and g.lin.width == H]
            if r_act not in gates or not z_acts or r_act.name != z_acts[0].name:
                continue
            z = z_acts[0]
            W = np.concatenate([z.lin.A.T, r_act.lin.A.T, lin_x.A.T])[None]
            Rn = inner.B.T
            R = np.concatenate([z.lin.B.T, r_act.lin.B.T, Rn])[None]
            Wb = np.concatenate([z.lin.c, r_act.lin.c, lin_x.c])
            Rb = np.concatenate([np.zeros(H), np.zeros(H), inner.c])
            acts = [z.name, v.node.op]
            extra = self._ab([z])
            return "GRU", W, R, np.concatenate([Wb, Rb])[None], {"activations": acts, "linear_before_reset": lbr,
                                                                    **extra}
        return "its body has gates but no GRU candidate act(x W + r * (h U + c)) onnxmod recognizes"

    def _terms(self, pre):
        """``pre`` as (form in x, (r gate, form in h, linear_before_reset)) or None."""
        if isinstance(pre, Lin):
            return None
        if not isinstance(pre, Opaque) or pre.node.op != "Add":
            return None
        a, b = pre.args
        for lx, other in ((a, b), (b, a)):
            if isinstance(lx, Lin) and lx.only_x and isinstance(other, Opaque) and other.node.op == "Mul":
                m0, m1 = other.args
                for g, inner in ((m0, m1), (m1, m0)):
                    if isinstance(g, Act) and isinstance(inner, Lin) and inner.only_h:
                        return lx, (g, inner, 1)
            if isinstance(lx, Lin) and lx.only_x:  # act(x W + (r * h) U + c): linear_before_reset = 0
                hit = self._reset_product(other)
                if hit is not None:
                    return lx, hit
        return None

    def _reset_product(self, v, bias=None):
        """``(r * h) U [+ c]`` as (r, form of h with U and c, 0), else None."""
        if isinstance(v, Opaque) and v.node.op == "Add" and bias is None:
            for a, b in (v.args, v.args[::-1]):
                if isinstance(b, np.ndarray):
                    return self._reset_product(a, b.reshape(-1))
        if isinstance(v, Opaque) and v.node.op == "MatMul" and isinstance(v.args[1], np.ndarray):
            m = v.args[0]
            if isinstance(m, Opaque) and m.node.op == "Mul":
                for g, h in (m.args, m.args[::-1]):
                    if isinstance(g, Act) and isinstance(h, tuple) and h == ("state", 0):
                        U = v.args[1]
                        c = np.zeros(U.shape[1]) if bias is None else np.broadcast_to(bias, (U.shape[1],))
                        return g, Lin(np.zeros((0, U.shape[1])), U, c), 0
        return None

    def _check(self, body, x_t, states, known, op_type, W, R, Bv, attrs, I, H, opset=17, mask=None):
        """Largest difference between the body (onnxruntime) and onnxmod's cell on random steps:
        every new state (``states``: (state in, state out) pairs, h first). ``known``: the values (by
        tensor name) the cell reader worked out: loop invariants and what the graph computes from
        constants before the loop."""
        from .. import runtime

        g = body.copy()
        tmap = g.tensors()
        xv = tmap[x_t.name]
        ins = [tmap[a.name] for a, _ in states]
        outs_in_body = [tmap[b.name] for _, b in states]
        for n in g.nodes:
            for i, t in enumerate(n.inputs):
                if isinstance(t, gs.Variable) and t.name in known and not t.inputs:
                    v = known[t.name]
                    dt = t.dtype if t.dtype is not None else np.float32
                    n.inputs[i] = gs.Constant(f"{t.name}__bound", np.asarray(v).astype(dt))
        feeds_extra = {}
        for v in [xv] + ([tmap[mask.name]] if mask is not None else []):
            for n in list(v.inputs):
                n.outputs = [gs.Variable(f"{o.name}__unused") if o is v else o for o in n.outputs]
            v.inputs.clear()
        xv.dtype, xv.shape = np.float32, ["P", I]
        if mask is not None:  # every step real: the blend passes the cell's new state through
            mv = tmap[mask.name]
            mv.dtype, mv.shape = np.bool_, ["P", 1]
            feeds_extra[mv.name] = np.ones((64, 1), dtype=bool)
        for v in ins:
            v.dtype, v.shape = np.float32, ["P", H]
        probes = []
        for k, o in enumerate(outs_in_body):
            out = gs.Variable(f"{o.name}__probe{k}", dtype=np.float32)
            g.nodes.append(gs.Node("Identity", f"probe_out{k}", inputs=[o], outputs=[out]))
            probes.append(out)
        g.inputs, g.outputs = [xv, *ins, *[tmap[k] for k in feeds_extra]], probes
        rng = np.random.default_rng(0)
        P = 64
        x = rng.normal(0, 1, (P, I)).astype(np.float32)
        st = [rng.uniform(-1, 1, (P, H)).astype(np.float32) for _ in states]
        try:
            g.cleanup().toposort()
            m = gs.export_onnx(g)
            del m.opset_import[:]
            m.opset_import.append(onnx.helper.make_opsetid("", max(int(opset or 17), 13)))
            m.ir_version = 8
            want = runtime.session(m).run(None, {xv.name: x, **{v.name: a for v, a in zip(ins, st)}, **feeds_extra})
        except Exception:  # noqa: BLE001 - a body that cannot run alone is not lifted
            return None
        cell = cell_for(op_type)
        acts = self._resolve(attrs, op_type)
        p = CellParams(R=R[0], Rb=Bv[0][cell.num_gates * H:], acts=acts,
                       linear_before_reset=bool(attrs.get("linear_before_reset", 0)))
        xp = x.astype(np.float64) @ W[0].T + Bv[0][:cell.num_gates * H]
        new, _ = cell.step(Numpy(), xp, {k: a.astype(np.float64) for k, a in zip(cell.states, st)}, p)
        return max(float(np.abs(new[k] - w).max()) for k, w in zip(cell.states, want))

    @staticmethod
    def _resolve(attrs, op_type):
        from ..cells import activations as act

        return act.resolve(attrs["activations"], attrs.get("activation_alpha", []), attrs.get("activation_beta", []),
                           f"lifted {op_type}")

    # ---- the rewrite ------------------------------------------------------------------------
    @staticmethod
    def _reversed(graph, name, t, axis, out=None):
        """``t`` reversed along ``axis`` (a whole-axis Slice with step -1)."""
        out = out if out is not None else gs.Variable(name, dtype=np.float32)
        graph.nodes.append(gs.Node("Slice", f"{name}/reverse", inputs=[
            t, gs.Constant(f"{name}/start", np.array([-1], dtype=np.int64)),
            gs.Constant(f"{name}/end", np.array([np.iinfo(np.int64).min], dtype=np.int64)), axis,
            gs.Constant(f"{name}/step", np.array([-1], dtype=np.int64))], outputs=[out]))
        return out

    @staticmethod
    def _lengths(graph, p, mask, axis, ax0):
        """Each row's number of real steps, ``[N]`` int32, from the loop's mask (time on ``axis``)."""
        as_int = gs.Variable(f"{p}/mask_int", dtype=np.int32)
        total = gs.Variable(f"{p}/lengths_2d", dtype=np.int32)
        lengths = gs.Variable(f"{p}/lengths", dtype=np.int32)
        graph.nodes += [
            gs.Node("Cast", f"{p}/mask_int", attrs={"to": onnx.TensorProto.INT32}, inputs=[mask], outputs=[as_int]),
            gs.Node("ReduceSum", f"{p}/lengths_2d", attrs={"keepdims": 0}, inputs=[
                as_int, gs.Constant(f"{p}/time_axis", np.array([axis], dtype=np.int64))], outputs=[total]),
            gs.Node("Reshape", f"{p}/lengths", inputs=[total, gs.Constant(f"{p}/flat", np.array([-1], np.int64))],
                    outputs=[lengths]),
        ]
        return lengths

    def _replace(self, graph, loop, name, X, axis, op_type, W, R, Bv, attrs, H, outs):
        p = f"{name}/lifted"
        x = time_major(graph, p, X) if axis == 1 else X
        a = {k: v for k, v in attrs.items() if not k.startswith("_")}
        ax0 = gs.Constant(f"{p}/axis0", np.array([0], dtype=np.int64))
        ax1 = gs.Constant(f"{p}/axis1", np.array([1], dtype=np.int64))
        extra = []
        if outs["mask"] is not None:
            # A masked cell (state held on masked steps) over pre-padded rows reads only each row's last
            # `len` steps: the same as a reverse op over the time-reversed input with sequence_lens =
            # len (it starts at the row's first real step), whose Y reversed back is 0 on the padding,
            # as the masked loop's output is there. Other mask patterns differ: the traced-rows check
            # (verify_forms) compares this with the loop on the model's own data.
            x = self._reversed(graph, f"{p}/x_reversed", x, ax0)
            extra = [self._lengths(graph, p, outs["mask"], axis, ax0)]
            a["direction"] = "reverse"
        native, Y, Yh, Yc = lifted_op(graph, name, op_type, x, W, R, Bv, a, H, extra)
        final, stacked, concat = outs["final"], outs["stacked"], outs["concat"]
        detach(loop)  # its body's nodes read outer tensors: left attached, they would still count as their readers
        graph.nodes.append(gs.Node("Squeeze", f"{p}/final", inputs=[Yh, ax0], outputs=[final]))
        if outs["final_c"] is not None:
            graph.nodes.append(gs.Node("Squeeze", f"{p}/final_c", inputs=[Yc, ax0], outputs=[outs["final_c"]]))
        if outs["final_alias"] is not None:  # the masked loop's last output: its last real state
            graph.nodes.append(gs.Node("Squeeze", f"{p}/final_out", inputs=[Yh, ax0], outputs=[outs["final_alias"]]))
        seq_tm = gs.Variable(f"{p}/steps", dtype=np.float32)  # [T, N, H]
        if outs["mask"] is not None:
            rev = gs.Variable(f"{p}/steps_reversed", dtype=np.float32)
            graph.nodes.append(gs.Node("Squeeze", f"{p}/steps_r", inputs=[Y, ax1], outputs=[rev]))
            self._reversed(graph, f"{p}/steps", rev, ax0, out=seq_tm)
        else:
            graph.nodes.append(gs.Node("Squeeze", f"{p}/steps", inputs=[Y, ax1], outputs=[seq_tm]))
        for t in stacked:
            graph.nodes.append(gs.Node("Identity", f"{t.name}/lifted", inputs=[seq_tm], outputs=[t]))
        for c in concat:
            out = c.outputs[0]
            c.outputs.clear()
            c.inputs.clear()
            perm = [0, 1, 2] if int(c.attrs.get("axis", 0)) == 0 else [1, 0, 2]
            graph.nodes.append(gs.Node("Transpose", f"{out.name}/lifted", attrs={"perm": perm},
                                       inputs=[seq_tm], outputs=[out]))
        graph.cleanup().toposort()
        return native


def _as_general_cell(graph, loop, name: str, index: int, X, axis: int, x_t, states: list, seqs: list,
                     scan_outs: list, n_carried: int, frontend: str = "loop"):
    """The loop as a general cell (``general.py``): its step cut out of the body and run as a Scan.
    ``states``: (loop-carried position j, body input, body output, initial value) per state;
    ``seqs``: (position j, value inserted every step); ``scan_outs``: (k, body scan output)."""
    def no(why):
        return general_miss(frontend, name, "Loop", why)

    I = int(X.shape[2])
    widths = []
    for k, (j, vin, vout, init) in enumerate(states):
        if not _is_zero(init):
            return no(f"its initial state {k} is not provably zero")
        w = next((t.shape[-1] for t in (vin, init, vout, loop.outputs[j]) if t.shape is not None and len(t.shape)
                  and isinstance(t.shape[-1], (int, np.integer))), None)
        if w is None:
            return no(f"the width of its state {k} is not known")
        widths.append(int(w))
    per_step = []  # the per-step value the model reads, and where (the stacked tensors after the loop)
    stacked = []
    for js, val in seqs:
        used = [c for c in loop.outputs[js].outputs]
        if not used:
            continue
        for c in used:
            if c.op != "ConcatFromSequence" or not int(c.attrs.get("new_axis", 0)) \
                    or int(c.attrs.get("axis", 0)) not in (0, 1):
                return no(f"its per-step outputs are read by {c.op} {c.name!r}, not stacked by "
                          f"ConcatFromSequence")
            stacked.append((c, int(c.attrs.get("axis", 0))))
        per_step.append(val)
    for k, t in scan_outs:
        out = loop.outputs[n_carried + k]
        if out.outputs or out in graph.outputs:
            per_step.append(t)
            stacked.append((out, 0))
    if len({id(_identity_source(v)) for v in per_step}) > 1:
        return no("it emits more than one per-step value that the model reads")
    state_js = {j for j, *_ in states}
    seq_js = {js for js, _ in seqs}
    for j in range(n_carried):
        t = loop.outputs[j]
        if (t.outputs or t in graph.outputs) and j not in state_js and j not in seq_js:
            return no(f"its loop output {t.name!r} (neither a state nor a per-step output) is read "
                      f"after the loop")
    # what the cell emits: the per-step value the model reads; else the state whose final value it reads
    read_finals = [st for st in states if loop.outputs[st[0]].outputs or loop.outputs[st[0]] in graph.outputs]
    y_t = per_step[0] if per_step else (read_finals or states)[0][2]
    try:
        step = extract(name, [s[1] for s in states], x_t, [s[2] for s in states], y_t, widths, I)
        CellFlow(step)
    except StepError as exc:
        return general_miss(frontend, name, "Loop", exc)
    outs = {"steps": [], "finals": []}
    for c, ax in stacked:
        t = c.outputs[0] if isinstance(c, gs.Node) else c
        outs["steps"].append((t, 1 if (isinstance(c, gs.Node) and ax == 1) else 0))
    for j, *_ in states:
        t = loop.outputs[j]
        outs["finals"].append(t if (t.outputs or t in graph.outputs) else None)
    for c, _ in stacked:
        if isinstance(c, gs.Node):
            c.outputs.clear()
            c.inputs.clear()
    x_tm = time_major(graph, f"{name}/cell", X) if axis == 1 else X
    detach(loop)
    try:
        return build(graph, name, step, x_tm, Form.LOOP, index, outs,
                     [t.name for t, _ in outs["steps"]] + [t.name for t in outs["finals"] if t is not None])
    except StepError as exc:  # pragma: no cover - the flow was checked before the graph changed
        return general_miss(frontend, name, "Loop", exc)


def _identity_source(t):
    while t.inputs and t.inputs[0].op == "Identity":
        t = t.inputs[0].inputs[0]
    return t
