"""What every cell shares: its parameters and the driver that runs it over a sequence.

ONNX ``LSTM``, ``GRU`` and ``RNN`` store, per direction ``d``, ``W[d]`` ``[G*H, I]``, ``R[d]``
``[G*H, H]`` and ``B[d]`` = ``Wb`` then ``Rb`` (``[2*G*H]``), gate blocks in the op's gate order. A
cell's ``step`` sees the input already projected (``xp = x W^T + Wb``, one product for every step)
and one direction's ``CellParams``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import Numpy


@dataclass
class CellParams:
    """One direction's recurrent parameters and attributes."""

    R: np.ndarray  # [G*H, H]
    Rb: np.ndarray  # [G*H]
    acts: list  # [(name, alpha, beta)] in the op's activation slots
    P: np.ndarray | None = None  # LSTM peepholes [3H] (i, o, f)
    clip: float | None = None
    input_forget: bool = False
    linear_before_reset: bool = False

    @property
    def hidden(self) -> int:
        return int(self.R.shape[1])


class Cell:
    """A recurrent cell: its gates (ONNX order), its state vectors and one step of its equations."""

    op_type: str = ""
    gates: tuple[str, ...] = ()
    states: tuple[str, ...] = ("h",)
    default_activations: tuple[str, ...] = ()

    @property
    def num_gates(self) -> int:
        return len(self.gates)

    def monitored(self) -> tuple[str, ...]:
        """The names of the per-step values ``step`` reports (gates, and LSTM's cell state)."""
        return self.gates

    def step(self, be, xp, state: dict, p: CellParams) -> tuple[dict, dict]:  # pragma: no cover - abstract
        """One step: ``xp`` ``[..., G*H]``, ``state`` {name: ``[..., H]``} -> (new state, monitored)."""
        raise NotImplementedError

    def _pre(self, be, z, p: CellParams):
        return z if p.clip is None else be.clip(z, p.clip)


_NP = Numpy()


def run(cell: Cell, W: np.ndarray, R: np.ndarray, B: np.ndarray, x: np.ndarray, params: list[CellParams],
        reverse: list[bool], sequence_lens: np.ndarray | None = None, initial: dict | None = None,
        masks=None) -> dict:
    """Run ``cell`` in numpy (float64) over ``x`` ``[T, N, I]``, every direction.

    ``reverse[d]``: direction d reads the sequence backwards. ``sequence_lens`` ``[N]``: row b's
    steps ``t >= len[b]`` are padding (output 0, state unchanged; a reverse direction starts at
    ``len[b] - 1``). ``initial`` {state name: ``[D, N, H]``}: initial states (zero when absent).
    ``masks`` (optional, per direction ``[T, H]`` of 0/1) multiplies every state after each step
    (the unrolled mode's per-step concerns). Returns ``Y`` ``[T, D, N, H]``, the final states
    {name: ``[D, N, H]``} and every monitored value {name: ``[T, D, N, H]``}.
    """
    T, N, _ = x.shape
    D = len(params)
    H = params[0].hidden
    G = cell.num_gates
    lens = np.full(N, T, dtype=np.int64) if sequence_lens is None else np.asarray(sequence_lens, dtype=np.int64)
    Y = np.zeros((T, D, N, H))
    mon = {k: np.zeros((T, D, N, H)) for k in cell.monitored()}
    finals = {k: np.zeros((D, N, H)) for k in cell.states}
    for d in range(D):
        xp = x.astype(np.float64) @ W[d].T.astype(np.float64) + B[d][:G * H].astype(np.float64)
        state = {k: (np.zeros((N, H)) if initial is None or initial.get(k) is None
                     else np.asarray(initial[k][d], dtype=np.float64).copy()) for k in cell.states}
        for s in range(T):
            live = s < lens  # rows still reading
            if not live.any():
                break
            # step s of each row: t = s forward; t = len - 1 - s backward (per row)
            t = np.where(live, lens - 1 - s, 0) if reverse[d] else np.full(N, s)
            rows = np.flatnonzero(live)
            xt = xp[t[rows], rows]
            new, vals = cell.step(_NP, xt, {k: v[rows] for k, v in state.items()}, params[d])
            if masks is not None:
                new = {k: v * masks[d][t[rows]] for k, v in new.items()}
            for k in cell.states:
                state[k][rows] = new[k]
            Y[t[rows], d, rows] = new["h"]
            for k, v in vals.items():
                mon[k][t[rows], d, rows] = v
        for k in cell.states:
            finals[k][d] = state[k]
    return {"Y": Y, "final": finals, "monitored": mon}
