"""``com.microsoft`` ``DynamicQuantizeLSTM``: an ONNX LSTM whose W and R are 8-bit integers.

What ``onnxruntime.quantization.quantize_dynamic(..., weight_type=QInt8)`` writes for an LSTM (the
contrib operator of onnxruntime's ContribOperators): inputs ``X, W, R, B, sequence_lens, initial_h,
initial_c, P, W_scale, W_zero_point, R_scale, R_zero_point`` with

* ``W`` ``[D, I, 4H]`` and ``R`` ``[D, H, 4H]`` int8 (or uint8) — transposed against the LSTM's
  ``[D, 4H, I]``: a gate row of the LSTM is a column here; gates i, o, f, c as the LSTM's;
* scales (float) and zero points (the weights' type) per direction ``[D]`` (per tensor) or per
  output channel ``[D, 4H]``; the float weight is ``(q - zero_point) * scale`` column by column;
* ``B`` ``[D, 8H]``, ``P`` ``[D, 3H]``, the states and the attributes as the LSTM's.

onnxmod reads it through the dequantized weights (the reference equations, gate traces, compensation)
and rewrites it in its integer form: removing a unit drops its 4 columns of W and R (and the same
entries of per-channel scales and zero points, which stay valid for the columns kept: they are the
columns' own) and its row of R, so a module of a quantized model stays quantized. A unit kept only
to pad a direction (inert) gets its zero point, which dequantizes to exactly 0.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..cells import cell_for
from ..errors import InputError, UnsupportedModelError
from .base import B, R, UnitSelection, W
from .lstm import LSTMHandler, sliced_peepholes

W_SCALE, W_ZERO, R_SCALE, R_ZERO = 8, 9, 10, 11
INTEGER = (np.int8, np.uint8)


class DynamicQuantizeLSTMHandler(LSTMHandler):
    op_type = "DynamicQuantizeLSTM"
    domain = "com.microsoft"

    @property
    def cell(self):
        return cell_for("LSTM")

    # ---- reading ----------------------------------------------------------------------------
    def _quantized(self, node: gs.Node, i: int, scale: int, zero: int):
        """(q ``[D, in, 4H]``, scale, zero point) of W (``i`` = 1) or R (``i`` = 2), each scale/zero point
        ``[D, 1, 1]`` (per tensor) or ``[D, 1, 4H]`` (per channel)."""
        q = np.asarray(node.inputs[i].values)
        s, z = (np.asarray(node.inputs[k].values) for k in (scale, zero))
        return q, s, z

    @staticmethod
    def _expand(v: np.ndarray) -> np.ndarray:
        return v.reshape(v.shape[0], 1, -1)

    def _dequantized(self, node: gs.Node, i: int, scale: int, zero: int) -> np.ndarray:
        """W or R as the LSTM's float ``[D, 4H, in]``."""
        q, s, z = self._quantized(node, i, scale, zero)
        f = (q.astype(np.float32) - self._expand(z).astype(np.float32)) * self._expand(s).astype(np.float32)
        return np.ascontiguousarray(np.transpose(f, (0, 2, 1)))

    def weights(self, node: gs.Node):
        Wt = self._dequantized(node, W, W_SCALE, W_ZERO)
        Rt = self._dequantized(node, R, R_SCALE, R_ZERO)
        if self._has_input(node, B):
            Bt = np.asarray(node.inputs[B].values)
        else:
            Bt = np.zeros((Wt.shape[0], 2 * Rt.shape[1]), dtype=np.float32)
        return Wt, Rt, Bt

    def float_dtype(self, node: gs.Node) -> np.dtype:
        return np.asarray(node.inputs[W_SCALE].values).dtype

    def input_size(self, node: gs.Node) -> int | None:
        w = node.inputs[W] if len(node.inputs) > W else None
        shape = np.asarray(w.values).shape if isinstance(w, gs.Constant) else ()
        return int(shape[1]) if len(shape) == 3 else None

    # ---- validation -------------------------------------------------------------------------
    def check(self, node: gs.Node) -> None:
        where = f"node {node.name!r} ({self.op_type})"
        for i, what in ((W, "W"), (R, "R"), (W_SCALE, "W_scale"), (W_ZERO, "W_zero_point"), (R_SCALE, "R_scale"),
                        (R_ZERO, "R_zero_point")):
            if len(node.inputs) <= i or not isinstance(node.inputs[i], gs.Constant):
                raise UnsupportedModelError(f"{where}: {what} is not a constant initializer")
        super().check(node)

    def _check_shapes(self, node: gs.Node, where: str) -> None:
        H = node.attrs.get("hidden_size")
        if isinstance(H, bool) or not isinstance(H, (int, np.integer)) or H < 1:
            raise InputError(f"{where}: 'hidden_size' is {H!r}; onnxmod needs it set to a positive integer")
        D, GH = self.directions(node), 4 * int(H)
        for i, scale, zero, name, rows in ((W, W_SCALE, W_ZERO, "W", None), (R, R_SCALE, R_ZERO, "R", int(H))):
            q, s, z = self._quantized(node, i, scale, zero)
            if q.dtype not in INTEGER or q.ndim != 3 or q.shape[0] != D or q.shape[2] != GH \
                    or (rows is not None and q.shape[1] != rows):
                raise InputError(f"{where}: {name} has shape {list(q.shape)} ({q.dtype}), expected int8 or uint8 "
                                 f"[{D}, {'I' if rows is None else rows}, {GH}] for hidden_size={H}")
            if s.shape not in ((D,), (D, GH)) or z.shape != s.shape or z.dtype != q.dtype:
                raise InputError(f"{where}: {name}'s scale {list(s.shape)} and zero point {list(z.shape)} "
                                 f"({z.dtype}) are not per tensor [{D}] or per channel [{D}, {GH}] of its type")
        if self._has_input(node, B):
            b = np.asarray(node.inputs[B].values)
            if b.shape != (D, 2 * GH):
                raise InputError(f"{where}: B has shape {list(b.shape)}, expected [{D}, {2 * GH}]")

    # ---- rewriting in the integer form ------------------------------------------------------
    def slice_units(self, node: gs.Node, sel: UnitSelection) -> None:
        """Keep ``sel.kept`` units: their 4 columns of W and R (and of per-channel scales and zero
        points), their rows of R, their entries of B and P; inert units get the zero point."""
        H = self.hidden_size(node)
        Pt = self.peepholes(node)
        cols = [self.gate_rows(k, H) for k in sel.kept]
        for i, scale, zero, tag in ((W, W_SCALE, W_ZERO, "W"), (R, R_SCALE, R_ZERO, "R")):
            q, s, z = self._quantized(node, i, scale, zero)
            new_q = []
            for d, (keep, c) in enumerate(zip(sel.kept, cols)):
                part = q[d][:, c] if i == W else q[d][keep][:, c]
                dead = np.flatnonzero(np.isin(keep, sel.inert[d]))
                if dead.size:
                    part = part.copy()
                    zd = z[d] if z.ndim == 1 else z[d][c]
                    drows = self.gate_rows(dead, keep.size)
                    part[:, drows] = zd if z.ndim == 1 else zd[drows]
                    if i == R:
                        part[dead, :] = (zd if z.ndim == 1 else zd[None, :])
                new_q.append(part)
            self._set(node, i, np.stack(new_q), f"{tag}_quantized")
            if s.ndim == 2:  # per channel: the kept columns' own scales and zero points
                self._set(node, scale, np.stack([s[d][c] for d, c in enumerate(cols)]), f"{tag}_scale")
                self._set(node, zero, np.stack([z[d][c] for d, c in enumerate(cols)]), f"{tag}_zero_point")
        self._slice_float_parts(node, sel, cols, Pt)

    def _slice_float_parts(self, node: gs.Node, sel: UnitSelection, cols: list, Pt) -> None:
        """B, constant initial states and peepholes, as an LSTM slices them."""
        H = self.hidden_size(node)
        if self._has_input(node, B):
            Bt = np.asarray(node.inputs[B].values)
            bs = []
            for d, (keep, c) in enumerate(zip(sel.kept, cols)):
                b = Bt[d][np.concatenate([c, 4 * H + c])].copy()
                dead = self.gate_rows(np.flatnonzero(np.isin(keep, sel.inert[d])), keep.size)
                b[np.concatenate([dead, 4 * keep.size + dead])] = 0
                bs.append(b)
            self._set(node, B, np.stack(bs), "B")
        self._slice_initial_states(node, sel)
        node.attrs["hidden_size"] = sel.width
        if Pt is not None:
            self._set(node, 7, sliced_peepholes(Pt, sel), "P")

    def slice_input(self, node: gs.Node, positions: np.ndarray, zero: np.ndarray | None = None) -> None:
        """Keep input features ``positions`` (W's rows); the ones flagged in ``zero`` get the zero point."""
        q, s, z = self._quantized(node, W, W_SCALE, W_ZERO)
        Wq = q[:, positions, :].copy()
        if zero is not None and zero.any():
            Wq[:, zero, :] = np.broadcast_to(z.reshape(z.shape[0], 1, -1), (q.shape[0], int(zero.sum()), q.shape[2]))
        self._set(node, W, Wq, "W_quantized")

    def set_input_weights(self, node: gs.Node, Wt: np.ndarray) -> None:
        raise UnsupportedModelError(f"node {node.name!r} ({self.op_type}): reducing the embedding's features of a "
                                    f"quantized LSTM is not supported (its W would have to be quantized again)")

    def widen_input(self, node: gs.Node, x, columns: np.ndarray) -> None:
        raise UnsupportedModelError(f"node {node.name!r} ({self.op_type}): a quantized LSTM's W takes no "
                                    f"silencing columns")

    def silencer(self, node):
        return None  # its int8 W cannot hold the silencing offsets: fused compositions are not built
