"""ONNX ``RNN`` (vanilla): one gate; ``activations`` ``Tanh`` (default) or ``Relu`` (equations:
``onnxmod.cells.rnn``)."""
from __future__ import annotations

from .base import RecurrentOpHandler


class RNNHandler(RecurrentOpHandler):
    op_type = "RNN"

    def silencer(self, node):
        """ReLU cells only: a pre-activation pushed far below 0 outputs exactly 0. tanh(-inf) is -1,
        not 0, so a tanh unit cannot be silenced from its input."""
        return {"h": -self.SILENCE} if self._uses(node, ("Relu",)) and "clip" not in node.attrs else None
