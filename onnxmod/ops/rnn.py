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

    def silencer(self, node):
        """ReLU cells only: a pre-activation pushed far below 0 outputs exactly 0. tanh(-inf) is -1,
        not 0, so a tanh unit cannot be silenced from its input."""
        return {"h": -self.SILENCE} if self._uses(node, ("Relu",)) else None
