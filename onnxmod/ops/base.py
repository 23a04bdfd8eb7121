"""What every ONNX recurrent op shares: the W/R/B layout and physical unit removal.

ONNX ``LSTM``, ``GRU`` and ``RNN`` (``layout=0``) all store

* ``W`` ``[D, G*H, I]`` — input weights, gate blocks of H rows in the op's gate order,
* ``R`` ``[D, G*H, H]`` — recurrent weights, same row blocks, one column per unit,
* ``B`` ``[D, 2*G*H]`` — ``Wb`` then ``Rb``, same blocks,

with ``D`` directions (forward, then reverse), ``H = hidden_size`` and ``G`` gates. Removing unit
``j`` of direction ``d`` drops row ``g*H + j`` of W, R and both halves of B for every gate ``g``,
and column ``j`` of R. A subclass only says what differs: state inputs/outputs, extra inputs
(LSTM's peepholes) and when a unit can be silenced; gates and equations come from its cell.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..cells import CellParams, cell_for, run
from ..cells import activations as act
from ..cells.backend import Numpy
from ..errors import InputError, UnsupportedModelError
from ..units import UnitSelection  # noqa: F401  (re-exported: onnxmod.ops.base.UnitSelection)

# ONNX input positions shared by the three ops.
X, W, R, B, SEQUENCE_LENS, INITIAL_H = 0, 1, 2, 3, 4, 5


class RecurrentOpHandler:
    op_type: str = ""
    domain: str = ""  # the op's domain ("": ONNX's own)
    state_inputs: tuple[int, ...] = (INITIAL_H,)  # positions of initial_h (and initial_c)
    num_outputs: int = 2  # Y, Y_h (and Y_c)

    # ---- attributes -------------------------------------------------------------------------
    @property
    def gates(self) -> tuple[str, ...]:
        return self.cell.gates

    @property
    def default_activations(self) -> tuple[str, ...]:
        return self.cell.default_activations

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
        if int(node.attrs.get("layout", 0)) != 0:  # normalization turns layout=1 into layout=0
            raise UnsupportedModelError(f"{where}: layout=1 (batch-major) was not normalized")
        clip = node.attrs.get("clip")
        if clip is not None and not (isinstance(clip, (float, int)) and clip > 0):
            raise InputError(f"{where}: 'clip' is {clip!r}; it must be a positive number")
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

    def constant_state(self, node: gs.Node, i: int) -> tuple[gs.Node | None, int]:
        """Where initial state ``i`` is a constant ``[D, N or 1, H]`` — read directly, or broadcast over
        the batch by ``Expand``/``Tile`` (a learned initial state): (the node holding it, input position),
        else (None, -1)."""
        if not self._has_input(node, i):
            return None, -1
        t = node.inputs[i]
        if isinstance(t, gs.Constant):
            return node, i
        p = t.inputs[0] if len(t.inputs) == 1 else None
        if p is not None and p.op in ("Expand", "Tile") and isinstance(p.inputs[0], gs.Constant) \
                and len(t.outputs) == 1:  # read by this op only: slicing its source changes nothing else
            v = np.asarray(p.inputs[0].values)
            if v.shape == (self.directions(node), 1, self.hidden_size(node)):
                return p, 0
        return None, -1

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
        self._slice_initial_states(node, sel)
        node.attrs["hidden_size"] = sel.width

    def _slice_initial_states(self, node: gs.Node, sel: UnitSelection) -> None:
        """Constant initial states ``[D, N, H]``: the kept units' entries, inert ones 0."""
        for i in self.state_inputs:
            holder, pos = self.constant_state(node, i)
            if holder is not None:
                s0 = np.asarray(holder.inputs[pos].values)
                new = np.stack([s0[d][..., k] for d, k in enumerate(sel.kept)])
                for d, k in enumerate(sel.kept):
                    new[d][..., np.isin(k, sel.inert[d])] = 0
                holder.inputs[pos] = gs.Constant(f"{node.name}/initial_{i}", np.ascontiguousarray(new))

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
        self._set(node, B, Bt.astype(self.float_dtype(node)), "B")

    def float_dtype(self, node: gs.Node) -> np.dtype:
        """The dtype of the op's floating-point parameters (W's)."""
        return np.asarray(node.inputs[W].values).dtype

    def input_size(self, node: gs.Node) -> int | None:
        """The width of X (W's last axis); None when W is not a constant."""
        w = node.inputs[W] if len(node.inputs) > W else None
        shape = np.asarray(w.values).shape if isinstance(w, gs.Constant) else ()
        return int(shape[2]) if len(shape) == 3 else None

    def set_input_weights(self, node: gs.Node, Wt: np.ndarray) -> None:
        """Replace W (``[D, G*H, I']``: the embedding's feature reduction)."""
        self._set(node, W, Wt, "W_reduced")

    def widen_input(self, node: gs.Node, x, columns: np.ndarray) -> None:
        """Read ``x`` instead of X, whose extra features W's new ``columns`` ``[D, G*H, k]`` weigh."""
        Wt = np.asarray(node.inputs[W].values)
        node.inputs[X] = x
        node.inputs[W] = gs.Constant(f"{node.name}/W_fused",
                                     np.ascontiguousarray(np.concatenate([Wt, columns.astype(Wt.dtype)], axis=2)))

    def slice_input(self, node: gs.Node, positions: np.ndarray, zero: np.ndarray | None = None) -> None:
        """Keep input features ``positions`` (the X axis); zero the columns flagged in ``zero``."""
        Wt = np.asarray(node.inputs[W].values)[:, :, positions].copy()
        if zero is not None and zero.any():
            Wt[:, :, zero] = 0
        self._set(node, W, Wt, "W")

    # ---- numbers (the cell's equations live in ``onnxmod.cells``) -------------------------------
    @property
    def cell(self):
        return cell_for(self.op_type)

    def gate_names(self) -> tuple[str, ...]:
        return self.cell.monitored()

    def reversed_directions(self, node: gs.Node) -> list[bool]:
        """Per direction, whether it reads the sequence backwards."""
        return [d == 1 or self.direction(node) == "reverse" for d in range(self.directions(node))]

    def params(self, node: gs.Node) -> list:
        """Per direction, the cell's ``CellParams`` (float64) read from the node."""
        Wt, Rt, Bt = self.weights(node)
        G, H = self.num_gates, self.hidden_size(node)
        P = self.peepholes(node)
        clip = node.attrs.get("clip")
        return [CellParams(R=Rt[d].astype(np.float64), Rb=Bt[d][G * H:].astype(np.float64), acts=a,
                           P=None if P is None else P[d].astype(np.float64),
                           clip=None if clip is None else float(clip),
                           input_forget=bool(int(node.attrs.get("input_forget", 0))),
                           linear_before_reset=bool(int(node.attrs.get("linear_before_reset", 0))))
                for d, a in enumerate(self.activations(node))]

    def peepholes(self, node: gs.Node) -> np.ndarray | None:
        return None

    def run_numpy(self, node: gs.Node, x: np.ndarray, masks=None, sequence_lens=None, initial=None) -> dict:
        """Run the op in numpy (float64) on ``x`` ``[T, B, I]`` (``layout=0``).

        ``initial`` {``h``/``c``: ``[D, B, H]``} (zero when absent); ``sequence_lens`` ``[B]``;
        ``masks`` (optional, per direction ``[T, H]`` of 0/1) multiplies the state after every step:
        the unrolled mode's per-step concerns. Returns ``Y`` [T, D, B, H], the final states
        ``Y_h``/``Y_c`` [D, B, H] and the per-step gate activations ``gates`` {name: [T, D, B, H]}.
        """
        Wt, Rt, Bt = self.weights(node)
        out = run(self.cell, Wt, Rt, Bt, x, self.params(node), self.reversed_directions(node),
                  sequence_lens=sequence_lens, initial=initial, masks=masks)
        res = {"Y": out["Y"], "Y_h": out["final"]["h"], "gates": out["monitored"]}
        if "c" in out["final"]:
            res["Y_c"] = out["final"]["c"]
        return res

    def gates_from_trace(self, node: gs.Node, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Every gate's activation rebuilt from traced ``x`` [T, B, I] and ``Y`` [T, D, B, H].

        h_{t-1} comes from Y (the previous step in each direction's order), so the cell runs on
        every step at once; a cell with more state than h (LSTM's c) recurs over that state only,
        with the recurrent product computed once for every step. Returns ``[T, D, G, B, H]`` in
        ``self.gates`` order.
        """
        be, cell = Numpy(), self.cell
        Wt, _, Bt = (a.astype(np.float64) for a in self.weights(node))
        H, G = self.hidden_size(node), self.num_gates
        T, D, N = y.shape[0], y.shape[1], y.shape[2]
        out = np.zeros((T, D, G, N, H))
        for d, (p, rev) in enumerate(zip(self.params(node), self.reversed_directions(node))):
            yd = y[:, d].astype(np.float64)
            prev = np.zeros_like(yd)
            if rev:
                prev[:-1] = yd[1:]
            else:
                prev[1:] = yd[:-1]
            xp = x.astype(np.float64) @ Wt[d].T + Bt[d][:G * H]
            if cell.states == ("h",):
                _, vals = cell.step(be, xp, {"h": prev}, p)
            else:  # the extra state recurs: one elementwise step per time step
                hr = prev @ p.R.T + p.Rb
                state = {k: np.zeros((N, H)) for k in cell.states}
                per = []
                for t in (range(T - 1, -1, -1) if rev else range(T)):
                    state, v = cell.step(be, xp[t], dict(state, h=prev[t]), p, hr=hr[t])
                    per.append((t, v))
                vals = {k: np.zeros((T, N, H)) for k in cell.gates}
                for t, v in per:
                    for k in cell.gates:
                        vals[k][t] = v[k]
            out[:, d] = np.stack([vals[k] for k in cell.gates], axis=1)
        return out
