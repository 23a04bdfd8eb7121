"""ONNX ``RNN`` (vanilla): one gate; ``activations`` ``Tanh`` (default) or ``Relu``."""
from __future__ import annotations

from . import activations as act
from .base import RecurrentOpHandler


class RNNHandler(RecurrentOpHandler):
    op_type = "RNN"
    gates = ("h",)
    default_activations = ("Tanh",)

    def gate_values(self, xp, prev, Rd, Rb, acts, attrs):
        (f, fa, fb), = acts
        return act.apply(f, xp + prev @ Rd.T + Rb, fa, fb)[:, None]

    def step(self, xp, h, c, Rd, Rb, acts, attrs):
        (f, fa, fb), = acts
        h = act.apply(f, xp + h @ Rd.T + Rb, fa, fb)
        return h, c, {"h": h}
