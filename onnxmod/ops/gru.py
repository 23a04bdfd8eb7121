"""ONNX ``GRU``: gates z, r, h (equations: ``onnxmod.cells.gru``)."""
from __future__ import annotations

from .base import RecurrentOpHandler


class GRUHandler(RecurrentOpHandler):
    op_type = "GRU"

    def silencer(self, node):
        """Update gate open (sigmoid -> 1): h = (1 - z) * n + z * h_prev keeps h_prev = 0."""
        plain = self._uses(node, self.default_activations) and "clip" not in node.attrs
        return {"z": self.SILENCE} if plain else None
