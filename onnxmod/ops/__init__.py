"""Per-op knowledge, one handler per ONNX recurrent ``op_type``.

A handler knows its op's gate order and weight layout, which of its inputs/outputs carry state,
which attributes and inputs onnxmod does not support, how to remove hidden units physically and
how to compute one step in numpy (the reference used by tests, gate monitoring and the unrolled
mode). ``handler_for(node)`` is the only way the rest of onnxmod reaches them.
"""
from __future__ import annotations

from .base import RecurrentOpHandler, UnitSelection
from .gru import GRUHandler
from .lstm import LSTMHandler
from .rnn import RNNHandler

_REGISTRY: dict[str, RecurrentOpHandler] = {}


def register(handler: RecurrentOpHandler) -> RecurrentOpHandler:
    _REGISTRY[handler.op_type] = handler
    return handler


for _h in (LSTMHandler(), GRUHandler(), RNNHandler()):
    register(_h)


def handler_for(op_type: str) -> RecurrentOpHandler | None:
    return _REGISTRY.get(op_type)


def recurrent_op_types() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


__all__ = ["RecurrentOpHandler", "UnitSelection", "handler_for", "recurrent_op_types", "register"]
