"""What a tensor carries of units, by axes (``Units``), and the small array algebra on it.

A tensor that the unit flow reached is described by a *label array* of the tensor's rank that
broadcasts against it: on the axes along which the tensor's positions hold different units it has
the tensor's size and holds each position's global unit id; on every other axis it has size 1. A
position that holds no unit (a feature concatenated from elsewhere) is labelled ``-1``.

One axis is the *unit axis*: the axis that shrinks when units are removed (``h``'s last axis, or
``d·H + j`` after the directions are merged into it). Other axes may carry units too, as *rows*:
the direction axis of ``Y`` ``[T, D, N, H]`` holds different units on each row, but removing units
never changes its size (every direction keeps the same number of units; ``units.UnitSelection``).

``null`` is what a removed unit's positions hold there, given that the unit itself outputs 0:
``None`` for exactly 0 (most ops keep a zero a zero), else a constant of the label array's shape (a
bias added, a sigmoid taken: ``0.5``). It is only ever a constant; where it would depend on the data
the flow stops following and re-widens instead (``engine``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Units:
    lab: np.ndarray  # int64, the tensor's rank, broadcastable; -1: no unit there
    axis: int  # the unit axis (the one that shrinks)
    null: np.ndarray | None = None  # float64 like ``lab``: a removed unit's value there (None: 0)
    zero_point: object = None  # quantized tensors: the tensor holding what a removed unit reads as

    @property
    def rank(self) -> int:
        return self.lab.ndim

    @property
    def size(self) -> int:
        """Positions along the unit axis."""
        return int(self.lab.shape[self.axis])

    def varying(self) -> list[int]:
        """The axes along which positions hold different units (size > 1 in ``lab``)."""
        return [a for a, s in enumerate(self.lab.shape) if s > 1]

    def rows(self) -> list[int]:
        """Axes other than the unit axis along which units differ (directions, stacked layers)."""
        return [a for a in self.varying() if a != self.axis]

    def with_(self, **kw) -> Units:
        return replace(self, **kw)

    def has_null(self) -> bool:
        return self.null is not None and bool(np.any(self.null[self.lab >= 0] != 0))

    def ids(self) -> np.ndarray:
        """Every unit id present (sorted, unique)."""
        v = np.unique(self.lab)
        return v[v >= 0]


def aligned(u: Units, rank: int) -> Units:
    """``u`` with leading size-1 axes added up to ``rank`` (numpy broadcasting's alignment)."""
    extra = rank - u.rank
    if extra <= 0:
        return u
    shape = (1,) * extra + u.lab.shape
    return Units(u.lab.reshape(shape), u.axis + extra, None if u.null is None else u.null.reshape(shape),
                 u.zero_point)


def compress(lab: np.ndarray, *others: np.ndarray | None):
    """Reduce every axis along which ``lab`` (and each of ``others``) does not change to size 1."""
    arrays = [lab, *others]
    for ax in range(lab.ndim):
        if lab.shape[ax] > 1 and all(a is None or np.all(a == a.take([0], axis=ax)) for a in arrays):
            arrays = [None if a is None else a.take([0], axis=ax) for a in arrays]
    return arrays if others else arrays[0]


def normalize_null(lab: np.ndarray, null: np.ndarray | None) -> np.ndarray | None:
    """A null of ``lab``'s shape, or None when it is 0 at every position that holds a unit."""
    if null is None:
        return None
    null = np.broadcast_to(np.asarray(null, dtype=np.float64), lab.shape).copy()
    null[lab < 0] = 0.0
    return None if not np.any(null) else null


def unit_vector(u: Units) -> np.ndarray | None:
    """The unit ids along the unit axis when they are the same on every row (labels that vary only
    along the unit axis), else None."""
    if u.rows():
        return None
    return u.lab.reshape(-1) if u.lab.size == u.size else np.moveaxis(u.lab, u.axis, -1).reshape(-1)
