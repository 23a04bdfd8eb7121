"""Which recurrence's final state is which, in a tensor that packs several (torch's ``h_n``).

torch writes ``h_n`` of a stacked (and bidirectional) LSTM/GRU/RNN as one ``[layers * D, N, H]``
tensor: a ``Concat`` along axis 0 of every layer's ``Y_h`` (``Y_c`` for ``c_n``); a model then picks
a layer's state (``h_n[-1]``, or ``h_n[-2]`` and ``h_n[-1]``: the last layer's two directions). The
unit flow follows the picked positions to their recurrence; this module tells it, position by
position along the packed axis, which recurrence, direction and state each one is.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from .contract import Recurrence
from .tensors import through_identity


@dataclass(frozen=True)
class FinalState:
    """Position of a packed tensor: the final state ``state`` (``Y_h`` or ``Y_c``) of ``recurrence``'s
    direction ``direction``."""

    recurrence: Recurrence
    direction: int
    state: str


def _final_state_of(t, recurrences: list[Recurrence]) -> list[FinalState] | None:
    """``t`` as one recurrence's ``Y_h``/``Y_c`` ``[D, N, H]``: its D positions; else None."""
    t = through_identity(t)
    for r in recurrences:
        for node in r.reader_nodes():
            outs = list(node.outputs)
            for k, state in ((1, "h"), (2, "c")):
                if len(outs) > k and outs[k] is t:
                    return [FinalState(r, d, state) for d in range(r.directions)]
    return None


def packed_final_states(t, recurrences: list[Recurrence]) -> list[FinalState] | None:
    """Position by position along axis 0, what ``t`` is when it packs final states: a recurrence's
    ``Y_h``/``Y_c`` itself, or a ``Concat`` along axis 0 of them (through ``Identity``); else None."""
    own = _final_state_of(t, recurrences)
    if own is not None:
        return own
    t = through_identity(t)
    node = t.inputs[0] if t.inputs and not isinstance(t, gs.Constant) else None
    if node is None or node.op != "Concat" or int(node.attrs.get("axis", 0)) != 0:
        return None
    out: list[FinalState] = []
    for x in node.inputs:
        part = _final_state_of(x, recurrences)
        if part is None:
            return None
        out += part
    return out
