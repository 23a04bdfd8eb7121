"""ONNX ``LSTM``: gates i, o, f, c (equations: ``onnxmod.cells.lstm``); optional peepholes ``P``."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import InputError, UnsupportedModelError
from .base import RecurrentOpHandler

INITIAL_C, P = 6, 7


class LSTMHandler(RecurrentOpHandler):
    op_type = "LSTM"
    state_inputs = (5, INITIAL_C)
    num_outputs = 3

    def check(self, node: gs.Node) -> None:
        super().check(node)
        if self._has_input(node, P):
            where = f"node {node.name!r} (LSTM)"
            if not isinstance(node.inputs[P], gs.Constant):
                raise UnsupportedModelError(f"{where}: peepholes (input 'P') are not a constant initializer")
            want = (self.directions(node), 3 * self.hidden_size(node))
            if tuple(np.asarray(node.inputs[P].values).shape) != want:
                raise InputError(f"{where}: P has shape {list(np.asarray(node.inputs[P].values).shape)}, "
                                 f"expected {list(want)}")

    def peepholes(self, node: gs.Node) -> np.ndarray | None:
        return np.asarray(node.inputs[P].values) if self._has_input(node, P) else None

    def slice_units(self, node, sel) -> None:
        Pt = self.peepholes(node)
        super().slice_units(node, sel)
        if Pt is not None:
            self._set(node, P, sliced_peepholes(Pt, sel), "P")

    def silencer(self, node):
        """Input gate and output gate shut (sigmoid -> 0): c stays 0, so h = o * tanh(c) = 0 — with
        the default activations, no peepholes, no clip and no coupled forget gate."""
        plain = (self._uses(node, self.default_activations) and not self._has_input(node, P)
                 and "clip" not in node.attrs and not int(node.attrs.get("input_forget", 0)))
        return {"i": -self.SILENCE, "o": -self.SILENCE} if plain else None


def sliced_peepholes(Pt: np.ndarray, sel) -> np.ndarray:
    """Peephole weights ``[D, 3H]`` (blocks i, o, f) for the kept units: their entries, inert ones 0."""
    H = sel.hidden_size
    rows = [np.concatenate([g * H + k for g in range(3)]) for k in sel.kept]
    new = np.stack([Pt[d][r] for d, r in enumerate(rows)])
    for d, k in enumerate(sel.kept):
        dead = np.flatnonzero(np.isin(k, sel.inert[d]))
        for g in range(3):
            new[d, g * k.size + dead] = 0
    return new
