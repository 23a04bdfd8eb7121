"""How an unrolled chain reads its input one step at a time, whichever way the exporter wrote it.

A step read is a tensor ``x`` ``[N, I]`` that *is* step ``s`` of a tensor ``source`` along its time
axis: ``Gather(source, s)``, ``Squeeze(Slice(source, s, s + 1))``, ``Squeeze`` of a ``Split``
output of size 1, or ``SequenceAt(SplitToSequence(source), s)``. The value decides, not the op:
every one of them is the same slice of the same tensor.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .tensors import constant, int_constant


@dataclass(frozen=True)
class StepRead:
    """Step ``step`` of ``source`` along ``axis``: the tensor ``x`` and the nodes that read it (the
    first computes ``x``; all of them are the read's, not the cell's)."""

    source: gs.Variable
    axis: int
    step: int
    x: gs.Variable
    nodes: tuple

    @property
    def name(self) -> str:
        return self.nodes[0].name


def _axis(a: int, t) -> int | None:
    """Axis ``a`` of ``t`` made non-negative (None when negative and ``t``'s rank is unknown)."""
    if a >= 0:
        return a
    return a % len(t.shape) if t.shape is not None else None


def _index(i: int, t, axis: int) -> int | None:
    """Position ``i`` along ``axis`` of ``t`` made non-negative (None when negative and the length unknown)."""
    if i >= 0:
        return i
    n = t.shape[axis] if t.shape is not None and axis < len(t.shape) else None
    return i + int(n) if isinstance(n, (int, np.integer)) and i + int(n) >= 0 else None


def _squeezed_axes(node) -> list[int] | None:
    if "axes" in node.attrs:
        return [int(a) for a in np.atleast_1d(node.attrs["axes"])]
    if len(node.inputs) > 1 and node.inputs[1].name:
        return int_constant(node.inputs[1])
    return None


def _gather(node, x) -> StepRead | None:
    if len(node.inputs) != 2 or isinstance(node.inputs[0], gs.Constant):
        return None
    s = constant(node.inputs[1])
    if s is None or s.ndim != 0:
        return None
    src = node.inputs[0]
    axis = _axis(int(node.attrs.get("axis", 0)), src)
    step = None if axis is None else _index(int(s), src, axis)
    return None if step is None else StepRead(src, axis, step, x, (node,))


def _sequence_at(node, x, keepdims: int) -> StepRead | None:
    seq = node.inputs[0]
    split = seq.inputs[0] if seq.inputs else None
    if split is None or split.op != "SplitToSequence" or len(split.inputs) != 1 \
            or int(split.attrs.get("keepdims", 1)) != keepdims:
        return None  # sizes given (not one step each), or another layout
    s = constant(node.inputs[1])
    src = split.inputs[0]
    axis = _axis(int(split.attrs.get("axis", 0)), src)
    step = None if s is None or axis is None else _index(int(s.reshape(-1)[0]), src, axis)
    return None if step is None else StepRead(src, axis, step, x, (node,))


def _one_step(node, x, squeeze) -> StepRead | None:
    """``Squeeze(t)`` where ``t`` is a one-step Slice/Split/SequenceAt of a tensor on the squeezed axis."""
    t = node.inputs[0]
    inner = t.inputs[0] if t.inputs else None
    axes = _squeezed_axes(node)
    if inner is None or axes is None or len(axes) != 1:
        return None
    if inner.op == "Slice":
        src = inner.inputs[0]
        a = _axis(axes[0], src)
        starts, ends = int_constant(inner.inputs[1]), int_constant(inner.inputs[2])
        ax = int_constant(inner.inputs[3]) if len(inner.inputs) > 3 and inner.inputs[3].name else [0]
        st = int_constant(inner.inputs[4]) if len(inner.inputs) > 4 and inner.inputs[4].name else [1]
        if None in (starts, ends, ax, st) or len(starts) != 1 or st != [1] or _axis(ax[0], src) != a:
            return None
        step = _index(starts[0], src, a)  # the Squeeze proves the slice is one step long
        return None if step is None else StepRead(src, a, step, x, (squeeze, inner))
    if inner.op == "Split":
        src = inner.inputs[0]
        a = _axis(int(inner.attrs.get("axis", 0)), src)
        if a is None or _axis(axes[0], src) != a:
            return None
        k = next(i for i, o in enumerate(inner.outputs) if o is t)
        sizes = (int_constant(inner.inputs[1]) if len(inner.inputs) > 1 and inner.inputs[1].name
                 else inner.attrs.get("split"))
        if sizes is None:  # equal parts: the Squeeze proves each is one step
            return StepRead(src, a, k, x, (squeeze,))
        return StepRead(src, a, int(sum(sizes[:k])), x, (squeeze,)) if sizes[k] == 1 else None
    if inner.op == "SequenceAt":
        r = _sequence_at(inner, t, keepdims=1)
        return None if r is None or _axis(axes[0], r.source) != r.axis else StepRead(
            r.source, r.axis, r.step, x, (squeeze, inner))
    return None


def step_read(x) -> StepRead | None:
    """How tensor ``x`` is one step of another tensor, or None."""
    if isinstance(x, gs.Constant) or not x.inputs:
        return None
    node = x.inputs[0]
    if node.op == "Gather":
        return _gather(node, x)
    if node.op == "SequenceAt":
        return _sequence_at(node, x, keepdims=0)
    if node.op == "Squeeze":
        return _one_step(node, x, node)
    return None


def step_reads(graph: gs.Graph, axes=(0, 1)) -> list[list[StepRead]]:
    """Every tensor the graph reads step by step along a time axis in ``axes``: per tensor, its reads
    of steps 0 .. T-1 in order (T >= 2, every step read), in the order the graph first reads them."""
    by_source: dict[tuple[int, int], dict[int, StepRead]] = defaultdict(dict)
    for node in graph.nodes:
        if node.op not in ("Gather", "SequenceAt", "Squeeze"):
            continue
        r = step_read(node.outputs[0])
        if r is not None and r.axis in axes and isinstance(r.source, gs.Variable):
            by_source[(id(r.source), r.axis)][r.step] = r
    return [[reads[s] for s in range(len(reads))] for reads in by_source.values()
            if len(reads) >= 2 and sorted(reads) == list(range(len(reads)))]
