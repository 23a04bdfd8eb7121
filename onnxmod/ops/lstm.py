"""ONNX ``LSTM``: gates i, o, f, c (PyTorch stores i, f, g, o; Keras i, f, c, o)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UnsupportedModelError
from . import activations as act
from .base import RecurrentOpHandler

INITIAL_C, P = 6, 7


class LSTMHandler(RecurrentOpHandler):
    op_type = "LSTM"
    gates = ("i", "o", "f", "c")
    default_activations = ("Sigmoid", "Tanh", "Tanh")
    state_inputs = (5, INITIAL_C)
    num_outputs = 3

    def check(self, node: gs.Node) -> None:
        super().check(node)
        where = f"node {node.name!r} (LSTM)"
        if self._has_input(node, P):
            raise UnsupportedModelError(f"{where}: peepholes (input 'P') are not supported")
        if int(node.attrs.get("input_forget", 0)) != 0:
            raise UnsupportedModelError(f"{where}: input_forget=1 (coupled input-forget gate) is not supported")

    def gate_values(self, xp, prev, Rd, Rb, acts, attrs):
        H = prev.shape[-1]
        z = xp + prev @ Rd.T + Rb
        (f, fa, fb), (g, ga, gb), _ = acts
        return np.stack([act.apply(f, z[..., 0:H], fa, fb), act.apply(f, z[..., H:2 * H], fa, fb),
                         act.apply(f, z[..., 2 * H:3 * H], fa, fb), act.apply(g, z[..., 3 * H:], ga, gb)], axis=1)

    def gate_names(self):
        return self.gates + ("cell",)

    def step(self, xp, h, c, Rd, Rb, acts, attrs):
        H = h.shape[1]
        z = xp + h @ Rd.T + Rb
        (f, fa, fb), (g, ga, gb), (hh, ha, hb) = acts
        i = act.apply(f, z[:, 0:H], fa, fb)
        o = act.apply(f, z[:, H:2 * H], fa, fb)
        fg = act.apply(f, z[:, 2 * H:3 * H], fa, fb)
        ct = act.apply(g, z[:, 3 * H:4 * H], ga, gb)
        c = fg * c + i * ct
        h = o * act.apply(hh, c, ha, hb)
        return h, c, {"i": i, "o": o, "f": fg, "c": ct, "cell": c}

    def silencer(self, node):
        """Input gate and output gate shut (sigmoid -> 0): c stays 0, so h = o * tanh(c) = 0."""
        return {"i": -self.SILENCE, "o": -self.SILENCE} if self._uses(node, self.default_activations) else None
