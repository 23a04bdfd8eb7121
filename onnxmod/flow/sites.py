"""Where the unit flow found units: *sites*, and what removing units does to each.

A site is a place in the graph indexed by units: a constant to slice (a weight's input rows, an
element-wise parameter), a literal size to rewrite (a reshape target, split sizes), a selection to
recompute (a ``Gather``/``Slice`` picking units), a recurrence reading units (its input weight's
columns, its initial state), or a tensor to *re-widen*: where the flow cannot follow the units
exactly, the sliced tensor is put back to its full width with each removed unit's value there
(its ``null``), so what follows computes exactly what the model with those units held at 0 does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .units import Units


@dataclass
class Site:
    """``kind``: ``weight`` (a linear reader's constant, units along ``axis`` of
    ``node.inputs[input_index]``), ``param`` (an element-wise constant), ``shape`` (the literal at
    flat index ``axis`` of the constant ``node.inputs[input_index]``), ``split`` (split sizes),
    ``select`` (a ``Gather``/``Slice`` over units), ``recurrent_input`` / ``state`` (a recurrence
    reading units), ``widen`` (``node.inputs[input_index]`` read at full width; ``node`` None: a
    graph output). ``labels``: unit ids along the site's axis (``-1``: a position holding no unit)."""

    kind: str
    node: gs.Node | None
    input_index: int
    axis: int
    labels: np.ndarray
    recurrence: object | None = None  # the recurrence reading the units (recurrent_input, state)
    units: Units | None = None  # the full description where the site needs it (param, widen)
    null: np.ndarray | None = None  # weight: a removed unit's value at each position (None: 0)
    positions: np.ndarray | None = None  # select: the positions picked
    squeeze: bool = False  # select: a scalar index (the axis goes)
    sizes: list = field(default_factory=list)  # split: the original sizes
    tensor: gs.Variable | None = None  # widen: the tensor put back to full width
    why: str = ""  # widen: why the flow stopped following there


@dataclass
class EmbeddingFeatures:
    """The feature axis of the token embedding's output, followed through the graph like a
    layer's units (``Model.reduce_embedding``)."""

    name: str
    index: int = -1
    what = "features"


def kept_positions(labels: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Positions (of a 1-D label vector) that stay: kept units and positions holding no unit."""
    return np.flatnonzero(np.isin(labels, kept) | (labels < 0))


def take_rows(values: np.ndarray, u: Units, offset: int, kept: np.ndarray, zero: np.ndarray | None = None):
    """``values`` (a constant aligned to ``u``'s axes from axis ``offset`` of ``u``) with only the
    kept positions along the unit axis, row by row (every row keeps as many); positions of units in
    ``zero`` set to 0."""
    rank = u.rank
    v = np.asarray(values)
    v_al = v.reshape((1,) * (rank - v.ndim) + v.shape)
    lab = u.lab
    target = tuple(max(a, b) if a == 1 or b == 1 else a for a, b in zip(v_al.shape, lab.shape))
    full = np.broadcast_to(v_al, target)
    labs = np.broadcast_to(lab, tuple(t if s > 1 else 1 for t, s in zip(target, lab.shape)))
    keep = np.isin(labs, kept) | (labs < 0)
    keep_b = np.broadcast_to(keep, target)
    moved = np.moveaxis(full, u.axis, -1)
    mask = np.moveaxis(keep_b, u.axis, -1)
    counts = mask.sum(axis=-1)
    width = int(counts.reshape(-1)[0]) if counts.size else 0
    if counts.size and not np.all(counts == width):
        raise ValueError("rows keep different numbers of units")
    out = moved[mask].reshape(*moved.shape[:-1], width)
    if zero is not None and zero.size:
        zl = np.moveaxis(np.broadcast_to(np.isin(labs, zero), target), u.axis, -1)[mask].reshape(out.shape)
        out = np.where(zl, 0, out)
    out = np.moveaxis(out, -1, u.axis)
    # drop the leading axes added for alignment, and compress axes the constant did not have
    out = out.reshape(out.shape[rank - v.ndim:]) if v.ndim < rank else out
    for a in range(out.ndim):
        src = v.shape[a]
        if src == 1 and out.shape[a] > 1 and np.all(out == out.take([0], axis=a)):
            out = out.take([0], axis=a)
    return np.ascontiguousarray(out.astype(v.dtype))
