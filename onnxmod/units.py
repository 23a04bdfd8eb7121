"""Which units of a recurrence a module keeps."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UnitSelection:
    """Which units of one recurrence survive, per direction.

    ``kept[d]`` is sorted and every direction keeps the same number of units (one hidden size
    serves all directions). When the concern keeps fewer units in one direction, that direction is
    padded with ``inert[d]``: removed units whose weights are all zero. With a zero initial state an
    all-zero unit outputs exactly 0 at every step (LSTM: c stays 0; GRU: h~ = 0 so h stays 0; RNN:
    f(0) = 0 for tanh/relu), so padding changes no output.
    """

    hidden_size: int
    kept: tuple[np.ndarray, ...]
    inert: tuple[np.ndarray, ...]

    @classmethod
    def from_keep(cls, hidden_size: int, keep: list[np.ndarray], width: int | None = None) -> UnitSelection:
        """``keep[d]``: the units direction d keeps; every direction is padded with inert units to
        the widest (or to ``width``: recurrences the model stacks keep equal widths)."""
        keep = [np.unique(np.asarray(k, dtype=np.int64)) for k in keep]
        for k in keep:
            if k.size and (k[0] < 0 or k[-1] >= hidden_size):
                raise ValueError(f"unit index out of range 0..{hidden_size - 1}")
        width = max(1, max(k.size for k in keep), width or 0)
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
        """Unit ids as ``d * H + j`` — the labels the unit flow propagates."""
        arrs = self.kept if which == "kept" else self.inert
        return np.concatenate([d * self.hidden_size + a for d, a in enumerate(arrs)])
