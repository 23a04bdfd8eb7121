"""Reading a cell's step as affine forms joined by activations.

Every tensor of a step (a ``Loop`` body, one step of an unrolled chain) that is an affine function
of the input step ``x`` and the state ``h`` is a ``Lin``: ``x A + h B + c`` (columns = the tensor's
last axis), followed through ``MatMul``/``Gemm`` by constants, ``Add``/``Sub`` of forms or constants,
``Mul`` by a scalar or a vector, ``Neg``, and ``Split``/``Slice`` of the last axis. An activation of a
form (``Sigmoid``, ``Tanh``, ``Relu``, ``HardSigmoid``, a clip to [0, 1] written as ``Clip`` or as
``Min``/``Max``) is an ``Act``; anything else an ``Opaque`` that keeps its operands' values, so the
identification (``identify.py``) can read products and sums of activations. A cell that holds its
state on masked steps (Keras ``mask_zero``) is read through the mask: ``m * v`` is ``Masked(v)``,
``(not m) * v`` ``Held(v)`` and their sum a ``Blend``. What a step computes from constants only is
folded by the reference evaluator (``evaluate.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .evaluate import NotEvaluated, evaluate
from .tensors import constant


class Lin:
    """``x @ A + h @ B + c`` (columns = the tensor's last axis)."""

    def __init__(self, A, B, c):
        self.A, self.B, self.c = A, B, c

    @property
    def width(self) -> int:
        return self.c.shape[-1]

    def cols(self, a, b) -> Lin:
        return Lin(self.A[:, a:b], self.B[:, a:b], self.c[a:b])

    def __add__(self, o) -> Lin:
        if isinstance(o, Lin):
            return Lin(self.A + o.A, self.B + o.B, self.c + o.c)
        return Lin(self.A, self.B, self.c + o)

    def scale(self, s) -> Lin:
        return Lin(self.A * s, self.B * s, self.c * s)

    @property
    def only_x(self) -> bool:
        return not np.any(self.B)

    @property
    def only_h(self) -> bool:
        return not np.any(self.A)


class Act:
    """``name(alpha, beta)`` applied to a ``Lin`` (an ONNX recurrent activation)."""

    def __init__(self, name: str, lin: Lin, alpha: float | None = None, beta: float | None = None):
        self.name, self.lin, self.alpha, self.beta = name, lin, alpha, beta

    @property
    def spec(self) -> tuple:
        return (self.name, self.alpha, self.beta)


class Opaque:
    """Any other value: the node that made it and its operands' values."""

    def __init__(self, node: gs.Node, args: list):
        self.node, self.args = node, args


@dataclass(frozen=True)
class State:
    """State ``k`` of the cell as the step reads it (state 0 is h: read as a form)."""

    k: int


@dataclass(frozen=True)
class Mask:
    """The per-step mask (1 on real steps), or its negation."""

    negated: bool = False


@dataclass(frozen=True, eq=False)
class Masked:
    """``mask * value``."""

    value: object


@dataclass(frozen=True, eq=False)
class Held:
    """``(not mask) * value``."""

    value: object


@dataclass(frozen=True, eq=False)
class Blend:
    """``mask * new + (not mask) * held``: a state updated on real steps and held on masked ones."""

    new: object
    held: object


@dataclass(frozen=True, eq=False)
class HalfClip:
    """``Min(lin, 1)`` or ``Max(lin, 0)``: half of a clip to [0, 1] (a hard sigmoid written by hand)."""

    op: str
    lin: Lin


def row(c, width: int) -> np.ndarray | None:
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


def _fold(node: gs.Node, t, args: list, opset: int | None) -> np.ndarray | None:
    """The value of ``t`` (float64) when every input of ``node`` is a constant; None when the reference
    evaluator cannot say (the tensor then stays opaque)."""
    dtypes = [np.asarray(i.values).dtype if isinstance(i, gs.Constant) else
              (i.dtype if i.dtype is not None else np.float32) for i in node.inputs]
    typed = [np.asarray(a).astype(d) if i.name else None for a, d, i in zip(args, dtypes, node.inputs)]
    try:
        res = evaluate(node, typed, opset)
    except NotEvaluated:
        return None
    out = res[next(i for i, o in enumerate(node.outputs) if o is t)]
    return np.asarray(out, dtype=np.float64) if np.issubdtype(out.dtype, np.number) else None


class FormReader:
    """Reads a step's tensors as forms: ``value(t)`` is a ``Lin``, ``Act``, ``Opaque``, a constant
    (``ndarray``, float64), a ``State``, a mask tag, or None (depends on something else)."""

    def __init__(self, x, I: int, states: list, H: int, consts: dict, mask=None, opset: int | None = None):
        self.I, self.H, self.opset = I, H, opset
        self.values: dict[int, object] = {id(x): Lin(np.eye(I), np.zeros((H, I)), np.zeros(I))}
        if mask is not None:  # a per-step mask (1 on real steps): blends are read as Blend(new, held)
            self.values[id(mask)] = Mask()
        for k, s in enumerate(states):
            self.values[id(s)] = State(k)
        self.consts = consts  # id(tensor) -> ndarray: loop invariants bound to their outer constants

    def const(self, t) -> np.ndarray | None:
        v = self.consts.get(id(t))
        return v if v is not None else constant(t)

    def value(self, t, depth: int = 0):
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

    def lin(self, v) -> Lin | None:
        """``v`` as a form: a form, or h (state 0) itself; else None (c stays opaque)."""
        if isinstance(v, State):
            return Lin(np.zeros((self.I, self.H)), np.eye(self.H), np.zeros(self.H)) if v.k == 0 else None
        return v if isinstance(v, Lin) else None

    def _eval(self, node: gs.Node, t, depth: int):
        args = [self.value(i, depth + 1) if i.name else None for i in node.inputs]
        if args and all(isinstance(a, np.ndarray) or (a is None and not i.name) for a, i in zip(args, node.inputs)) \
                and not any(isinstance(v, gs.Graph) for v in node.attrs.values()):
            folded = _fold(node, t, args, self.opset)
            if folded is not None:
                return folded
        masked = _masking(node.op, args)
        if masked is not None:
            return masked
        lins = [self.lin(a) for a in args]
        if node.op in ("Identity", "Dropout") and args:
            return args[0]
        rule = _RULES.get(node.op)
        out = rule(node, t, args, lins) if rule is not None else None
        return out if out is not None else Opaque(node, args)


def _masking(op: str, args: list):
    """The mask through Cast/Not, ``mask * v`` / ``(not mask) * v``, and their sum: a blend."""
    if op in ("Cast", "Identity") and args and isinstance(args[0], Mask):
        return args[0]
    if op == "Not" and args and isinstance(args[0], Mask):
        return Mask(not args[0].negated)
    if op == "Mul" and len(args) == 2:
        for a, b in ((0, 1), (1, 0)):
            if isinstance(args[a], Mask):
                return Held(args[b]) if args[a].negated else Masked(args[b])
    if op == "Add" and len(args) == 2:
        kinds = {type(a) for a in args}
        if kinds == {Masked, Held}:
            m = next(a for a in args if isinstance(a, Masked))
            h = next(a for a in args if isinstance(a, Held))
            return Blend(m.value, h.value)
    return None


# ---- one rule per op: the form of its output, or None (opaque) ----------------------------------
def _matmul(node, t, args, lins):
    L, w = lins[0], args[1]
    if L is not None and isinstance(w, np.ndarray) and w.ndim == 2 and w.shape[0] == L.width:
        return Lin(L.A @ w, L.B @ w, L.c @ w)
    return None


def _gemm(node, t, args, lins):
    L, w = lins[0], args[1]
    if L is None or not isinstance(w, np.ndarray) or int(node.attrs.get("transA", 0)):
        return None
    w = w.T if int(node.attrs.get("transB", 0)) else w
    if w.ndim != 2 or w.shape[0] != L.width:
        return None
    a, b = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    out = Lin(L.A @ w * a, L.B @ w * a, L.c @ w * a)
    return out + (b * args[2] if len(args) > 2 and isinstance(args[2], np.ndarray) else 0)


def _add(node, t, args, lins):
    sign = 1.0 if node.op == "Add" else -1.0
    if lins[0] is not None and lins[1] is not None:
        return lins[0] + lins[1].scale(sign) if lins[0].width == lins[1].width else None
    if lins[0] is not None and (r := row(args[1], lins[0].width)) is not None:
        return lins[0] + sign * r
    if lins[1] is not None and (r := row(args[0], lins[1].width)) is not None:
        return lins[1].scale(sign) + r
    return None


def _mul(node, t, args, lins):
    """By a scalar, or by a vector along the last axis (an element-wise recurrence)."""
    for a, b in ((0, 1), (1, 0)):
        if lins[a] is not None and isinstance(args[b], np.ndarray) and args[b].size in (1, lins[a].width) \
                and args[b].shape[-1:] in ((1,), (lins[a].width,), ()):
            return lins[a].scale(np.broadcast_to(args[b].reshape(-1), (lins[a].width,)))
    return None


def _neg(node, t, args, lins):
    return lins[0].scale(-1.0) if lins[0] is not None else None


def _split(node, t, args, lins):
    L = lins[0]
    if L is None or int(node.attrs.get("axis", 0)) not in (-1, 1):
        return None
    sizes = (args[1].astype(int).tolist() if len(args) > 1 and isinstance(args[1], np.ndarray)
             else node.attrs.get("split") or [L.width // len(node.outputs)] * len(node.outputs))
    edges = np.cumsum([0, *sizes])
    k = next(i for i, o in enumerate(node.outputs) if o is t)
    return L.cols(int(edges[k]), int(edges[k + 1]))


def _slice(node, t, args, lins):
    L = lins[0]
    if L is None or not all(isinstance(a, np.ndarray) for a in args[1:]):
        return None
    shape = node.inputs[0].shape
    rank = len(shape) if shape is not None else 2
    starts, ends = args[1].astype(np.int64).reshape(-1), args[2].astype(np.int64).reshape(-1)
    axes = args[3].astype(int).reshape(-1).tolist() if len(args) > 3 else list(range(len(starts)))
    steps = args[4].astype(np.int64).reshape(-1) if len(args) > 4 else np.ones(len(starts), np.int64)
    last = None
    for a, b, ax, st in zip(starts, ends, axes, steps):
        if ax % rank == rank - 1:
            last = (int(a), int(min(b, L.width)), int(st))
        elif not (a == 0 and b >= 2 ** 30 and st == 1):  # any other axis must be kept whole
            return None
    if last is None:
        return L
    a, b, st = last
    return None if st != 1 or a < 0 or b < 0 else L.cols(a, b)


def _activation(node, t, args, lins):
    return Act(node.op, lins[0]) if lins[0] is not None else None


def _hard_sigmoid(node, t, args, lins):
    if lins[0] is None:
        return None
    return Act("HardSigmoid", lins[0], float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5)))


def _clip(node, t, args, lins):
    lo = args[1] if len(args) > 1 else None
    hi = args[2] if len(args) > 2 else None
    if lins[0] is not None and isinstance(lo, np.ndarray) and isinstance(hi, np.ndarray) \
            and float(lo) == 0 and float(hi) == 1:
        return Act("HardSigmoid", lins[0], 1.0, 0.0)
    return None


def _min_max(node, t, args, lins):
    """A clip to [0, 1] written as ``Min(.., 1)`` then ``Max(.., 0)`` (either order)."""
    if len(args) != 2:
        return None
    bound = 1.0 if node.op == "Min" else 0.0
    inner = next((a for a in args if not isinstance(a, np.ndarray)), None)
    k = next((a for a in args if isinstance(a, np.ndarray)), None)
    if k is None or k.size != 1 or float(k.reshape(-1)[0]) != bound:
        return None
    if isinstance(inner, Lin):
        return HalfClip(node.op, inner)
    if isinstance(inner, HalfClip) and inner.op != node.op:
        return Act("HardSigmoid", inner.lin, 1.0, 0.0)
    return None


_RULES = {"MatMul": _matmul, "Gemm": _gemm, "Add": _add, "Sub": _add, "Mul": _mul, "Neg": _neg, "Split": _split,
          "Slice": _slice, "Sigmoid": _activation, "Tanh": _activation, "Relu": _activation,
          "HardSigmoid": _hard_sigmoid, "Clip": _clip, "Min": _min_max, "Max": _min_max}
