"""Vanilla RNN: one gate, ``h' = f(x W^T + Wb + h R^T + Rb)`` (``f`` Tanh by default, or Relu)."""
from __future__ import annotations

from .base import Cell, CellParams


class RNN(Cell):
    op_type = "RNN"
    gates = ("h",)
    default_activations = ("Tanh",)

    def step(self, be, xp, state, p: CellParams):
        (f,) = p.acts
        pre = be.add(xp, be.add(be.mm(state["h"], be.weight("Rt", p.R.T)), be.weight("Rb", p.Rb)))
        h = be.act(self._pre(be, pre, p), f)
        return {"h": h}, {"h": h}
