"""A ``Loop``'s plumbing, read before its cell: which loop-carried values are what, and where the
body reads its input step.

Loop-carried values are classified: pass-through (loop invariants such as the weights tf2onnx
threads through), the step counter, sequences of per-step outputs (``SequenceInsert``, stacked
after the loop by ``ConcatFromSequence``) and the states (h, and c). The input step is a ``Gather``
of an outer tensor by the step index (time on axis 0 or 1, maybe through a no-op ``Slice``); a
masked cell (Keras ``mask_zero``) also gathers a boolean mask by the step index, and carries its
last output as one more state (the *alias* of h: the same value at every real step).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .affine import FormReader
from .contract import NoMatch
from .native import _is_zero
from .tensors import constant, same, through_identity


@dataclass(frozen=True, eq=False)
class Carried:
    """Loop-carried value ``j``: its body input, its body output and its initial value."""

    j: int
    vin: gs.Variable
    vout: gs.Variable
    init: gs.Tensor


@dataclass(eq=False)
class LoopParts:
    """What a ``Loop`` carries and reads, once its plumbing is read."""

    loop: gs.Node
    body: gs.Graph
    name: str
    n_carried: int
    states: list[Carried]  # h first (then c)
    every_state: list[Carried]  # every carried state, in the loop's order (the alias left out)
    seqs: list[tuple[int, gs.Variable]]  # (position, value inserted every step)
    scan_outs: list[tuple[int, gs.Variable]]  # (k, body scan output k)
    consts: dict  # id(body input) -> value: loop invariants bound to outer constants
    gather: gs.Node  # reads the input step
    X: gs.Variable  # the outer tensor read step by step
    axis: int  # its time axis
    I: int
    H: int
    mask_gather: gs.Node | None = None  # reads the per-step mask (a masked cell)
    alias: Carried | None = None  # a masked cell's last output

    @property
    def x_t(self) -> gs.Variable:
        return self.gather.outputs[0]

    @property
    def mask(self):
        """The per-step mask as the body reads it (None: not a masked cell)."""
        return None if self.mask_gather is None else self.mask_gather.outputs[0]

    @property
    def h(self) -> Carried:
        return self.states[0]

    @property
    def c(self) -> Carried | None:
        return self.states[1] if len(self.states) == 2 else None


@dataclass
class _Carries:
    counters: list = field(default_factory=list)
    passes: dict = field(default_factory=dict)
    seqs: list = field(default_factory=list)
    states: list = field(default_factory=list)


def _classify(loop: gs.Node, body: gs.Graph, n_carried: int) -> _Carries:
    out = _Carries()
    for j in range(n_carried):
        vin, vout, init = body.inputs[2 + j], body.outputs[1 + j], loop.inputs[2 + j]
        src = through_identity(vout)
        p = src.inputs[0] if src.inputs else None
        if src is vin:
            out.passes[id(vin)] = init
        elif p is not None and p.op == "Add" and any(x is vin for x in p.inputs) and any(
                (c := constant(x)) is not None and c.size == 1 and float(c.reshape(-1)[0]) == 1
                for x in p.inputs if x is not vin):
            out.counters.append((j, vin))
        elif p is not None and p.op == "SequenceInsert" and p.inputs[0] is vin:
            out.seqs.append((j, p.inputs[1]))
        else:
            out.states.append(Carried(j, vin, vout, init))
    return out


def _step_gathers(body: gs.Graph, step_vars: list):
    """(the Gathers by the step index that read inputs, the one that reads a mask or None), or why not."""
    read = [n for n in body.nodes if n.op == "Gather" and len(n.inputs) == 2
            and any(n.inputs[1] is v for v in step_vars)]
    masks = [n for n in read if n.inputs[0].dtype == np.bool_ or any(
        c.op in ("Not", "Cast") for c in n.outputs[0].outputs)]
    mask_gather = None
    if len(read) > 1 and masks:
        if len(read) != 2 or len(masks) != 1:
            return f"reads {len(read)} tensors by the step index, {len(masks)} of them masks"
        mask_gather = masks[0]
        read = [n for n in read if n is not mask_gather]
    return read, mask_gather


def _order_states(states: list[Carried], emitted: list, masked: bool):
    """(states with h first, every state, the alias): h is the state the loop emits at every step, c
    the other; a masked cell's last output (emitted, and carried as a state of its own) is h's alias."""
    alias = None
    if masked:
        outs = [st for st in states if any(same(t, st.vout) for t in emitted)]
        if len(outs) == 1 and len(states) > 1:
            alias = outs[0]
            states = [st for st in states if st is not alias]
    every = list(states)
    if len(states) == 2 and any(same(t, states[1].vout) for t in emitted):
        states = states[::-1]
    return states, every, alias


def _input(parts_gather: gs.Node, body: gs.Graph, consts: dict, H: int):
    """(X, axis, I) of the input step's Gather (through a whole-tensor Slice inside the body), or why not."""
    axis = int(parts_gather.attrs.get("axis", 0))
    X = parts_gather.inputs[0]
    if X.inputs and X.inputs[0] in body.nodes:
        s = X.inputs[0]
        probe = FormReader(parts_gather.outputs[0], 1, [], H, consts, opset=body.opset)
        vals = [probe.value(i) for i in s.inputs[1:]]
        if s.op != "Slice" or any(not isinstance(v, np.ndarray) for v in vals) or vals[0].reshape(-1)[0] != 0 \
                or vals[1].reshape(-1)[0] < 2 ** 30 or (len(vals) > 3 and vals[3].reshape(-1)[0] != 1):
            return f"its input step is read from {s.op} {s.name!r} computed inside the body"
        X = s.inputs[0]
    if axis not in (0, 1) or X.shape is None or len(X.shape) != 3 or not isinstance(X.shape[2], int):
        return "its input step is not a slice of a [T, N, I] or [N, T, I] tensor with a known I"
    return X, axis, int(X.shape[2])


def read_plumbing(loop: gs.Node, name: str, frontend: str) -> LoopParts | NoMatch | None:
    """The loop's ``LoopParts``; a ``NoMatch`` when its plumbing is not a cell's; None when it carries
    no state from one step to the next (no recurrence: left to the graph)."""
    def miss(why):
        return NoMatch(frontend, name, "Loop", why)

    body = loop.attrs.get("body")
    if not isinstance(body, gs.Graph):
        return miss("has no body graph")
    n_carried = len(loop.inputs) - 2
    if len(body.inputs) != n_carried + 2 or len(body.outputs) < n_carried + 1:
        return miss("its body's inputs and outputs do not match its loop-carried values")
    carries = _classify(loop, body, n_carried)
    got = _step_gathers(body, [body.inputs[0]] + [v for _, v in carries.counters])
    if isinstance(got, str):
        return miss(got)
    read, mask_gather = got
    if not carries.states:
        return None  # no state carried from one step to the next: not a recurrence (left to the graph)
    emitted = [v for _, v in carries.seqs] + list(body.outputs[1 + n_carried:])
    states, every, alias = _order_states(carries.states, emitted, mask_gather is not None)
    if any(not _is_zero(st.init) for st in states + ([alias] if alias else [])):
        return miss("its initial state is not provably zero")
    consts = {vid: c for vid, init in carries.passes.items() if (c := constant(init)) is not None}
    if len(read) != 1:
        return miss(f"reads {len(read)} tensors by the step index; a cell reads one input step")
    h = states[0]
    H = next((t.shape[-1] for t in (h.vin, h.init, h.vout, loop.outputs[h.j])
              if t.shape is not None and len(t.shape) and isinstance(t.shape[-1], (int, np.integer))), None)
    if H is None:
        return miss("the state's width is not known")
    inp = _input(read[0], body, consts, H)
    if isinstance(inp, str):
        return miss(inp)
    X, axis, I = inp
    scan_outs = [(k, body.outputs[1 + n_carried + k]) for k in range(len(body.outputs) - 1 - n_carried)]
    return LoopParts(loop, body, name, n_carried, states, every, carries.seqs, scan_outs, consts, read[0], X, axis,
                     I, int(H), mask_gather, alias)
