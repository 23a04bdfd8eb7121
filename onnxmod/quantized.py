"""Constants as a graph stores them: a plain initializer, or integers a ``DequantizeLinear`` turns
into floats (QDQ). Reading dequantizes; rewriting keeps the integer form, so a quantized model's
modules stay quantized: removing rows of a quantized weight removes the rows of its integers (and
of its scales and zero points where they are per axis along the same axis), and a channeled head's
new rows are quantized again with the weight's own scale (per tensor) or their own (per axis)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs


@dataclass
class Stored:
    """Where a constant input of ``reader`` is stored: ``node.inputs[index]`` is the array (the
    reader's own input, or the integers of the ``DequantizeLinear`` ``dq`` that feeds it)."""

    node: gs.Node
    index: int
    dq: gs.Node | None = None

    @property
    def raw(self) -> np.ndarray:
        return np.asarray(self.node.inputs[self.index].values)

    def _param(self, i: int):
        dq = self.dq
        return np.asarray(dq.inputs[i].values) if len(dq.inputs) > i and dq.inputs[i].name else None

    @property
    def values(self) -> np.ndarray:
        """The float values the reader sees."""
        if self.dq is None:
            return self.raw
        q, scale, zp = self.raw.astype(np.float64), self._param(1).astype(np.float64), self._param(2)
        zp = np.zeros(1) if zp is None else zp.astype(np.float64)
        axis = self.axis()
        if axis is not None:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape) if zp.size > 1 else zp
        return ((q - zp) * scale).astype(np.float32)

    def axis(self) -> int | None:
        """The axis of per-axis scales (None: per tensor)."""
        if self.dq is None or self._param(1).size <= 1:
            return None
        return int(self.dq.attrs.get("axis", 1)) % self.raw.ndim

    def replace(self, values: np.ndarray, tag: str, along: int | None = None) -> None:
        """Store ``values`` (floats, the reader's view) back, quantized the way this constant was;
        ``along``: the axis whose entries are new (their per-axis scales are recomputed)."""
        if self.dq is None:
            self.node.inputs[self.index] = gs.Constant(tag, np.ascontiguousarray(values.astype(self.raw.dtype)))
            return
        dtype = self.raw.dtype
        info = np.iinfo(dtype)
        zp = self._param(2)
        axis = self.axis()
        if axis is None:
            scale = float(self._param(1).reshape(-1)[0])
            z = 0.0 if zp is None else float(zp.reshape(-1)[0])
            q = np.clip(np.rint(values / scale + z), info.min, info.max).astype(dtype)
        else:
            if along is not None and along != axis:
                raise ValueError("per-axis scales along another axis than the rewritten one")
            moved = np.moveaxis(values.astype(np.float64), axis, 0).reshape(values.shape[axis], -1)
            scale = np.maximum(np.abs(moved).max(axis=1), 1e-12) / max(info.max, 1)
            z = np.zeros(values.shape[axis])
            shape = [1] * values.ndim
            shape[axis] = -1
            q = np.clip(np.rint(values / scale.reshape(shape)), info.min, info.max).astype(dtype)
            old = self.dq.inputs[1]
            self.dq.inputs[1] = gs.Constant(f"{tag}/scale", scale.astype(np.asarray(old.values).dtype))
            if zp is not None:
                self.dq.inputs[2] = gs.Constant(f"{tag}/zero_point", z.astype(zp.dtype))
        self.node.inputs[self.index] = gs.Constant(tag, np.ascontiguousarray(q))


def stored(reader: gs.Node, index: int) -> Stored | None:
    """How ``reader.inputs[index]`` is stored, or None when it is computed at run time."""
    t = reader.inputs[index]
    if isinstance(t, gs.Constant):
        return Stored(reader, index)
    if not t.inputs or len(t.outputs) != 1:
        return None
    dq = t.inputs[0]
    if dq.op != "DequantizeLinear" or not isinstance(dq.inputs[0], gs.Constant):
        return None
    if any(len(dq.inputs) > i and dq.inputs[i].name and not isinstance(dq.inputs[i], gs.Constant) for i in (1, 2)):
        return None
    return Stored(dq, 0, dq)
