"""Front-end: a known cell inside a ``Loop`` body (tf2onnx's Keras GRU and SimpleRNN, scripted
torch loops; vanilla RNN, GRU or LSTM), lifted into the native op that computes the same thing.

Recognition goes in four pieces, each its own module:

1. **Plumbing** (``loop_plumbing.py``): what each loop-carried value is (loop invariants, the step
   counter, sequences of per-step outputs, the states h and c) and where the body reads its input
   step (and, for a masked cell, its mask).
2. **Forms** (``affine.py``): the state updates read as affine forms ``x A + h B + c`` joined by
   activations.
3. **Cell** (``identify.py``): a vanilla RNN, GRU or LSTM identified from the forms (a ``NativeCell``),
   or why not (a ``NoCell``).
4. **Check** (``check.py``): the body run in onnxruntime on random inputs and states against onnxmod's
   own equations of the cell; the lift happens only when they agree within ``TOL``.

The loop is then replaced by the native op (``loop_rewrite.py``); the recurrence's ``form`` stays
``loop``. A cell that is none of these (two state vectors that are not an LSTM's, an element-wise
recurrence, any equations) goes to the general cell front-end (``loop_general.py``): its step is
cut out of the body and run as a ``Scan``.
"""
from __future__ import annotations

import numpy as np

from .affine import Blend, FormReader, State
from .check import TOL, body_gap
from .contract import Form, FrontEnd, NoMatch
from .identify import NativeCell, NoCell, lstm, one_state
from .loop_general import as_general_cell
from .loop_plumbing import LoopParts, read_plumbing
from .loop_rewrite import LoopOutputs, replace
from .native import NativeRecurrence
from .tensors import same


class LoopCells(FrontEnd):
    """``Loop`` nodes: a vanilla RNN, GRU or LSTM cell lifted to the native op, any other cell handed
    to the general cell front-end."""

    name, reads_op = "loop", "Loop"

    def lift(self, graph, loop, index, ctx):
        name = loop.name or f"Loop_{index}"
        parts = read_plumbing(loop, name, self.name)
        if not isinstance(parts, LoopParts):
            return parts  # no recurrence (None), or why its plumbing is no cell's
        if len(parts.states) > 2:
            return self._general(graph, parts, index)
        cell, reader = identify_loop_cell(parts)
        if isinstance(cell, NoMatch):
            return cell
        if isinstance(cell, NoCell):
            return self._general(graph, parts, index)
        known = _known_values(parts.body, reader)
        states = [(parts.h.vin, parts.h.vout)] + ([(parts.c.vin, parts.c.vout)] if parts.c else [])
        gap = body_gap(parts.body, parts.x_t, states, known, cell, parts.I, parts.H, graph.opset, mask=parts.mask)
        if gap is None or gap > TOL:  # looked like a native cell, but is not one: a general cell
            return self._general(graph, parts, index)
        outs = loop_outputs(graph, parts)
        if outs is None:  # reads another value of the loop after it: a general cell (or its reason)
            return self._general(graph, parts, index)
        if isinstance(outs, str):
            return NoMatch(self.name, name, "Loop", outs)
        watch = outs.watched(graph)
        node = replace(graph, parts, cell, outs)
        left = graph.tensors()  # a masked output's last step now reads the final state: its stack may be gone
        watch = [w for w in watch if w in left] + [t.name for t in outs.last_steps]
        return NativeRecurrence(index, node, Form.LOOP, watch)

    def _general(self, graph, parts: LoopParts, index: int):
        """None of the cells a native op computes: the general cell front-end."""
        if parts.mask_gather is not None:
            return NoMatch(self.name, parts.name, "Loop", "reads a per-step mask and is none of the cells onnxmod "
                                                          "lifts (vanilla RNN, GRU, LSTM); masked general cells are "
                                                          "not supported")
        return as_general_cell(graph, parts, index, self.name)


def _held_state(v, k: int):
    """``new`` of ``Blend(new, state k)`` (a state held on masked steps), else None."""
    if isinstance(v, Blend) and isinstance(v.held, State) and v.held.k == k:
        return v.new
    return None


def _h_and_c(parts: LoopParts) -> None:
    """A masked LSTM's two states told apart: h is the one whose new value the loop also emits as its
    last output (the alias). Swaps ``parts.states`` when the plumbing had them the other way round."""
    if parts.mask_gather is None or parts.c is None or parts.alias is None:
        return
    cell_states = [parts.h.vin, parts.c.vin, parts.alias.vin]
    probe = FormReader(parts.x_t, parts.I, cell_states, parts.H, parts.consts, mask=parts.mask,
                       opset=parts.body.opset)
    a_upd, c_upd = probe.value(parts.alias.vout), probe.value(parts.c.vout)
    if isinstance(a_upd, Blend) and isinstance(c_upd, Blend) and c_upd.new is a_upd.new:
        parts.states = parts.states[::-1]


def identify_loop_cell(parts: LoopParts) -> tuple[NativeCell | NoCell | NoMatch, FormReader]:
    """The loop body's cell — a ``NativeCell``, a ``NoCell`` (no cell a native op computes: a general
    cell), or a ``NoMatch`` (a masked cell that does not hold its states as Keras' ``mask_zero`` does) —
    and the form reader that read it."""
    _h_and_c(parts)
    h, c, alias = parts.h, parts.c, parts.alias
    cell_states = [h.vin] + ([c.vin] if c else [])
    reader = FormReader(parts.x_t, parts.I, cell_states + ([alias.vin] if alias else []), parts.H, parts.consts,
                        mask=parts.mask, opset=parts.body.opset)
    upd = reader.value(h.vout)
    upd_c = reader.value(c.vout) if c else None
    if parts.mask is not None:
        got = _held_state(upd, 0), (_held_state(upd_c, 1) if c else None)
        a_upd = _held_state(reader.value(alias.vout), len(cell_states)) if alias else got[0]
        if got[0] is None or (c and got[1] is None) or a_upd is not got[0]:
            return NoMatch("loop", parts.name, "Loop", "reads a per-step mask, but its states are not held on masked "
                                                       "steps as Keras' mask_zero holds them (h' = m h_new + (1 - m) h)"
                           ), reader
        upd, upd_c = got
    return (lstm(upd, upd_c, parts.H) if c else one_state(reader, upd, parts.H)), reader


def _known_values(body, reader: FormReader) -> dict:
    """What the form reader worked out, by tensor name: loop invariants and what the body computes
    from constants (bound as constants when the body is run on its own)."""
    known = {}
    for t in body.tensors().values():
        v = reader.consts[id(t)] if id(t) in reader.consts else reader.values.get(id(t))
        if isinstance(v, np.ndarray):
            known[t.name] = v
    return known


def loop_outputs(graph, parts: LoopParts) -> LoopOutputs | str | None:
    """The loop's outputs the model reads, by what they hold; None when it reads one that is neither h,
    c nor a stack of h (a general cell), or why not."""
    loop, n = parts.loop, parts.n_carried
    outs = LoopOutputs(final=loop.outputs[parts.h.j], final_c=loop.outputs[parts.c.j] if parts.c else None,
                       final_alias=loop.outputs[parts.alias.j] if parts.alias else None,
                       mask=None if parts.mask_gather is None else parts.mask_gather.inputs[0])

    def is_h(t):  # the state h, or (masked cells) the last output, which equals h at every step
        return same(t, parts.h.vout) or (parts.alias is not None and same(t, parts.alias.vout))

    for k, t in parts.scan_outs:
        if is_h(t):
            outs.stacked.append(loop.outputs[n + k])
        elif loop.outputs[n + k].outputs:  # emits something else
            return None
    for js, val in parts.seqs:
        seq_out = loop.outputs[js]
        if not is_h(val):
            if seq_out.outputs:  # collects something else
                return None
            continue
        for c in list(seq_out.outputs):
            if c.op != "ConcatFromSequence" or not int(c.attrs.get("new_axis", 0)) \
                    or int(c.attrs.get("axis", 0)) not in (0, 1):
                return f"its per-step outputs are read by {c.op} {c.name!r}, not stacked by ConcatFromSequence"
            outs.concat.append(c)
    kept = [outs.final, outs.final_c, outs.final_alias, *outs.stacked]
    for t in loop.outputs:
        used = bool(t.outputs) or t in graph.outputs
        if used and not any(t is o for o in kept) and not any(t is loop.outputs[js] for js, _ in parts.seqs):
            return None
    return outs
