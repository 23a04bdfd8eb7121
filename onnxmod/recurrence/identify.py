"""Identifying a cell a native op computes from a step read as affine forms (``affine.py``).

A vanilla RNN is ``h' = act(x A + h B + c)``; a GRU two gates (sigmoid-like, on forms) and a
candidate ``act(x W + r * (h U + c))`` (``linear_before_reset``) or ``act(x W + (r * h) U + c)`` (not),
blended with h; an LSTM carries h and c with ``c' = f c + i g`` and ``h' = o act(c')``. What is
identified is a ``NativeCell`` (the native op's weights in its layout, one direction); anything
else a ``NoCell`` saying what it is not. The identification reads the forms only: a caller checks
the cell against the step's own numbers (``check.py``) before it lifts it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .affine import Act, FormReader, Lin, Opaque, State


@dataclass(frozen=True, eq=False)
class NativeCell:
    """What a native ``op_type`` computes for one direction: ``W`` ``[1, G*H, I]``, ``R`` ``[1, G*H, H]``,
    ``B`` ``[1, 2*G*H]`` and the op's attributes (activations, linear_before_reset, ...)."""

    op_type: str
    W: np.ndarray
    R: np.ndarray
    B: np.ndarray
    attrs: dict = field(default_factory=dict)

    def same_as(self, other: NativeCell) -> bool:
        """The same op, attributes and weights (bit for bit)."""
        return (self.op_type == other.op_type and self.attrs == other.attrs
                and all(np.array_equal(a, b) for a, b in ((self.W, other.W), (self.R, other.R), (self.B, other.B))))


@dataclass(frozen=True)
class NoCell:
    """Why a step is none of the cells a native op computes (one clause)."""

    reason: str

    def __bool__(self) -> bool:
        return False


def _alpha_beta(acts: list[Act]) -> dict:
    alphas = [a.alpha for a in acts if a.alpha is not None]
    betas = [a.beta for a in acts if a.beta is not None]
    return {**({"activation_alpha": alphas} if alphas else {}), **({"activation_beta": betas} if betas else {})}


def one_state(reader: FormReader, upd, H: int) -> NativeCell | NoCell:
    """A vanilla RNN or GRU cell from ``upd``, the form of the new h."""
    if isinstance(upd, Act):  # vanilla RNN: h' = act(x A + h B + c)
        L = upd.lin
        if L.width != H:
            return NoCell("its state update has the wrong width")
        if H > 1 and not np.any(L.B - np.diag(np.diag(L.B))):
            # an element-wise recurrence (IndRNN): as a native RNN it would store H x H recurrent
            # weights for H; the general cell keeps the vector (and the modules smaller than the model)
            return NoCell("its recurrence is element-wise (IndRNN): a general cell")
        B = np.concatenate([L.c, np.zeros(H)])[None]
        return NativeCell("RNN", L.A.T[None], L.B.T[None], B, {"activations": [upd.name], **_alpha_beta([upd])})
    gates = [v for v in reader.values.values() if isinstance(v, Act) and v.name in ("Sigmoid", "HardSigmoid")]
    if len(gates) >= 2:
        return _gru(reader, gates, H)
    names = sorted({type(v).__name__ if not isinstance(v, Opaque) else v.node.op for v in [upd]})
    return NoCell(f"its state update ({', '.join(names)}) is not a vanilla RNN or GRU cell onnxmod recognizes")


def lstm(upd_h, upd_c, H: int) -> NativeCell | NoCell:
    """c' = f c + i g and h' = o act(c'), gates on forms (ONNX order i, o, f, c)."""
    def mul_of(v):
        return v.args if isinstance(v, Opaque) and v.node.op == "Mul" and len(v.args) == 2 else None

    no = "carries two state vectors but is not an LSTM cell: "
    if not (isinstance(upd_c, Opaque) and upd_c.node.op == "Add"):
        return NoCell(no + "its cell state update is not f * c + i * g")
    f = i = g = None
    for term in upd_c.args:
        pair = mul_of(term)
        if pair is None:
            return NoCell(no + "its cell state update is not f * c + i * g")
        if any(isinstance(a, State) and a.k == 1 for a in pair):
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
        return NoCell(no + "its state updates are not c' = f * c + i * g and h' = o * act(c')")
    if not (f.spec == i.spec == o.spec) or any(a.lin.width != H for a in (f, i, g, o)):
        return NoCell("its LSTM gates use different activations or widths")
    gates = (i, o, f, g)  # ONNX order
    W = np.concatenate([a.lin.A.T for a in gates])[None]
    R = np.concatenate([a.lin.B.T for a in gates])[None]
    B = np.concatenate([np.concatenate([a.lin.c for a in gates]), np.zeros(4 * H)])[None]
    return NativeCell("LSTM", W, R, B, {"activations": [f.name, g.name, hact.node.op], **_alpha_beta([f, g])})


def _gru(reader: FormReader, gates: list[Act], H: int) -> NativeCell | NoCell:
    """Two gates on forms; a candidate act(form_x + r * form_h) (linear_before_reset) or
    act(form_x + (r * h) U + c) (not); z found as the gate that is not r."""
    # the candidate activation: an Opaque Tanh/Relu whose input is Add(Lin_x, Mul(r, Lin_h))
    for v in list(reader.values.values()):
        if not isinstance(v, Opaque) or v.node.op not in ("Tanh", "Relu"):
            continue
        parts = _terms(v.args[0])
        if parts is None:
            continue
        lin_x, (r_act, inner, lbr) = parts
        z_acts = [g for g in gates if g is not r_act and g.lin.width == H]
        if not any(r_act is g for g in gates) or not z_acts or r_act.name != z_acts[0].name:
            continue
        z = z_acts[0]
        W = np.concatenate([z.lin.A.T, r_act.lin.A.T, lin_x.A.T])[None]
        R = np.concatenate([z.lin.B.T, r_act.lin.B.T, inner.B.T])[None]
        Wb = np.concatenate([z.lin.c, r_act.lin.c, lin_x.c])
        Rb = np.concatenate([np.zeros(H), np.zeros(H), inner.c])
        return NativeCell("GRU", W, R, np.concatenate([Wb, Rb])[None],
                          {"activations": [z.name, v.node.op], "linear_before_reset": lbr, **_alpha_beta([z])})
    return NoCell("its body has gates but no GRU candidate act(x W + r * (h U + c)) onnxmod recognizes")


def _terms(pre):
    """``pre`` as (form in x, (r gate, form in h, linear_before_reset)) or None."""
    if not isinstance(pre, Opaque) or pre.node.op != "Add":
        return None
    a, b = pre.args
    for lx, other in ((a, b), (b, a)):
        if not (isinstance(lx, Lin) and lx.only_x):
            continue
        if isinstance(other, Opaque) and other.node.op == "Mul":
            m0, m1 = other.args
            for g, inner in ((m0, m1), (m1, m0)):
                if isinstance(g, Act) and isinstance(inner, Lin) and inner.only_h:
                    return lx, (g, inner, 1)
        hit = _reset_product(other)  # act(x W + (r * h) U + c): linear_before_reset = 0
        if hit is not None:
            return lx, hit
    return None


def _reset_product(v, bias=None):
    """``(r * h) U [+ c]`` as (r, form of h with U and c, 0), else None."""
    if isinstance(v, Opaque) and v.node.op == "Add" and bias is None:
        for a, b in (v.args, v.args[::-1]):
            if isinstance(b, np.ndarray):
                return _reset_product(a, b.reshape(-1))
    if isinstance(v, Opaque) and v.node.op == "MatMul" and isinstance(v.args[1], np.ndarray):
        m = v.args[0]
        if isinstance(m, Opaque) and m.node.op == "Mul":
            for g, h in (m.args, m.args[::-1]):
                if isinstance(g, Act) and isinstance(h, State) and h.k == 0:
                    U = v.args[1]
                    c = np.zeros(U.shape[1]) if bias is None else np.broadcast_to(bias, (U.shape[1],))
                    return g, Lin(np.zeros((0, U.shape[1])), U, c), 0
    return None


def lstm_of_step(step, opset: int | None = None) -> tuple[NativeCell, list[int]] | NoCell:
    """A cut-out step of two states of one width that is an LSTM: (the cell, the step's state that is
    h then the one that is c), checked in numbers against the step (``check.step_gap``); h is the
    state the step emits. Else why not."""
    from .check import TOL, step_gap
    from .tensors import same

    if step.n_states != 2 or len(set(step.widths)) != 1:
        return NoCell("it does not carry two states of one width")
    H = step.widths[0]
    emits = [k for k in range(2) if same(step.new_states[k], step.y)]
    if len(emits) != 1:
        return NoCell("it does not emit one of its two states")
    order = [emits[0], 1 - emits[0]]
    reader = FormReader(step.x, step.input_size, [step.states[k] for k in order], H, {}, opset=opset)
    cell = lstm(reader.value(step.new_states[order[0]]), reader.value(step.new_states[order[1]]), H)
    if isinstance(cell, NoCell):
        return cell
    gap = step_gap(step, cell, order, opset)
    if gap is None or gap > TOL:
        return NoCell("it looks like an LSTM but computes something else" if gap is not None else
                      "its step cannot run on its own")
    return cell, order
