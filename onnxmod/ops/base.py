"""What every ONNX recurrent op shares: the W/R/B layout and physical unit removal.

ONNX ``LSTM``, ``GRU`` and ``RNN`` (``layout=0``) all store

* ``W`` ``[D, G*H, I]`` — input weights, gate blocks of H rows in the op's gate order,
* ``R`` ``[D, G*H, H]`` — recurrent weights, same row blocks, one column per unit,
* ``B`` ``[D, 2*G*H]`` — ``Wb`` then ``Rb``, same blocks,

with ``D`` directions (forward, then reverse), ``H = hidden_size`` and ``G`` gates. Removing unit
``j`` of direction ``d`` drops row ``g*H + j`` of W, R and both halves of B for every gate ``g``,
and column ``j`` of R. A subclass only says what differs: gate order, state inputs/outputs,
defaults, unsupported features, and the numpy step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import InputError, UnsupportedModelError
from . import activations as act

# ONNX input positions shared by the three ops.
X, W, R, B, SEQUENCE_LENS, INITIAL_H = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class UnitSelection:
    """Which units of one recurrent op survive, per direction.

    ``kept[d]`` is sorted and every direction keeps the same number of units (one ``hidden_size``
    serves all directions). When the concern keeps fewer units in one direction, that direction is
    padded with ``inert[d]``: removed units whose weights are all zero. With a zero initial state an
    all-zero unit outputs exactly 0 at every step (LSTM: c stays 0; GRU: h~ = 0 so h stays 0; RNN:
    f(0) = 0 for tanh/relu), so padding changes no output.
    """

    hidden_size: int
    kept: tuple[np.ndarray, ...]
    inert: tuple[np.ndarray, ...]

    @classmethod
    def from_keep(cls, hidden_size: int, keep: list[np.ndarray]) -> "UnitSelection":
        keep = [np.unique(np.asarray(k, dtype=np.int64)) for k in keep]
        for k in keep:
            if k.size and (k[0] < 0 or k[-1] >= hidden_size):
                raise ValueError(f"unit index out of range 0..{hidden_size - 1}")
        width = max(1, max(k.size for k in keep))
        kept, inert = [], []
        for k in keep:
            missing = width - k.size
            removed = np.setdiff1d(np.arange(hidden_size), k)
            pad = removed[:missing]
            kept.append(np.sort(np.concatenate([k, pad])))
            inert.append(pad)
        return cls(hidden_size, tuple(kept), tuple(inert))

    @property
    def width(self) -> int:
        return int(self.kept[0].size)

    def global_ids(self, which: str = "kept") -> np.ndarray:
        """Unit ids as ``d * H + j`` — the labels the graph layer propagates."""
        arrs = self.kept if which == "kept" else self.inert
        return np.concatenate([d * self.hidden_size + a for d, a in enumerate(arrs)])


class RecurrentOpHandler:
    op_type: str = ""
    gates: tuple[str, ...] = ()
    default_activations: tuple[str, ...] = ()
    state_inputs: tuple[int, ...] = (INITIAL_H,)  # positions of initial_h (and initial_c)
    num_outputs: int = 2  # Y, Y_h (and Y_c)

    # ---- attributes -------------------------------------------------------------------------
    @property
    def num_gates(self) -> int:
        return len(self.gates)

    def hidden_size(self, node: gs.Node) -> int:
        return int(node.attrs["hidden_size"])

    def directions(self, node: gs.Node) -> int:
        return 2 if self.direction(node) == "bidirectional" else 1

    def direction(self, node: gs.Node) -> str:
        d = node.attrs.get("direction", "forward")
        return d.decode() if isinstance(d, bytes) else str(d)

    def activations(self, node: gs.Node) -> list[list[tuple[str, float | None, float | None]]]:
        """Per direction, the resolved (name, alpha, beta) of each activation slot."""
        n = len(self.default_activations)
        D = self.directions(node)
        names = [a.decode() if isinstance(a, bytes) else str(a) for a in node.attrs.get("activations", [])]
        if not names:
            names = list(self.default_activations) * D
        if len(names) != n * D:
            raise UnsupportedModelError(
                f"node {node.name!r} ({self.op_type}): 'activations' has {len(names)} entries, expected {n * D}"
            )
        resolved = act.resolve(
            names, list(node.attrs.get("activation_alpha", [])), list(node.attrs.get("activation_beta", [])),
            f"node {node.name!r} ({self.op_type})",
        )
        return [resolved[d * n:(d + 1) * n] for d in range(D)]

    def output_activation(self, node: gs.Node) -> str:
        """The activation whose output *is* h (decides the logistic vs ReLU identification rule)."""
        return self.activations(node)[0][-1][0] if self.op_type == "RNN" else "Tanh"

    # ---- silencing (fused compositions) -------------------------------------------------------
    SILENCE = 1e4  # a pre-activation this far out saturates every gate to exactly 0 or 1 in float32

    def silencer(self, node: gs.Node) -> dict[str, float] | None:
        """How to keep a unit's output at 0 from its input alone: ``{gate: pre-activation offset}``
        added for the steps (rows) that must not use the unit, given a zero initial state — or
        None when this op's activations allow no such offset (the unit must then be removed
        physically). Subclasses that can, say how."""
        return None

    def _uses(self, node: gs.Node, names: tuple[str, ...]) -> bool:
        """Every direction's activations are exactly ``names`` (no alpha/beta)."""
        try:
            acts = self.activations(node)
        except UnsupportedModelError:
            return False
        return all(tuple(a[0] for a in d) == names and all(a[1] is None and a[2] is None for a in d) for d in acts)

    # ---- validation -------------------------------------------------------------------------
    def check(self, node: gs.Node) -> None:
        """Refuse what onnxmod cannot rewrite exactly, naming the node and the feature."""
        where = f"node {node.name!r} ({self.op_type})"
        if int(node.attrs.get("layout", 0)) != 0:
            raise UnsupportedModelError(f"{where}: layout=1 (batch-major) is not supported; re-export with layout=0")
        if "clip" in node.attrs:
            raise UnsupportedModelError(f"{where}: 'clip' is not supported (clipped cells cannot be sliced exactly)")
        if self._has_input(node, SEQUENCE_LENS):
            raise UnsupportedModelError(f"{where}: 'sequence_lens' input is not supported; pad sequences instead")
        for i in (W, R):
            if len(node.inputs) <= i or not isinstance(node.inputs[i], gs.Constant):
                raise UnsupportedModelError(f"{where}: weight input {i} is not a constant initializer")
        if self._has_input(node, B) and not isinstance(node.inputs[B], gs.Constant):
            raise UnsupportedModelError(f"{where}: bias input is not a constant initializer")
        self._check_shapes(node, where)
        self.activations(node)  # validates names and counts

    def _check_shapes(self, node: gs.Node, where: str) -> None:
        """hidden_size, direction and the W/R/B shapes must agree (a malformed model otherwise)."""
        H = node.attrs.get("hidden_size")
        if isinstance(H, bool) or not isinstance(H, (int, np.integer)) or H < 1:
            raise InputError(f"{where}: 'hidden_size' is {H!r}; onnxmod needs it set to a positive integer")
        if self.direction(node) not in ("forward", "reverse", "bidirectional"):
            raise InputError(f"{where}: direction {self.direction(node)!r} is not forward, reverse or bidirectional")
        D, GH = self.directions(node), self.num_gates * int(H)
        Wt, Rt, Bt = self.weights(node)
        want = {"W": (D, GH, Wt.shape[-1] if Wt.ndim == 3 else "I"), "R": (D, GH, int(H))}
        if self._has_input(node, B):
            want["B"] = (D, 2 * GH)
        for name, arr in (("W", Wt), ("R", Rt), ("B", Bt)):
            if name in want and (tuple(arr.shape) != want[name] or not np.issubdtype(arr.dtype, np.floating)):
                raise InputError(f"{where}: {name} has shape {list(arr.shape)} ({arr.dtype}), expected "
                                 f"{list(want[name])} floats for hidden_size={H}, {D} direction(s)")

    @staticmethod
    def _has_input(node: gs.Node, i: int) -> bool:
        return len(node.inputs) > i and node.inputs[i].name != ""

    # ---- weights ----------------------------------------------------------------------------
    def weights(self, node: gs.Node) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        Wt = np.asarray(node.inputs[W].values)
        Rt = np.asarray(node.inputs[R].values)
        if self._has_input(node, B):
            Bt = np.asarray(node.inputs[B].values)
        else:
            Bt = np.zeros((Wt.shape[0], 2 * Rt.shape[1]), dtype=Wt.dtype)
        return Wt, Rt, Bt

    def _set(self, node: gs.Node, i: int, values: np.ndarray, tag: str) -> None:
        const = gs.Constant(f"{node.name}/{tag}", np.ascontiguousarray(values))
        while len(node.inputs) <= i:
            node.inputs.append(gs.Variable.empty())
        node.inputs[i] = const

    def gate_rows(self, units: np.ndarray, hidden_size: int) -> np.ndarray:
        return np.concatenate([g * hidden_size + units for g in range(self.num_gates)])

    def slice_units(self, node: gs.Node, sel: UnitSelection) -> None:
        """Keep only ``sel.kept`` units (per direction); zero the inert padding units."""
        Wt, Rt, Bt = self.weights(node)
        H, G = self.hidden_size(node), self.num_gates
        Ws, Rs, Bs = [], [], []
        for d, keep in enumerate(sel.kept):
            rows = self.gate_rows(keep, H)
            w, r = Wt[d][rows].copy(), Rt[d][rows][:, keep].copy()
            b = Bt[d][np.concatenate([rows, G * H + rows])].copy()
            dead = np.isin(keep, sel.inert[d])
            if dead.any():
                drows = self.gate_rows(np.flatnonzero(dead), keep.size)
                w[drows] = 0
                r[drows] = 0
                r[:, dead] = 0
                b[np.concatenate([drows, G * keep.size + drows])] = 0
            Ws.append(w), Rs.append(r), Bs.append(b)
        self._set(node, W, np.stack(Ws), "W")
        self._set(node, R, np.stack(Rs), "R")
        self._set(node, B, np.stack(Bs), "B")
        node.attrs["hidden_size"] = sel.width

    def absorb(self, node: gs.Node, input_delta: np.ndarray | None = None, own: dict | None = None) -> None:
        """Fold constant inputs into the biases (mean compensation of removed units).

        ``input_delta`` ``[D, G*H]`` is added to ``Wb`` (removed upstream units' means times their
        W columns). ``own`` maps unit id ``d * H + j`` of this op to its mean h: ``R[:, j] * mean``
        goes into ``Rb`` — except GRU's candidate gate without ``linear_before_reset``, where the
        removed unit's own reset gate would multiply it (left uncompensated).
        """
        Wt, Rt, Bt = self.weights(node)
        Bt = Bt.astype(np.float64).copy()
        H, G = self.hidden_size(node), self.num_gates
        if input_delta is not None:
            Bt[:, :G * H] += input_delta
        for uid, m in (own or {}).items():
            d, j = divmod(int(uid), H)
            delta = Rt[d][:, j].astype(np.float64) * m
            if self.op_type == "GRU" and not int(node.attrs.get("linear_before_reset", 0)):
                delta[2 * H:] = 0
            Bt[d, G * H:] += delta
        self._set(node, B, Bt.astype(np.asarray(node.inputs[W].values).dtype), "B")

    def slice_input(self, node: gs.Node, positions: np.ndarray, zero: np.ndarray | None = None) -> None:
        """Keep input features ``positions`` (the X axis); zero the columns flagged in ``zero``."""
        Wt = np.asarray(node.inputs[W].values)[:, :, positions].copy()
        if zero is not None and zero.any():
            Wt[:, :, zero] = 0
        self._set(node, W, Wt, "W")

    # ---- numpy reference --------------------------------------------------------------------
    def step(self, x_proj, h, c, Rd, Rbd, acts, node_attrs):  # pragma: no cover - abstract
        raise NotImplementedError

    def run_numpy(self, node: gs.Node, x: np.ndarray, masks=None) -> dict[str, np.ndarray]:
        """Run the op in numpy on ``x`` [T, B, I] from a zero state.

        ``masks`` (optional, per direction ``[T, H]`` of 0/1) multiplies the state after every step:
        the unrolled mode's per-step concerns. Returns ``Y`` [T, D, B, H] and the per-step gate
        activations ``gates`` {name: [T, D, B, H]} (LSTM also ``c``).
        """
        Wt, Rt, Bt = self.weights(node)
        H, G = self.hidden_size(node), self.num_gates
        T, Bn, _ = x.shape
        D = self.directions(node)
        acts = self.activations(node)
        Y = np.zeros((T, D, Bn, H), dtype=np.float64)
        gate_out = {g: np.zeros((T, D, Bn, H)) for g in self.gate_names()}
        for d in range(D):
            xp = x.astype(np.float64) @ Wt[d].T.astype(np.float64) + Bt[d][: G * H]
            h = np.zeros((Bn, H))
            c = np.zeros((Bn, H))
            order = range(T) if d == 0 else range(T - 1, -1, -1)
            for t in order:
                h, c, gv = self.step(xp[t], h, c, Rt[d].astype(np.float64), Bt[d][G * H:].astype(np.float64),
                                     acts[d], node.attrs)
                if masks is not None:
                    h = h * masks[d][t]
                    c = c * masks[d][t]
                Y[t, d] = h
                for k, v in gv.items():
                    gate_out[k][t, d] = v
        return {"Y": Y, "gates": gate_out}

    def gate_names(self) -> tuple[str, ...]:
        return self.gates

    def gates_from_trace(self, node: gs.Node, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Every gate's activation rebuilt from traced ``x`` [T, B, I] and ``Y`` [T, D, B, H].

        h_{t-1} comes from Y (the previous step in each direction's order), so the gates of all
        steps need one batched product; only LSTM's cell state needs a (cheap, elementwise)
        recursion. Returns ``[T, D, G, B, H]`` in ``self.gates`` order.
        """
        Wt, Rt, Bt = (a.astype(np.float64) for a in self.weights(node))
        H, G = self.hidden_size(node), self.num_gates
        T, D = y.shape[0], y.shape[1]
        acts = self.activations(node)
        out = np.zeros((T, D, G, y.shape[2], H))
        for d in range(D):
            yd = y[:, d].astype(np.float64)
            prev = np.zeros_like(yd)
            if d == 0 and self.direction(node) != "reverse":
                prev[1:] = yd[:-1]
            else:
                prev[:-1] = yd[1:]
            xp = x.astype(np.float64) @ Wt[d].T + Bt[d][:G * H]
            out[:, d] = self.gate_values(xp, prev, Rt[d], Bt[d][G * H:], acts[d], node.attrs)
        return out

    def gate_values(self, xp, prev, Rd, Rb, acts, attrs):  # pragma: no cover - abstract
        raise NotImplementedError
