"""Per-op knowledge of the native ``LSTM``/``GRU``/``RNN`` ops, one handler per ``op_type``.

A handler knows its op's weight layout, which of its inputs carry state, how to check and read its
attributes and how to remove hidden units physically (weights, peepholes, constant initial
states). The equations are the cell's (``onnxmod.cells``), shared by every form. The native
front-end (``onnxmod.recurrence.native``) is what reaches handlers; the rest of the pipeline talks
to recurrences.
"""
from __future__ import annotations

from .base import RecurrentOpHandler, UnitSelection
from .gru import GRUHandler
from .lstm import LSTMHandler
from .quantized_lstm import DynamicQuantizeLSTMHandler
from .rnn import RNNHandler

# One handler per native recurrent op type (adding an op: one file in this folder plus one entry here).
HANDLERS: dict[str, RecurrentOpHandler] = {
    h.op_type: h for h in (LSTMHandler(), GRUHandler(), RNNHandler(), DynamicQuantizeLSTMHandler())}


def handler_for(op_type: str) -> RecurrentOpHandler | None:
    return HANDLERS.get(op_type)


def recurrent_op_types() -> tuple[str, ...]:
    """Every op type a handler reads (the ONNX ops and their quantized variants)."""
    return tuple(sorted(HANDLERS))


def float_op_types() -> tuple[str, ...]:
    """The ONNX ``LSTM``/``GRU``/``RNN`` (float weights): what graph rewrites may restack."""
    return tuple(sorted(k for k, h in HANDLERS.items() if not h.domain))


__all__ = ["HANDLERS", "RecurrentOpHandler", "UnitSelection", "float_op_types", "handler_for", "recurrent_op_types"]
