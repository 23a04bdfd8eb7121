"""The unit flow inside a cell: which weight rows and columns, bias entries and element-wise
parameters of a step (``step.py``) belong to which unit, so units can be removed physically.

The graph layer's unit flow (``onnxmod.flow``) follows a recurrence's outputs forward to the
weights that read them. Inside a cell the flow goes both ways: a unit's new state is computed
from gate pre-activations whose columns are the unit's too. So every *position* of the last axis
of every tensor in the step is a node of a union-find:

* element-wise ops (``Add``, ``Mul``, ``Tanh``, ``Relu``, …) tie the positions of their operands of
  the same width together; a constant operand of that width is an element-wise parameter (a bias,
  IndRNN's recurrent vector, DuRNN's clipped ``u``), indexed by those positions;
* a ``MatMul``/``Gemm`` by a constant weight ties nothing: its rows are indexed by its input's
  positions, its columns by fresh output positions;
* ``Concat``/``Split``/``Slice``/``Gather`` on the last axis rearrange positions;
* the new value of state ``k`` ties each of its positions to the same position of state ``k``.

A *unit* is a class that holds a position of a state vector (an LSTM's ``h`` and ``c`` at ``j`` are
one unit: they are tied element-wise), or a position of what the step emits (a value the cell
computes from its states and input without carrying it is a neuron all the same: an unrolled chain
shows no state for it). Other classes (DuRNN's gate ``g``, any projection between states) are no
units and stay whole. Anything that mixes positions other than through a
constant weight — a reduction or softmax over the unit axis, a reshape merging it with another
axis, two units of one state tied together, an input feature tied to a unit — is refused with
the node's name: a rewrite is exact or it does not happen.

Each unit's *rule* (``logistic`` or ``relu``, SPEC §3) is read from the op that produces its value
in the step's output: ``Relu`` gives ``relu``, anything else (``Tanh``, a sigmoid-gated blend)
``logistic``.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .. import optable
from .step import Step, StepError


def _values(t):
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def _axes(node, rank, default=None):
    """A node's ``axes`` (attribute, or its second input when constant), normalized; ``default``
    when it has none; raises when they are not constant."""
    if "axes" in node.attrs:
        a = node.attrs["axes"]
    elif len(node.inputs) > 1 and node.inputs[1].name:
        a = _values(node.inputs[1])
        if a is None:
            raise StepError(node, "its axes are not constant")
    else:
        return default
    return sorted(int(x) % rank for x in np.atleast_1d(a))


class CellFlow:
    """The positions of a step's tensors, their classes, the units and where they are indexed."""

    def __init__(self, step: Step):
        self.step = step
        self.parent: list[int] = []
        self.states: list[dict] = []  # per root: {state k: {position i}}
        self.inputs: list[set] = []  # per root: input features
        self.pos: dict[int, np.ndarray] = {}  # id(tensor) -> position ids of its last axis
        self.rank: dict[int, int] = {}
        self.act: dict[int, np.ndarray] = {}  # id(tensor) -> name of the op that produced each position
        self.sites: list[tuple] = []
        g = step.graph
        for k, s in enumerate(step.states):
            self._set(s, self._fresh(len_=step.widths[k], state=k), 2, "state")
        self._set(step.x, self._fresh(len_=step.input_size, input_=True), 2, "input")
        for node in g.nodes:
            self._node(node)
        for k, (s, s2) in enumerate(zip(step.states, step.new_states)):
            p = self.pos.get(id(s2))
            if p is None or len(p) != step.widths[k]:
                raise StepError(s2.inputs[0] if s2.inputs else s2,
                                f"the new value of state {k} is not a [batch, {step.widths[k]}] tensor of the cell")
            self._union_all(self.pos[id(s)], p, self._producer(s2), f"it is the new value of state {k}")
        self._number_units()

    # ---- union-find ---------------------------------------------------------------------------
    def _fresh(self, len_: int, state: int | None = None, input_: bool = False) -> np.ndarray:
        start = len(self.parent)
        for i in range(int(len_)):
            self.parent.append(start + i)
            self.states.append({state: {i}} if state is not None else {})
            self.inputs.append({i} if input_ else set())
        return np.arange(start, start + int(len_))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def _union(self, a: int, b: int, node, why: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        states = {k: set(v) for k, v in self.states[ra].items()}
        for k, v in self.states[rb].items():
            states.setdefault(k, set()).update(v)
        inputs = self.inputs[ra] | self.inputs[rb]
        for k, v in states.items():
            if len(v) > 1:
                i, j = sorted(v)[:2]
                raise StepError(node, f"ties positions {i} and {j} of state {k} together ({why}): it mixes units "
                                      f"through something that is not a weight")
        if inputs and states:
            raise StepError(node, f"ties an input feature to a unit of state {min(states)} element-wise ({why})")
        if len(inputs) > 1:
            raise StepError(node, f"ties input features {sorted(inputs)[:2]} together element-wise ({why})")
        self.parent[rb] = ra
        self.states[ra], self.inputs[ra] = states, inputs

    def _union_all(self, a: np.ndarray, b: np.ndarray, node, why: str) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            self._union(x, y, node, why)

    # ---- propagation --------------------------------------------------------------------------
    def _set(self, t, pos, rank, act):
        self.pos[id(t)], self.rank[id(t)] = np.asarray(pos, dtype=np.int64), int(rank)
        self.act[id(t)] = (np.full(len(pos), act, dtype=object) if isinstance(act, str)
                           else np.asarray(act, dtype=object))

    @staticmethod
    def _producer(t):
        """The node that computes ``t`` (through the Identity nodes a cut step adds), else ``t``."""
        while t.inputs and t.inputs[0].op == "Identity" and t.inputs[0].inputs and t.inputs[0].inputs[0].inputs:
            t = t.inputs[0].inputs[0]
        return t.inputs[0] if t.inputs else t

    def _tracked(self, t) -> bool:
        return id(t) in self.pos

    def _node(self, node: gs.Node) -> None:
        ins = [i for i in node.inputs if i.name]
        tracked = [i for i in ins if self._tracked(i)]
        if not tracked:
            return  # computes from constants only (bound when the step was cut out)
        op = node.op
        t0 = tracked[0]
        P, r, A = self.pos[id(t0)], self.rank[id(t0)], self.act[id(t0)]
        out = node.outputs[0] if node.outputs else None
        if optable.is_unary(op) or (op == "Clip" and len(tracked) == 1 and node.inputs[0] is t0):
            return self._set(out, P, r, A if optable.is_plumbing(op) else op)
        if optable.is_elementwise(op):
            return self._elementwise(node, tracked)
        if op in ("MatMul", "Gemm"):
            return self._matmul(node, tracked)
        if op == "Concat":
            return self._concat(node, tracked)
        if op == "Split":
            return self._split(node, t0, P, r, A)
        if op == "Slice":
            return self._slice(node, t0, P, r, A)
        if op == "Gather":
            return self._gather(node, t0, P, r, A)
        if op in ("Unsqueeze", "Squeeze", "Transpose", "Reshape", "Flatten"):
            return self._layout(node, t0, P, r, A)
        if op.startswith("Reduce"):
            axes = _axes(node, r, default=None)
            if axes is None and int(node.attrs.get("noop_with_empty_axes", 0)):
                return self._set(out, P, r, A)
            if axes is None or r - 1 in axes:
                raise StepError(node, f"mixes units: {op} over the unit axis")
            keep = int(node.attrs.get("keepdims", 1))
            return self._set(out, P, r if keep else r - len(axes), A)
        if optable.mixes_inside_a_cell(op):
            raise StepError(node, f"mixes units: {op} over the unit axis")
        if op in ("Shape", "Size"):
            raise StepError(node, "reads the shape of a tensor that carries units (its width changes when units go)")
        raise StepError(node, f"{op} is not an op onnxmod can follow units through")

    def _elementwise(self, node, tracked):
        width = max(len(self.pos[id(t)]) for t in tracked)
        wide = [t for t in tracked if len(self.pos[id(t)]) == width]
        if any(1 < len(self.pos[id(t)]) < width for t in tracked):
            raise StepError(node, "combines tensors whose unit axes have different widths")
        base = wide[0]
        for t in wide[1:]:
            self._union_all(self.pos[id(base)], self.pos[id(t)], node, f"{node.op} combines them element-wise")
        for i, t in enumerate(node.inputs):
            v = _values(t)
            if v is not None and v.ndim and v.shape[-1] == width and width > 1:
                self.sites.append(("param", node, i, v.ndim - 1, node.outputs[0]))
            elif v is not None and v.ndim and v.shape[-1] not in (1, width):
                raise StepError(node, f"a constant of shape {list(v.shape)} does not broadcast over {width} units")
        rank = max(self.rank[id(t)] for t in tracked)
        act = self.act[id(base)] if node.op in ("Where",) else node.op
        self._set(node.outputs[0], self.pos[id(base)], rank, act)

    def _matmul(self, node, tracked):
        a, b = node.inputs[0], node.inputs[1]
        w = _values(b)
        if len(tracked) > 1 or a is not tracked[0] or w is None or w.ndim < 2:
            raise StepError(node, "multiplies by something other than a constant weight on the right: "
                                  "it mixes units through something that is not a weight")
        if node.op == "Gemm" and int(node.attrs.get("transA", 0)):
            raise StepError(node, "transA=1 on a tensor that carries units")
        trans = node.op == "Gemm" and int(node.attrs.get("transB", 0))
        rows, cols = (w.ndim - 1, w.ndim - 2) if trans else (w.ndim - 2, w.ndim - 1)
        if w.shape[rows] != len(self.pos[id(a)]):
            raise StepError(node, f"its weight has {w.shape[rows]} rows for {len(self.pos[id(a)])} units")
        out = node.outputs[0]
        self._set(out, self._fresh(w.shape[cols]), self.rank[id(a)], node.op)
        self.sites.append(("param", node, 1, rows, a))
        self.sites.append(("param", node, 1, cols, out))
        if node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2].name:
            c = _values(node.inputs[2])
            if c is None:
                raise StepError(node, "its bias is not a constant")
            if c.ndim and c.shape[-1] > 1:
                self.sites.append(("param", node, 2, c.ndim - 1, out))

    def _concat(self, node, tracked):
        r = self.rank[id(tracked[0])]
        axis = int(node.attrs.get("axis", 0)) % r
        if axis != r - 1:
            base = tracked[0]
            for t in tracked[1:]:
                self._union_all(self.pos[id(base)], self.pos[id(t)], node, "Concat along another axis")
            return self._set(node.outputs[0], self.pos[id(base)], r, self.act[id(base)])
        parts, acts = [], []
        for t in node.inputs:
            if self._tracked(t):
                parts.append(self.pos[id(t)])
                acts.append(self.act[id(t)])
            else:
                v = _values(t)
                if v is None:
                    raise StepError(node, "concatenates units with a value that is not constant")
                parts.append(self._fresh(v.shape[-1]))
                acts.append(np.full(v.shape[-1], "Constant", dtype=object))
        self._set(node.outputs[0], np.concatenate(parts), r, np.concatenate(acts))

    def _split_sizes(self, node, width):
        if len(node.inputs) > 1 and node.inputs[1].name:
            v = _values(node.inputs[1])
            if v is None:
                raise StepError(node, "its split sizes are not constant")
            return [int(x) for x in v.reshape(-1)]
        if node.attrs.get("split"):
            return [int(x) for x in node.attrs["split"]]
        n = len(node.outputs)
        if width % n:
            raise StepError(node, f"splits {width} units into {n} unequal parts")
        return [width // n] * n

    def _split(self, node, t0, P, r, A):
        axis = int(node.attrs.get("axis", 0)) % r
        if axis != r - 1:
            for o in node.outputs:
                self._set(o, P, r, A)
            return
        sizes = self._split_sizes(node, len(P))
        edges = np.cumsum([0, *sizes])
        for o, a, b in zip(node.outputs, edges[:-1], edges[1:]):
            self._set(o, P[a:b], r, A[a:b])
        self.sites.append(("split", node, 1, axis, t0))

    def _slice(self, node, t0, P, r, A):
        vals = [_values(node.inputs[i]) if len(node.inputs) > i and node.inputs[i].name else None for i in range(5)]
        if vals[1] is None or vals[2] is None or (len(node.inputs) > 3 and node.inputs[3].name and vals[3] is None):
            raise StepError(node, "its bounds are not constant")
        axes = [int(a) % r for a in (vals[3].reshape(-1) if vals[3] is not None else range(len(vals[1].reshape(-1))))]
        steps = vals[4].reshape(-1) if vals[4] is not None else np.ones(len(axes), np.int64)
        if r - 1 not in axes:
            return self._set(node.outputs[0], P, r, A)
        k = axes.index(r - 1)
        if int(steps[k]) != 1:
            raise StepError(node, "slices the unit axis with a step other than 1")
        sel = slice(int(vals[1].reshape(-1)[k]), int(vals[2].reshape(-1)[k]))
        self._set(node.outputs[0], P[sel], r, A[sel])
        self.sites.append(("slice", node, k, r - 1, t0))

    def _gather(self, node, t0, P, r, A):
        if node.inputs[0] is not t0:
            raise StepError(node, "uses values that carry units as indices")
        axis = int(node.attrs.get("axis", 0)) % r
        idx = _values(node.inputs[1])
        if idx is None:
            raise StepError(node, "gathers by indices that are not constant")
        if axis != r - 1:
            return self._set(node.outputs[0], P, r - (idx.ndim == 0) + max(idx.ndim - 1, 0), A)
        if idx.ndim != 1:
            raise StepError(node, "picks single units out of the unit axis")
        idx = idx.astype(np.int64) % len(P)
        self._set(node.outputs[0], P[idx], r, A[idx])
        self.sites.append(("gather", node, 1, axis, t0))

    def _layout(self, node, t0, P, r, A):
        op, out = node.op, node.outputs[0]
        if op == "Transpose":
            perm = node.attrs.get("perm", list(range(r))[::-1])
            if int(perm[-1]) != r - 1:
                raise StepError(node, "moves the unit axis")
            return self._set(out, P, r, A)
        if op == "Unsqueeze":
            raw = node.attrs.get("axes")
            if raw is None:
                raw = _values(node.inputs[1]) if len(node.inputs) > 1 else None
                if raw is None:
                    raise StepError(node, "its axes are not constant")
            n = len(np.atleast_1d(raw))
            if (r + n - 1) in [int(a) % (r + n) for a in np.atleast_1d(raw)]:
                raise StepError(node, "adds an axis after the unit axis")
            return self._set(out, P, r + n, A)
        if op == "Squeeze":
            axes = _axes(node, r, default=None)
            if axes is None or r - 1 in axes:
                if len(P) != 1 or axes is None:
                    raise StepError(node, "squeezes without saying which axes (the unit axis may go)")
            return self._set(out, P, r - len(axes), A)
        if op == "Flatten":
            axis = int(node.attrs.get("axis", 1)) % max(r, 1)
            if axis != r - 1:
                raise StepError(node, "merges the unit axis with another axis")
            return self._set(out, P, 2, A)
        target = _values(node.inputs[1])  # Reshape
        if target is None or not target.size:
            raise StepError(node, "reshapes to a shape that is not constant")
        last = int(target.reshape(-1)[-1])
        if last not in (len(P), 0) or (last == 0 and len(target.reshape(-1)) != r):
            raise StepError(node, "merges the unit axis with another axis")
        if last > 0:
            self.sites.append(("reshape", node, 1, len(target.reshape(-1)) - 1, out))
        self._set(out, P, len(target.reshape(-1)), A)

    # ---- units ---------------------------------------------------------------------------------
    def _number_units(self) -> None:
        """Units numbered in the order the step's output emits them, then the states' other units."""
        self.unit_of: dict[int, int] = {}
        y = self.step.y
        py = self.pos.get(id(y))
        if py is None:
            raise StepError(self._producer(y), "its per-step output is not computed from the cell's state")
        for p in py.tolist():
            root = self.find(p)
            if self.inputs[root]:
                raise StepError(self._producer(y), "its per-step output passes input features through element-wise: "
                                                   "they are no units")
            # a position of a state, or a value the cell emits without carrying it (a neuron all the same)
            if root in self.unit_of:
                raise StepError(self._producer(y), "its per-step output emits two values of one unit (positions tied "
                                                   "element-wise, as an LSTM's h and c): not supported yet")
            self.unit_of[root] = len(self.unit_of)
        self.emitted = len(self.unit_of)
        for s in self.step.states:
            for p in self.pos[id(s)].tolist():
                root = self.find(p)
                if root not in self.unit_of:
                    self.unit_of[root] = len(self.unit_of)

    @property
    def units(self) -> int:
        return len(self.unit_of)

    def labels(self, t) -> np.ndarray:
        """Unit id per position of tensor ``t`` (-1 where a position is no unit)."""
        return np.array([self.unit_of.get(self.find(p), -1) for p in self.pos[id(t)].tolist()], dtype=np.int64)

    def state_labels(self, k: int) -> np.ndarray:
        return self.labels(self.step.states[k])

    def activations(self) -> np.ndarray:
        """Per unit, the op that produces its value in the step's output (or its state's new value)."""
        out = np.full(self.units, "", dtype=object)
        for t in [self.step.y, *self.step.new_states]:
            for u, a in zip(self.labels(t).tolist(), self.act[id(t)].tolist()):
                if u >= 0 and not out[u]:
                    out[u] = a
        return out

    def rules(self) -> np.ndarray:
        return np.array(["relu" if a == "Relu" else "logistic" for a in self.activations()], dtype=object)

    def extra_units(self) -> list[tuple[int, int, int]]:
        """(unit, state k, position) for the units the step's output does not emit."""
        out = []
        seen = set(range(self.emitted))
        for k in range(self.step.n_states):
            for i, u in enumerate(self.state_labels(k).tolist()):
                if u not in seen:
                    seen.add(u)
                    out.append((u, k, i))
        return out

    # ---- the rewrite ---------------------------------------------------------------------------
    def alive(self, keep_units: np.ndarray, keep_input: np.ndarray | None):
        def alive(t) -> np.ndarray:
            res = []
            for p in self.pos[id(t)].tolist():
                root = self.find(p)
                if root in self.unit_of:
                    res.append(bool(keep_units[self.unit_of[root]]))
                elif self.inputs[root] and keep_input is not None:
                    res.append(bool(keep_input[next(iter(self.inputs[root]))]))
                else:
                    res.append(True)
            return np.array(res, dtype=bool)
        return alive

    def slice(self, keep_units: np.ndarray, keep_input: np.ndarray | None = None,
              zero_units: np.ndarray | None = None, zero_input: np.ndarray | None = None) -> None:
        """Remove in place every position of a unit not in ``keep_units`` (bool ``[units]``) and every
        input feature not in ``keep_input`` (bool ``[input_size]``); parameters at the positions of
        ``zero_units`` / ``zero_input`` (kept, but inert) are set to 0."""
        alive = self.alive(np.asarray(keep_units, bool), None if keep_input is None else np.asarray(keep_input, bool))
        zu = np.zeros(self.units, bool) if zero_units is None else np.asarray(zero_units, bool)
        zi = None if zero_input is None else np.asarray(zero_input, bool)
        zero = self.alive(~zu, None if zi is None else ~zi)  # False where inert
        done: dict[tuple[int, int], np.ndarray] = {}
        for kind, node, i, axis, ref in self.sites:
            keep = alive(ref)
            if kind == "param":
                key = (id(node), i)
                v = done.get(key)
                v = np.asarray(node.inputs[i].values) if v is None else v
                base = (v.shape[axis] == len(keep))
                if not base:
                    continue  # already sliced along this axis by another site of the same weight
                v = np.take(v, np.flatnonzero(keep), axis=axis)
                z = ~zero(ref)[keep]
                if z.any():
                    idx = [slice(None)] * v.ndim
                    idx[axis] = z
                    v = v.copy()
                    v[tuple(idx)] = 0
                done[key] = v
            elif kind == "split":
                sizes = self._split_sizes(node, len(keep))
                edges = np.cumsum([0, *sizes])
                new = [int(keep[a:b].sum()) for a, b in zip(edges[:-1], edges[1:])]
                if len(node.inputs) > 1 and node.inputs[1].name:
                    node.inputs[1] = gs.Constant(f"{node.name}/split_sizes", np.array(new, dtype=np.int64))
                else:
                    node.attrs["split"] = new
            elif kind == "slice":
                vals = [np.asarray(node.inputs[j].values).reshape(-1).copy() for j in (1, 2)]
                a, b, _ = slice(int(vals[0][i]), int(vals[1][i])).indices(len(keep))
                vals[0][i], vals[1][i] = int(keep[:a].sum()), int(keep[:b].sum())
                node.inputs[1] = gs.Constant(f"{node.name}/starts_sliced", vals[0].astype(np.int64))
                node.inputs[2] = gs.Constant(f"{node.name}/ends_sliced", vals[1].astype(np.int64))
            elif kind == "gather":
                idx = np.asarray(node.inputs[1].values).astype(np.int64) % len(keep)
                rank = np.cumsum(keep) - 1
                node.inputs[1] = gs.Constant(f"{node.name}/indices_sliced", rank[idx[keep[idx]]].astype(np.int64))
            elif kind == "reshape":
                target = np.asarray(node.inputs[1].values).copy()
                target[axis] = int(keep.sum())
                node.inputs[1] = gs.Constant(f"{node.name}/shape_sliced", target)
        for (nid, i), v in done.items():
            node = next(n for n in self.step.graph.nodes if id(n) == nid)
            node.inputs[i] = gs.Constant(f"{node.name}/in{i}", np.ascontiguousarray(v))
        for s in self.step.states:
            s.shape = ["N", int(alive(s).sum())]
        x = self.step.x
        x.shape = ["N", int(alive(x).sum())]
        for t in self.step.graph.tensors().values():  # widths changed: shape inference works them out again
            if isinstance(t, gs.Variable) and t not in self.step.graph.inputs:
                t.shape = None
