"""ONNX ``GRU``: gates z, r, h (PyTorch stores r, z, n and exports ``linear_before_reset=1``)."""
from __future__ import annotations

import numpy as np

from . import activations as act
from .base import RecurrentOpHandler


class GRUHandler(RecurrentOpHandler):
    op_type = "GRU"
    gates = ("z", "r", "h")
    default_activations = ("Sigmoid", "Tanh")

    def gate_values(self, xp, prev, Rd, Rb, acts, attrs):
        H = prev.shape[-1]
        (f, fa, fb), (g, ga, gb) = acts
        rz = prev @ Rd[: 2 * H].T + Rb[: 2 * H]
        z = act.apply(f, xp[..., :H] + rz[..., :H], fa, fb)
        r = act.apply(f, xp[..., H:2 * H] + rz[..., H:], fa, fb)
        if int(attrs.get("linear_before_reset", 0)):
            n = act.apply(g, xp[..., 2 * H:] + r * (prev @ Rd[2 * H:].T + Rb[2 * H:]), ga, gb)
        else:
            n = act.apply(g, xp[..., 2 * H:] + (r * prev) @ Rd[2 * H:].T + Rb[2 * H:], ga, gb)
        return np.stack([z, r, n], axis=1)

    def step(self, xp, h, c, Rd, Rb, acts, attrs):
        H = h.shape[1]
        (f, fa, fb), (g, ga, gb) = acts
        rz = h @ Rd[: 2 * H].T + Rb[: 2 * H]
        z = act.apply(f, xp[:, :H] + rz[:, :H], fa, fb)
        r = act.apply(f, xp[:, H:2 * H] + rz[:, H:2 * H], fa, fb)
        if int(attrs.get("linear_before_reset", 0)):
            n = act.apply(g, xp[:, 2 * H:] + r * (h @ Rd[2 * H:].T + Rb[2 * H:]), ga, gb)
        else:
            n = act.apply(g, xp[:, 2 * H:] + (r * h) @ Rd[2 * H:].T + Rb[2 * H:], ga, gb)
        h = (1 - z) * n + z * h
        return h, c, {"z": z, "r": r, "h": n}

    def silencer(self, node):
        """Update gate open (sigmoid -> 1): h = (1 - z) * n + z * h_prev keeps h_prev = 0."""
        return {"z": self.SILENCE} if self._uses(node, self.default_activations) else None
