"""The unit flow: where a recurrence's units go, followed through the graph.

A *label tensor* is propagated from each recurrence's outputs: an integer array that broadcasts
against the real tensor and holds, on the axes that carry hidden units, the unit id ``d * H + j``.
Transpose/Squeeze/Unsqueeze/Reshape/Flatten/Gather/Slice and elementwise activations transform it;
weight consumers end it (each a ``Site``). Anything else that touches hidden units is refused with
the node's name, so a rewrite is exact or does not happen. The same flow follows the token
embedding's features (``EmbeddingFeatures``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from .errors import UnsupportedModelError

if TYPE_CHECKING:  # annotations only
    from .recurrence import Recurrence
from dataclasses import dataclass

# Ops that pass hidden units through unchanged, elementwise.
_ELEMENTWISE = {"Identity", "Dropout", "Relu", "Tanh", "Sigmoid", "LeakyRelu", "Elu", "Softsign",
                "Softplus", "HardSigmoid", "Cast", "Abs", "Neg"}


@dataclass
class Site:
    """A constant indexed by hidden units: ``node.inputs[input_index]`` along ``axis``.

    ``labels[p]`` is the unit id (``d * H + j``) at position ``p``. ``kind`` is ``weight`` (a
    Gemm/MatMul weight), ``recurrent_input`` (the next recurrent op's ``W`` input columns) or
    ``shape`` (a literal width in a Reshape target, at position ``axis``).
    """

    kind: str
    node: gs.Node
    input_index: int
    axis: int
    labels: np.ndarray
    recurrence: object | None = None  # the consuming recurrence (recurrent_input, state)


@dataclass
class EmbeddingFeatures:
    """The feature axis of the token embedding's output, followed through the graph like a
    layer's units (``Model.reduce_embedding``)."""

    name: str
    index: int = -1
    what = "features"


def _const_values(t) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def _concrete(shape, fill: int) -> list[int] | None:
    if shape is None:
        return None
    return [d if isinstance(d, (int, np.integer)) and d >= 0 else fill for d in shape]


def _reshape_target(in_shape: list[int], target: np.ndarray, allowzero: int) -> list[int]:
    out = [int(v) for v in target]
    for i, v in enumerate(out):
        if v == 0 and not allowzero:
            out[i] = in_shape[i]
    if -1 in out:
        known = int(np.prod([v for v in out if v != -1]))
        out[out.index(-1)] = int(np.prod(in_shape)) // max(known, 1)
    return out


def _compress(full: np.ndarray) -> np.ndarray:
    """Reduce every axis along which labels do not change to size 1."""
    for ax in range(full.ndim):
        if full.shape[ax] > 1 and np.all(full == full.take([0], axis=ax)):
            full = full.take([0], axis=ax)
    return full


class UnitFlow:
    """``Model``'s unit flow (a mixin: it reads ``self.graph``, ``self.source``, ``self._reader``)."""

    def _unit_sites(self, op: Recurrence) -> list[Site]:
        self._pending = {}
        sites: list[Site] = []
        for t, lab in op.unit_outputs():
            self._follow(op, t, lab, sites)
        self._check_concats(op, "concatenates hidden units with a tensor that is not from the same layer")
        if not sites:
            raise UnsupportedModelError(f"{self.source}: node {op.name!r} ({op.op_type}): its hidden states reach no layer")
        return sites

    def _check_concats(self, op, why: str) -> None:
        """Refuse a Concat the flow reached through only some of its inputs (the others come from
        elsewhere): its output mixes what is followed with what is not."""
        for (_, nid), pend in self._pending.items():
            node = next(n for n in self.graph.nodes if id(n) == nid)
            if len(pend) < len(node.inputs):
                self._refuse(op, node, why)

    def _refuse(self, op: Recurrence, node: gs.Node, why: str):
        raise UnsupportedModelError(
            f"{self.source}: node {node.name!r} ({node.op}) consumes the {op.what} of {op.name!r}: {why}")

    def _follow(self, op: Recurrence, t: gs.Variable, lab: np.ndarray, sites: list[Site]) -> None:
        if t in self.graph.outputs:
            raise UnsupportedModelError(
                f"{self.source}: graph output {t.name!r} exposes the {op.what} of {op.name!r}; remove that output")
        for node in list(t.outputs):
            try:
                self._consume(op, t, node, lab, sites)
            except (ValueError, IndexError, TypeError, KeyError, MemoryError) as exc:  # shapes it cannot follow
                self._refuse(op, node, f"cannot follow the units through it ({type(exc).__name__}: {exc})")

    def _last_axis_only(self, lab: np.ndarray) -> bool:
        return all(s == 1 for s in lab.shape[:-1])

    def _consume(self, op, t, node, lab, sites):
        o = node.op
        if o in _ELEMENTWISE:
            return self._follow(op, node.outputs[0], lab, sites)
        reader = self._reader.get(id(node)) if hasattr(self, "_reader") else None
        if reader is not None:
            role = reader.reads(node, t)
            if role == "state":
                if lab.ndim != 3 or lab.shape[1] != 1:
                    self._refuse(op, node, "a state input must be [directions, batch, hidden]")
                sites.append(Site("state", node, reader.state_input_index(node, t), 2, lab.reshape(-1),
                                  recurrence=reader))
                return
            if role != "x":
                self._refuse(op, node, "hidden states feed an input other than X or the initial state")
            if lab.ndim != 3 or lab.shape[0] != 1 or lab.shape[1] != 1:
                self._refuse(op, node, "units must be on the feature axis of X")
            sites.append(Site("recurrent_input", node, 1, 2, lab.reshape(-1), recurrence=reader))
            return
        if o in ("Gemm", "MatMul"):
            if node.inputs[0] is not t or not isinstance(node.inputs[1], gs.Constant):
                self._refuse(op, node, "only a constant weight on the right is supported")
            if o == "Gemm" and int(node.attrs.get("transA", 0)):
                self._refuse(op, node, "transA=1 is not supported")
            if not self._last_axis_only(lab):
                self._refuse(op, node, "units must be on the last axis")
            w = np.asarray(node.inputs[1].values)
            axis = (1 if int(node.attrs.get("transB", 0)) else 0) if o == "Gemm" else w.ndim - 2
            sites.append(Site("weight", node, 1, axis, lab.reshape(-1)))
            return
        if o == "Transpose":
            perm = node.attrs.get("perm", list(range(lab.ndim))[::-1])
            return self._follow(op, node.outputs[0], lab.transpose(perm), sites)
        if o in ("Squeeze", "Unsqueeze"):
            axes = node.attrs.get("axes")
            if axes is None and len(node.inputs) > 1:
                axes = _const_values(node.inputs[1])
                if axes is None:
                    self._refuse(op, node, "axes must be constant")
            if o == "Squeeze":
                if axes is None:
                    axes = [i for i, s in enumerate(node.inputs[0].shape or []) if s == 1]
                axes = [int(a) % lab.ndim for a in np.atleast_1d(axes)]
                if any(lab.shape[a] != 1 for a in axes):
                    self._refuse(op, node, "squeezes a unit axis")
                new = lab.squeeze(tuple(axes))
            else:
                rank = lab.ndim + len(np.atleast_1d(axes))
                new = lab
                for a in sorted(int(a) % rank for a in np.atleast_1d(axes)):
                    new = np.expand_dims(new, a)
            return self._follow(op, node.outputs[0], new, sites)
        if o == "Gather":
            if node.inputs[0] is not t:
                self._refuse(op, node, "hidden states used as indices")
            idx = _const_values(node.inputs[1])
            axis = int(node.attrs.get("axis", 0)) % lab.ndim
            if idx is None or idx.ndim > 1:
                self._refuse(op, node, "gathers with non-constant or multi-dimensional indices")
            if lab.shape[axis] != 1:  # selects units: rewritten with new indices when slicing
                return self._select_units(op, node, lab, axis, np.atleast_1d(idx) % lab.shape[axis],
                                          squeeze=idx.ndim == 0, sites=sites)
            new = lab.take(0, axis=axis) if idx.ndim == 0 else lab
            return self._follow(op, node.outputs[0], new, sites)
        if o == "Slice":
            axes = _const_values(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3].name else np.arange(lab.ndim)
            if axes is None:
                self._refuse(op, node, "slice axes must be constant")
            axes = [int(a) % lab.ndim for a in np.atleast_1d(axes)]
            unit_axes = [i for i, a in enumerate(axes) if lab.shape[a] != 1]
            if not unit_axes:
                return self._follow(op, node.outputs[0], lab, sites)
            if len(axes) != 1:
                self._refuse(op, node, "slices a unit axis together with other axes")
            vals = [_const_values(node.inputs[i]) if len(node.inputs) > i and node.inputs[i].name else None
                    for i in (1, 2, 4)]
            if vals[0] is None or vals[1] is None:
                self._refuse(op, node, "slice bounds must be constant")
            step = int(vals[2][0]) if vals[2] is not None else 1
            positions = np.arange(lab.shape[axes[0]])[slice(int(vals[0][0]), int(vals[1][0]), step)]
            return self._select_units(op, node, lab, axes[0], positions, squeeze=False, sites=sites)
        if o == "Concat":
            return self._concat(op, t, node, lab, sites)
        if o == "Shape" and self._batch_or_time_only(node, lab):
            return None  # reads the size of an axis without units (a zero state's batch size): no site

        if o in ("Reshape", "Flatten"):
            return self._reshape(op, t, node, lab, sites)
        self._refuse(op, node, f"{o} is not a layer onnxmod can follow")

    @staticmethod
    def _batch_or_time_only(node, lab) -> bool:
        """A ``Shape`` whose every reader takes constant entries of axes that carry no unit."""
        if node.attrs.get("start") is not None or node.attrs.get("end") is not None:
            return False
        for c in node.outputs[0].outputs:
            if c.op == "Slice" and len(c.inputs) in (3, 4) and all(_const_values(i) is not None for i in c.inputs[1:]):
                a, b = int(_const_values(c.inputs[1]).reshape(-1)[0]), int(_const_values(c.inputs[2]).reshape(-1)[0])
                picked = range(lab.ndim)[slice(a, b)]
            elif c.op == "Gather" and _const_values(c.inputs[1]) is not None:
                picked = [int(i) % lab.ndim for i in np.atleast_1d(_const_values(c.inputs[1]))]
            else:
                return False
            if any(lab.shape[i] != 1 for i in picked):
                return False
        return True

    def _select_units(self, op, node, lab, axis, positions, squeeze, sites):
        """A Slice/Gather that picks units: becomes a Gather whose indices are recomputed on slicing."""
        if any(s != 1 for i, s in enumerate(lab.shape) if i != axis):
            self._refuse(op, node, "selects units of a tensor with several unit axes")
        sites.append(Site("select", node, 0, axis, lab.reshape(-1).copy()))
        sites[-1].positions = np.asarray(positions, dtype=np.int64)
        sites[-1].squeeze = squeeze
        new = np.take(lab, positions, axis=axis)
        if squeeze:
            new = new.take(0, axis=axis)
        return self._follow(op, node.outputs[0], new, sites)

    def _concat(self, op, t, node, lab, sites):
        """Concat of unit-bearing tensors: labels concatenate once every input has arrived."""
        axis = int(node.attrs.get("axis", 0)) % lab.ndim
        pend = self._pending.setdefault((op.index, id(node)), {})
        for i, x in enumerate(node.inputs):
            if x is t and i not in pend:
                pend[i] = lab
                break
        if len(pend) < len(node.inputs):
            return None  # the other inputs arrive through other paths (checked when the flow ends)
        labs = [pend[i] for i in range(len(node.inputs))]
        if any(x.ndim != lab.ndim for x in labs):
            self._refuse(op, node, "concatenates tensors of different ranks")
        if all(x.shape[axis] == 1 for x in labs) and all(np.array_equal(x, labs[0]) for x in labs):
            new = labs[0]  # along a non-unit axis (time, batch): the layout of units is unchanged
        else:
            if any(any(s != 1 for i, s in enumerate(x.shape) if i != axis) for x in labs):
                self._refuse(op, node, "concatenates tensors with several unit axes")
            new = np.concatenate(labs, axis=axis)
        sites.append(Site("concat", node, 0, axis, new.reshape(-1).copy()))
        return self._follow(op, node.outputs[0], new, sites)

    def _reshape(self, op, t, node, lab, sites):
        in_shape = t.shape
        if in_shape is None or len(in_shape) != lab.ndim:
            self._refuse(op, node, "input shape unknown")
        results = []
        for fill in (1, 2):
            ins = _concrete(in_shape, fill)
            for a, s in enumerate(lab.shape):
                if s > 1:
                    ins[a] = s
            if np.prod(ins, dtype=object) > 10**8:  # the label tensor would not fit in memory
                self._refuse(op, node, f"its input shape {ins} is too large to follow")
            if node.op == "Flatten":
                ax = int(node.attrs.get("axis", 1)) % len(ins)
                outs = [int(np.prod(ins[:ax])), int(np.prod(ins[ax:]))]
                target = None
            else:
                target = _const_values(node.inputs[1])
                if target is None:
                    self._refuse(op, node, "reshape target must be constant")
                outs = _reshape_target(ins, target, int(node.attrs.get("allowzero", 0)))
            full = np.broadcast_to(lab, ins).reshape(outs)
            results.append(_compress(full))
        a, b = results
        if a.shape != b.shape or not np.array_equal(a, b):
            self._refuse(op, node, "merges a unit axis with a dynamic axis")
        new = a
        if node.op == "Reshape":
            labeled = [i for i, s in enumerate(new.shape) if s > 1]
            lits = [i for i in labeled if int(target[i]) > 0]
            if lits:
                if len(labeled) != 1:
                    self._refuse(op, node, "literal sizes on several unit axes")
                sites.append(Site("shape", node, 1, lits[0], new.reshape(-1)))
        return self._follow(op, node.outputs[0], new, sites)

