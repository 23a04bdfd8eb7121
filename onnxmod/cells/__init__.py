"""Recurrent cells: each cell's equations, written once.

A cell's ``step`` is written against a *backend* (``backend.py``): the same lines compute in numpy
(the reference that tests, gate monitoring and the trace rebuild use) and emit ONNX nodes (the
``Scan`` bodies of unrolled modules). ``run`` (``base.py``) drives a cell over a sequence with the
full semantics of the ONNX recurrent ops: directions, ``sequence_lens``, initial states, layouts.

``cell_for(op_type)`` is the only way the rest of onnxmod reaches a cell.
"""
from __future__ import annotations

from .base import Cell, CellParams, run
from .gru import GRU
from .lstm import LSTM
from .rnn import RNN

_CELLS: dict[str, Cell] = {c.op_type: c for c in (LSTM(), GRU(), RNN())}


def cell_for(op_type: str) -> Cell:
    return _CELLS[op_type]


__all__ = ["Cell", "CellParams", "cell_for", "run"]
