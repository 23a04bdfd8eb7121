"""The graph model: load an ONNX model, normalize it and find what decomposition rewrites.

Three nouns, as in onnx-graphsurgeon: the *graph* (``gs.Graph``), its *nodes* and *tensors*.
onnxmod adds:

* ``Recurrence`` (``onnxmod.recurrence``) — one recurrent layer, in whatever form a front-end
  recognized it, and its *sites*:
  every constant that is indexed by its hidden units downstream (the next layer's ``W`` columns,
  a ``Gemm``/``MatMul`` weight's rows, a ``Reshape`` target's literal width).
* ``Head`` — the output layer (``Gemm``, or ``MatMul`` [+ ``Add``]) whose columns are the classes.
* ``Model`` — the normalized graph with its recurrent ops, head and I/O shape (1:1, 1:N, M:1, M:N).

Unit flow is found by propagating a *label tensor* from each op's outputs: an integer array that
broadcasts against the real tensor and holds, on the axes that carry hidden units, the unit id
``d * H + j``. Transpose/Squeeze/Unsqueeze/Reshape/Flatten/Gather/Slice and elementwise activations
transform it; weight consumers end it. Anything else that touches hidden units is refused with the
node's name, so a rewrite is exact or does not happen.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .errors import OnnxmodError, UnsupportedModelError, UsageError
from .prepare import prepare_graph
from .recurrence import Recurrence, describe_unrecognized, recognize
from .rewrite import normalize
from .units import UnitSelection

# Ops that pass hidden units through unchanged, elementwise.
_ELEMENTWISE = {"Identity", "Dropout", "Relu", "Tanh", "Sigmoid", "LeakyRelu", "Elu", "Softsign",
                "Softplus", "HardSigmoid", "Cast", "Abs", "Neg"}
_POST_HEAD = {"Softmax", "LogSoftmax", "Identity"}

SHAPES = ("1:1", "1:N", "M:1", "M:N")


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
    recurrence: Recurrence | None = None  # the consuming recurrence (recurrent_input, state)


@dataclass
class EmbeddingFeatures:
    """The feature axis of the token embedding's output, followed through the graph like a
    layer's units (``Model.reduce_embedding``)."""

    name: str
    index: int = -1
    what = "features"


@dataclass
class Head:
    node: gs.Node  # Gemm or MatMul
    weight_axis: int  # axis of the weight indexing classes
    bias_node: gs.Node | None  # Add holding the bias (MatMul heads), or the Gemm itself
    bias_index: int | None
    output: gs.Variable  # tensor holding the logits
    num_classes: int


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


class Model:
    """A normalized ONNX model ready for tracing and rewriting.

    ``Model.load(path)`` or ``Model(proto, source=...)``. The proto given is never modified.
    """

    def __init__(self, proto: onnx.ModelProto, source: str = "<model>", _normalized: gs.Graph | None = None,
                 _lifted: dict | None = None):
        self.source = source
        self.original = proto
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        self.opset = {o.domain: o.version for o in proto.opset_import}
        if _normalized is not None:
            graph = _normalized
        else:
            graph, self.layout_rewrites = prepare_graph(proto, source)
            self.rewrites = normalize(graph)  # exporters' readouts -> forms the unit flow follows
        self.graph = graph
        if not graph.inputs:
            raise UnsupportedModelError(f"{source}: the graph has no input")
        self.inputs = list(graph.inputs)
        self.input = graph.inputs[0]
        self.recurrent = self._find_recurrent_ops()
        if _normalized is None:
            # front-ends that lift a form into native ops (a Loop body, say) leave readouts the rules may
            # now apply to; the pristine graph keeps the lifted ops, and which form each came from
            self.lifted = {op.name: op.form for op in self.recurrent if op.form != "native"}
            # the model's own tensors that hold lifted recurrences' states (compared on traced rows)
            self.watched = [w for op in self.recurrent for w in getattr(op, "watch", [])]
            more = normalize(graph) if self.lifted else []
            if more:  # the rules rewrote around lifted ops (a reverse direction, a pair merged): recognize again
                self.rewrites += more
                self.recurrent = self._find_recurrent_ops()
                self.lifted = self._restore_forms(self.lifted)
            self._pristine = graph.copy()
        else:
            self.lifted = self._restore_forms((_lifted or ({}, []))[0])
            self.watched = list((_lifted or ({}, []))[1])
        self.output = self._pick_output()
        self.head = self._find_head()
        for op in self.recurrent:
            op.sites = self._unit_sites(op)
        self.one_output = len(self.output.shape or []) == 2
        self.shape = self._detect_shape()

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def load(cls, path) -> "Model":
        from .io import load_onnx

        return cls(load_onnx(path), source=str(path))

    def fresh(self) -> "Model":
        """An independent copy to rewrite (normalization is reused, the analysis redone)."""
        m = Model(self.original, source=self.source, _normalized=self._pristine.copy(),
                  _lifted=(self.lifted, self.watched))
        m._pristine, m.rewrites, m.layout_rewrites = self._pristine, self.rewrites, self.layout_rewrites
        return m

    def _restore_forms(self, lifted: dict) -> dict:
        """Give recognized native ops the form a front-end lifted them from (``lifted``: node name ->
        form); an op a rule made from lifted ones (a bidirectional pair) is named after the first."""
        out = {}
        for op in self.recurrent:
            form = next((f for k, f in lifted.items() if op.name == k or op.name.startswith(k + "/")), None)
            if form is not None:
                op.form = out[op.name] = form
        return out

    @property
    def runnable(self) -> onnx.ModelProto:
        """A proto onnxruntime runs that computes what the model computes: the original, unless
        normalization or a front-end rewrote forms onnxruntime cannot run or onnxmod cannot slice
        (then the normalized graph, exported once)."""
        if not self.rewrites and not self.layout_rewrites and not any(op.form != "native" for op in self.recurrent):
            return self.original
        if getattr(self, "_runnable", None) is None:
            self._runnable = self.fresh().export(metadata=self.metadata)
        return self._runnable

    def _pick_output(self) -> gs.Variable:
        outs = self.graph.outputs
        if not outs:
            raise UnsupportedModelError(f"{self.source}: the graph has no output")
        named = [t for t in outs if t.name == "logits"]
        if named:
            return named[0]
        if len(outs) == 1:
            return outs[0]
        raise UnsupportedModelError(
            f"{self.source}: {len(outs)} graph outputs and none named 'logits'; onnxmod needs the class scores output")

    def _find_recurrent_ops(self) -> list[Recurrence]:
        ops, misses = recognize(self.graph, self.source)
        if misses:  # a candidate no front-end could take: refuse with its reason
            m = misses[0]
            raise m.error(f"{self.source}: {m}")
        if not ops:
            raise UnsupportedModelError(
                f"{self.source}: no recurrent op found (no LSTM, GRU or RNN op, and no Loop, Scan or unrolled cell "
                f"that a front-end recognizes); nothing to decompose")
        self.graph.cleanup()
        by_node = {id(op.node): op for op in ops if getattr(op, "node", None) is not None}
        produced = {id(t): op for op in ops for t, _ in op.unit_outputs()}
        for op in ops:
            op.source = self._upstream_recurrent(op.x, produced)
            src = getattr(op, "state_from_node", None)
            enc = by_node.get(id(src)) if src is not None else None
            op.state_from = enc.index if enc is not None else None
            if enc is not None:
                if (enc.op_type, enc.directions, enc.hidden_size) != (op.op_type, op.directions, op.hidden_size):
                    raise UnsupportedModelError(
                        f"{self.source}: node {op.name!r} takes its initial state from {enc.name!r}, which has a "
                        f"different type, direction or hidden size")
        self._reader = {}  # id(node) -> the recurrence that node is (the unit flow's recurrent consumers)
        for op in ops:
            for node in op.reader_nodes():
                self._reader[id(node)] = op
        return ops

    def _upstream_recurrent(self, t, produced, depth=0) -> int | None:
        if depth > 64 or isinstance(t, gs.Constant):
            return None
        if id(t) in produced:
            return produced[id(t)].index
        if not t.inputs:
            return None
        for x in t.inputs[0].inputs:
            r = self._upstream_recurrent(x, produced, depth + 1)
            if r is not None:
                return r
        return None

    def _find_head(self) -> Head:
        t = self.output
        while t.inputs and t.inputs[0].op in _POST_HEAD:
            t = t.inputs[0].inputs[0]
        if not t.inputs:
            raise UnsupportedModelError(f"{self.source}: output {self.output.name!r} is not computed by a layer")
        node = t.inputs[0]
        if node.op == "Gemm" and isinstance(node.inputs[1], gs.Constant):
            axis = 0 if int(node.attrs.get("transB", 0)) else 1
            c = int(np.asarray(node.inputs[1].values).shape[axis])
            bias = 2 if len(node.inputs) > 2 and node.inputs[2].name else None
            if bias and not isinstance(node.inputs[2], gs.Constant):
                raise UnsupportedModelError(f"{self.source}: output layer {node.name!r} (Gemm): its bias "
                                            f"{node.inputs[2].name!r} is computed, not a constant")
            return Head(node, axis, node if bias else None, bias, t, c)
        bias_node, bias_index = None, None
        if node.op == "Add":
            consts = [i for i, x in enumerate(node.inputs) if isinstance(x, gs.Constant)]
            others = [x for x in node.inputs if not isinstance(x, gs.Constant)]
            if len(consts) == 1 and len(others) == 1 and others[0].inputs and others[0].inputs[0].op == "MatMul":
                bias_node, bias_index = node, consts[0]
                node = others[0].inputs[0]
        if node.op == "MatMul" and isinstance(node.inputs[1], gs.Constant):
            w = np.asarray(node.inputs[1].values)
            return Head(node, w.ndim - 1, bias_node, bias_index, t, int(w.shape[-1]))
        raise UnsupportedModelError(
            f"{self.source}: cannot find the output layer: {t.name!r} is produced by node {node.name!r} ({node.op}); "
            f"expected Gemm or MatMul(+Add) with constant weights")

    # ---- unit flow --------------------------------------------------------------------------
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
        if o in ("Reshape", "Flatten"):
            return self._reshape(op, t, node, lab, sites)
        self._refuse(op, node, f"{o} is not a layer onnxmod can follow")

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

    # ---- shapes -----------------------------------------------------------------------------
    def _detect_shape(self) -> str:
        if any(op.state_from is not None for op in self.recurrent):
            return "enc-dec"
        first = self.recurrent[0].x
        one_input = self._merges_sequence(first)
        if one_input:
            return "1:1" if self.one_output else "1:N"
        return "M:1" if self.one_output else "M:N"

    def _merges_sequence(self, t, depth=0) -> bool:
        if depth > 64 or isinstance(t, gs.Constant) or not t.inputs:
            return False
        p = t.inputs[0]
        if p.op in ("Flatten", "Expand", "Tile"):
            return True
        if p.op == "Reshape":
            a, b = p.inputs[0].shape, p.outputs[0].shape
            if a is not None and b is not None and len(b) < len(a):
                return True
        return any(self._merges_sequence(x, depth + 1) for x in p.inputs if not isinstance(x, gs.Constant))

    # ---- facts ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def class_names(self, fallback=None) -> list[str]:
        raw = self.metadata.get("onnxmod.class_names")
        if raw:
            try:
                names = [str(x) for x in json.loads(raw)]
                if len(names) == self.num_classes:
                    return names
            except ValueError:
                pass
        if fallback is not None and len(fallback) == self.num_classes:
            return [str(x) for x in fallback]
        return [str(i) for i in range(self.num_classes)]

    def parameter_count(self) -> int:
        return count_parameters(self.graph)

    def describe(self) -> dict:
        return {"source": self.source, "shape": self.shape, "input": _tensor_desc(self.input),
                "output": _tensor_desc(self.output), "num_classes": self.num_classes,
                "parameters": self.parameter_count(),
                "recurrences": [op.describe() for op in self.recurrent],
                "head": {"name": self.head.node.name, "op_type": self.head.node.op}}

    def embedding(self) -> gs.Node | None:
        """The token embedding: a ``Gather`` (axis 0) of a 2-D float table by the graph input, or by
        the vocabulary remap table that ``prune_vocabulary`` puts in front of it."""
        for node in self.graph.nodes:
            if (node.op == "Gather" and int(node.attrs.get("axis", 0)) == 0 and len(node.inputs) == 2
                    and isinstance(node.inputs[0], gs.Constant)
                    and (node.inputs[1] is self.input or self._remap(node) is not None)
                    and np.asarray(node.inputs[0].values).ndim == 2
                    and np.issubdtype(np.asarray(node.inputs[0].values).dtype, np.floating)):
                return node
        return None

    def _embedding_for(self, verb: str) -> gs.Node:
        node = self.embedding()
        if node is None:
            raise UnsupportedModelError(f"{self.source}: no token embedding (Gather of a 2-D table by the input) "
                                        f"to {verb}")
        return node

    def _remap(self, node: gs.Node) -> np.ndarray | None:
        """The ``[V]`` token -> row table feeding an embedding Gather (a pruned vocabulary), if any."""
        ids = node.inputs[1]
        if isinstance(ids, gs.Constant) or len(ids.inputs) != 1:
            return None
        p = ids.inputs[0]
        if (p.op == "Gather" and int(p.attrs.get("axis", 0)) == 0 and len(p.inputs) == 2
                and isinstance(p.inputs[0], gs.Constant) and p.inputs[1] is self.input
                and np.issubdtype(np.asarray(p.inputs[0].values).dtype, np.integer)):
            return np.asarray(p.inputs[0].values)
        return None

    def vocabulary_size(self) -> int | None:
        node = self.embedding()
        if node is None:
            return None
        remap = self._remap(node)
        return int(remap.size if remap is not None else np.asarray(node.inputs[0].values).shape[0])

    def embedding_width(self) -> int | None:
        node = self.embedding()
        return None if node is None else int(np.asarray(node.inputs[0].values).shape[1])

    # ---- rewriting --------------------------------------------------------------------------
    def apply_selection(self, selections: dict[int, UnitSelection], means: dict | None = None) -> None:
        """Remove hidden units physically: ``selections[op.index]`` per recurrent op.

        With ``means`` (``means[op.index]`` = (mean h over every step, mean h over the steps the
        output layer reads), each ``[D*H]``) removed units are *mean-compensated*: each consumer's
        bias absorbs the unit's mean contribution, as if the unit emitted its average instead of 0.
        Without ``means`` the result is exactly the model with those units zeroed."""
        for op in self.recurrent:
            sel = selections.get(op.index)
            if sel is None:
                continue
            kept_ids, inert_ids = sel.global_ids("kept"), sel.global_ids("inert")
            if means is not None and op.index in means:
                self._compensate(op, sel, *means[op.index])
            op.slice_units(sel)
            for s in op.sites:
                if s.kind == "state":
                    continue  # bridged below, once every op is sliced
                if s.kind == "concat":
                    continue  # concatenation follows its inputs
                if s.kind == "select":
                    self._reselect(s, kept_ids)
                    continue
                pos = np.flatnonzero(np.isin(s.labels, kept_ids))
                zero = np.isin(s.labels[pos], inert_ids)
                if s.kind == "recurrent_input":
                    s.recurrence.slice_input(pos, zero)
                elif s.kind == "weight":
                    w = np.take(np.asarray(s.node.inputs[s.input_index].values), pos, axis=s.axis)
                    if zero.any():
                        idx = [slice(None)] * w.ndim
                        idx[s.axis] = zero
                        w[tuple(idx)] = 0
                    s.node.inputs[s.input_index] = gs.Constant(f"{s.node.name}/W_sliced", np.ascontiguousarray(w))
                else:  # shape
                    target = np.asarray(s.node.inputs[1].values).copy()
                    target[s.axis] = pos.size
                    s.node.inputs[1] = gs.Constant(f"{s.node.name}/shape", target)
        for op in self.recurrent:
            for s in op.sites:
                if s.kind == "state":
                    dst = s.recurrence
                    self._bridge(op, selections.get(op.index), dst, selections.get(dst.index), s)

    def prune_vocabulary(self, keep: np.ndarray) -> None:
        """Keep the embedding rows of the tokens in ``keep`` (bool ``[V]``); every other token reads
        the kept row nearest to its own (Euclidean), so it still lands where the model put similar
        words. An ``int32 [V]`` remap table (an index, not a parameter) routes token ids to rows;
        negative ids keep Gather's meaning (counted from the end), as in the model."""
        node = self._embedding_for("prune")
        table = np.asarray(node.inputs[0].values)
        V = table.shape[0]
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (V,):
            raise UsageError(f"{self.source}: vocabulary mask has shape {list(keep.shape)}, the embedding has {V} rows")
        if keep.all():
            return
        if not keep.any():
            raise UsageError(f"{self.source}: a vocabulary mask must keep at least one token")
        kept, removed = np.flatnonzero(keep), np.flatnonzero(~keep)
        t, k = table[removed].astype(np.float64), table[kept].astype(np.float64)
        d = (t * t).sum(1)[:, None] - 2 * t @ k.T + (k * k).sum(1)[None, :]  # [removed, kept] only
        remap = np.empty(V, dtype=np.int32)
        remap[kept] = np.arange(kept.size, dtype=np.int32)
        remap[removed] = np.argmin(d, axis=1)  # ties: the lowest kept id
        ids = gs.Variable(f"{node.name}/pruned_ids", dtype=np.int32)
        self.graph.nodes.insert(self.graph.nodes.index(node), gs.Node(
            "Gather", f"{node.name}/vocabulary", attrs={"axis": 0},
            inputs=[gs.Constant(f"{node.name}/remap", remap), self.input], outputs=[ids]))
        node.inputs = [gs.Constant(f"{node.name}/table_pruned", np.ascontiguousarray(table[kept])), ids]

    def reduce_embedding(self, rank: int, weights: np.ndarray | None = None) -> np.ndarray:
        """Replace the embedding's ``d`` features by ``rank`` linear combinations of them.

        Every layer that reads the features (a recurrent op's ``W`` columns, a Gemm/MatMul weight;
        several positions of one token flattened into one row are blocks of ``d`` columns) keeps
        ``rank`` columns per block, and the table keeps ``rank`` columns: parameters shrink by
        ``rank / d`` on both sides. The combinations are those that lose least of what those layers
        see, ``sum_p |W_p (x - x')|^2`` over the tokens weighted by ``weights`` (``[V]``, e.g. how
        often each occurs; uniform if None): with ``C`` the tokens' covariance and ``S = sum_p
        W_p^T W_p``, keep the top ``rank`` eigenvectors ``Q`` of ``C^1/2 S C^1/2``; the table becomes
        ``(E - mean) C^-1/2 Q``, each block ``W_p C^1/2 Q``, and ``W_p mean`` moves into the bias.
        Returns the table the rewritten model computes as if it had (``mean + (E - mean) B A^T``):
        the model with that table gives the same outputs up to rounding."""
        node = self._embedding_for("reduce")
        table = np.asarray(node.inputs[0].values)
        rows, d = table.shape
        if not 1 <= int(rank) <= d:
            raise UsageError(f"{self.source}: embedding rank must be 1..{d}, got {rank}")
        if rank == d:
            return table.copy()
        sites = self._feature_sites(node, d)
        w = np.ones(rows) if weights is None else np.asarray(weights, dtype=np.float64)
        remap = self._remap(node)
        if remap is not None and w.shape == remap.shape:  # token weights -> weights of the kept rows
            w = np.bincount(remap, weights=w, minlength=rows)
        if w.shape != (rows,) or not np.isfinite(w).all() or (w < 0).any():
            raise UsageError(f"{self.source}: embedding weights must be {rows} finite non-negative numbers")
        w = w / w.sum() if w.sum() > 0 else np.full(rows, 1.0 / rows)
        E = table.astype(np.float64)
        mean = w @ E
        cov = (E - mean).T @ ((E - mean) * w[:, None])
        lam, vec = np.linalg.eigh(cov)
        lam = np.maximum(lam, 1e-6 * max(float(lam.max()), 1e-12))
        half, inv_half = (vec * np.sqrt(lam)) @ vec.T, (vec / np.sqrt(lam)) @ vec.T
        blocks = [self._feature_blocks(s, d) for s in sites]
        S = sum(np.einsum("gpi,gpj->ij", b, b) for b in blocks if b is not None)
        _, q = np.linalg.eigh(half @ S @ half)
        q = q[:, ::-1][:, :rank]
        q = q * np.where(q[np.abs(q).argmax(axis=0), np.arange(rank)] < 0, -1.0, 1.0)  # deterministic signs
        A, B = half @ q, inv_half @ q  # x - mean ~ A (B^T (x - mean))
        dtype = table.dtype
        node.inputs[0] = gs.Constant(f"{node.name}/table_reduced", np.ascontiguousarray(((E - mean) @ B).astype(dtype)))
        for s, b in zip(sites, blocks):
            if s.kind == "shape":
                target = np.asarray(s.node.inputs[1].values).copy()
                target[s.axis] = target[s.axis] // d * rank
                s.node.inputs[1] = gs.Constant(f"{s.node.name}/shape_reduced", target)
                continue
            if s.kind == "recurrent_input":
                wt = s.recurrence.weights()[0]
                new = (b @ A).reshape(*wt.shape[:2], -1)
                s.recurrence.set_input_weights(np.ascontiguousarray(new.astype(dtype)))
            else:  # weight: features along s.axis
                moved = np.moveaxis(np.asarray(s.node.inputs[1].values), s.axis, -1)
                new = np.moveaxis((b @ A).reshape(*moved.shape[:-1], -1), -1, s.axis)
                s.node.inputs[1] = gs.Constant(f"{s.node.name}/W_reduced", np.ascontiguousarray(new.astype(dtype)))
            self._site_bias(s, (b @ mean).sum(axis=1).reshape(new.shape[:-1] if s.kind == "recurrent_input"
                                                              else -1))
        return (mean + (E - mean) @ B @ A.T).astype(dtype)

    def why_not_reducible_embedding(self) -> str | None:
        """None when ``reduce_embedding`` can take features away on this model, else why not (one
        line). Following the features only reads the graph."""
        node = self.embedding()
        if node is None:
            return "no token embedding"
        d = int(np.asarray(node.inputs[0].values).shape[1])
        if d < 2:
            return "the embedding has one feature"
        try:
            self._feature_sites(node, d)
        except UnsupportedModelError as exc:
            return str(exc)
        return None

    def _feature_sites(self, node: gs.Node, d: int) -> list[Site]:
        """Where the embedding's features go: the sites that index them, each in blocks of ``d``."""
        src = EmbeddingFeatures(node.name)
        out = node.outputs[0]
        ndim = len(out.shape) if out.shape is not None else len(self.input.shape or []) + 1
        self._pending = {}
        sites: list[Site] = []
        self._follow(src, out, np.arange(d).reshape([1] * (ndim - 1) + [d]), sites)
        self._check_concats(src, "concatenates them with another tensor")
        for s in sites:
            if s.kind not in ("recurrent_input", "weight", "shape"):
                self._refuse(src, s.node, f"selects or concatenates features ({s.kind}); only layers reading "
                                          f"all of them can take fewer")
            if s.kind == "weight" and np.asarray(s.node.inputs[1].values).ndim != 2:
                self._refuse(src, s.node, "reads them through a weight that is not 2-D")
            if s.labels.size % d or not (s.labels.reshape(-1, d) == np.arange(d)).all():
                self._refuse(src, s.node, "reads the features in an order other than whole blocks of the embedding")
        if not any(s.kind != "shape" for s in sites):
            raise UnsupportedModelError(f"{self.source}: the features of embedding {node.name!r} reach no layer")
        return sites

    def _feature_blocks(self, s: Site, d: int) -> np.ndarray | None:
        """A site's weight as ``[consumer rows, blocks, d]`` (float64), None for a shape literal."""
        if s.kind == "shape":
            return None
        if s.kind == "recurrent_input":
            Wt = s.recurrence.weights()[0].astype(np.float64)
            return Wt.reshape(Wt.shape[0] * Wt.shape[1], -1, d)
        wt = np.moveaxis(np.asarray(s.node.inputs[1].values).astype(np.float64), s.axis, -1)
        return wt.reshape(-1, wt.shape[-1] // d, d)

    def _compensate(self, op: Recurrence, sel: UnitSelection, mean_all: np.ndarray, mean_out: np.ndarray) -> None:
        removed = np.setdiff1d(np.arange(op.units), np.setdiff1d(sel.global_ids("kept"), sel.global_ids("inert")))
        if removed.size == 0:
            return
        op.absorb(own={int(u): float(mean_all[u]) for u in removed})
        for s in op.sites:
            if s.kind not in ("recurrent_input", "weight"):
                continue
            pos = np.flatnonzero(np.isin(s.labels, removed))
            if pos.size == 0:
                continue
            if s.kind == "recurrent_input":
                W2 = s.recurrence.weights()[0].astype(np.float64)
                self._site_bias(s, W2[:, :, pos] @ mean_all[s.labels[pos]])
            else:
                w = np.take(np.asarray(s.node.inputs[s.input_index].values).astype(np.float64), pos, axis=s.axis)
                self._site_bias(s, np.tensordot(mean_out[s.labels[pos]], w, axes=([0], [s.axis])))

    def _site_bias(self, s: Site, delta: np.ndarray) -> None:
        """Add ``delta`` to what a site's consumer computes: a recurrent op's input bias ``Wb``
        (``[D, G*H]``), or the bias of a Gemm/MatMul."""
        if s.kind == "recurrent_input":
            s.recurrence.absorb(input_delta=delta)
        else:
            self._add_bias(s.node, delta)

    def _add_bias(self, node: gs.Node, delta: np.ndarray) -> None:
        """Add ``delta`` to the bias of a Gemm, or of the Add after a MatMul (one is inserted if none)."""
        if node.op == "Gemm" and len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
            b = np.asarray(node.inputs[2].values)
            beta = float(node.attrs.get("beta", 1.0))
            node.inputs[2] = gs.Constant(f"{node.name}/C_comp", (b + delta.reshape(b.shape[-1:]) / beta).astype(b.dtype))
            return
        out = node.outputs[0]
        for c in list(out.outputs):
            consts = [i for i, x in enumerate(c.inputs) if isinstance(x, gs.Constant)] if c.op == "Add" else []
            if len(consts) == 1:
                b = np.asarray(c.inputs[consts[0]].values)
                c.inputs[consts[0]] = gs.Constant(f"{c.name}/B_comp", (b + delta.reshape(b.shape[-1:])).astype(b.dtype))
                return
        if node.op == "Gemm" and len(node.inputs) <= 2:
            node.inputs.append(gs.Constant(f"{node.name}/C_comp", delta.astype(np.float32)))
            return
        biased = gs.Variable(f"{out.name}/compensated", dtype=out.dtype)
        for c in list(out.outputs):
            c.inputs = [biased if x is out else x for x in c.inputs]
        self.graph.outputs = [biased if x is out else x for x in self.graph.outputs]
        self.graph.nodes.append(gs.Node("Add", f"{node.name}/compensation",
                                        inputs=[out, gs.Constant(f"{node.name}/comp", delta.astype(np.float32))],
                                        outputs=[biased]))

    def _reselect(self, s: Site, kept_ids: np.ndarray) -> None:
        """Rewrite a unit-selecting Slice/Gather as a Gather over the units that remain."""
        kept_mask = np.isin(s.labels, kept_ids)
        new_pos = np.cumsum(kept_mask) - 1  # old position -> new position (where kept)
        chosen = [int(new_pos[p]) for p in s.positions if kept_mask[p]]
        if s.squeeze:
            if len(chosen) != 1:
                raise UnsupportedModelError(f"{self.source}: node {s.node.name!r} selects a unit that the concern removed")
            idx = np.array(chosen[0], dtype=np.int64)
        else:
            idx = np.array(chosen, dtype=np.int64)
        data = s.node.inputs[0]
        s.node.op = "Gather"
        s.node.attrs = {"axis": int(s.axis)}
        s.node.inputs = [data, gs.Constant(f"{s.node.name}/units", idx)]

    def _bridge(self, enc: Recurrence, es: UnitSelection | None, dec: Recurrence, ds: UnitSelection | None,
                site: Site) -> None:
        """Map the encoder's kept units onto the decoder's: ``init[d, b, q] = state[d, b, p]`` when
        decoder unit q is encoder unit p, else 0 (a removed unit's state is 0). A per-direction 0/1
        MatMul ``[D, Ke, Kd]``; nothing when both keep the same units."""
        H, D = enc.hidden_size if es is None else es.hidden_size, enc.directions
        ek = [np.arange(H)] * D if es is None else list(es.kept)
        dk = [np.arange(H)] * D if ds is None else list(ds.kept)
        ei = [np.array([], int)] * D if es is None else list(es.inert)
        di = [np.array([], int)] * D if ds is None else list(ds.inert)
        if all(np.array_equal(a, b) and np.array_equal(c, e) for a, b, c, e in zip(ek, dk, ei, di)):
            return
        Ke = ek[0].size
        idx = np.full((D, dk[0].size), Ke, dtype=np.int64)  # Ke = the zero column added by Pad
        for d in range(D):
            for q, j in enumerate(dk[d]):
                if j in di[d] or j in ei[d] or j not in ek[d]:
                    continue
                idx[d, q] = int(np.flatnonzero(ek[d] == j)[0])
        state = site.node.inputs[site.input_index]
        p = f"{site.node.name}/bridge_{site.input_index}"
        padded = gs.Variable(f"{p}/padded", dtype=np.float32)
        self.graph.nodes.append(gs.Node("Pad", f"{p}/pad", inputs=[state, gs.Constant(f"{p}/pads",
                                        np.array([0, 0, 0, 0, 0, 1], dtype=np.int64))], outputs=[padded]))
        out = gs.Variable(p, dtype=np.float32)
        if D == 1 or all(np.array_equal(idx[0], r) for r in idx[1:]):
            self.graph.nodes.append(gs.Node("Gather", p, attrs={"axis": 2},
                                            inputs=[padded, gs.Constant(f"{p}/idx", idx[0])], outputs=[out]))
        else:  # per direction: [D, B, Ke+1] -> GatherElements with indices broadcast over the batch
            shape = gs.Variable(f"{p}/shape", dtype=np.int64)
            full = gs.Variable(f"{p}/idx_full", dtype=np.int64)
            dims = gs.Variable(f"{p}/dims", dtype=np.int64)
            self.graph.nodes += [
                gs.Node("Shape", f"{p}/shape", inputs=[state], outputs=[shape]),
                gs.Node("Concat", f"{p}/dims", attrs={"axis": 0}, outputs=[dims], inputs=[
                    gs.Constant(f"{p}/D", np.array([D], dtype=np.int64)),
                    gs.Variable(f"{p}/B", dtype=np.int64),
                    gs.Constant(f"{p}/Kd", np.array([idx.shape[1]], dtype=np.int64))]),
            ]
            b = self.graph.nodes[-1].inputs[1]
            self.graph.nodes.append(gs.Node("Slice", f"{p}/batch", inputs=[shape, gs.Constant(f"{p}/s1", np.array([1])),
                                                                        gs.Constant(f"{p}/s2", np.array([2]))],
                                            outputs=[b]))
            self.graph.nodes.append(gs.Node("Expand", f"{p}/expand", inputs=[gs.Constant(f"{p}/idx", idx[:, None, :]),
                                                                          dims], outputs=[full]))
            self.graph.nodes.append(gs.Node("GatherElements", p, attrs={"axis": 2}, inputs=[padded, full],
                                            outputs=[out]))
        site.node.inputs[site.input_index] = out

    def export(self, outputs: list[gs.Variable] | None = None, metadata: dict | None = None) -> onnx.ModelProto:
        """The current graph as a checked ModelProto (shapes re-inferred, names deterministic)."""
        g = self.graph
        if outputs is not None:
            g.outputs = outputs
        g.cleanup(remove_unused_graph_inputs=False).toposort()
        for tensor in g.tensors().values():
            if isinstance(tensor, gs.Variable) and tensor not in g.inputs:
                tensor.shape = None if tensor not in g.outputs else tensor.shape
        proto = gs.export_onnx(g, do_type_check=True)
        del proto.opset_import[:]
        for domain, version in sorted(self.opset.items()):
            proto.opset_import.append(onnx.helper.make_opsetid(domain, version))
        proto.ir_version = self.original.ir_version
        proto.producer_name = "onnxmod"
        from . import __version__

        proto.producer_version = __version__
        del proto.metadata_props[:]
        for k, v in sorted((metadata or {}).items()):
            proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=str(v)))
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        return proto


def describe_leniently(proto: onnx.ModelProto, source: str) -> dict:
    """What ``inspect`` can say of a model that ``Model`` refuses: its I/O, every recurrence the
    front-ends recognize (before any check that decomposition needs) and every miss."""
    graph, _ = prepare_graph(proto, source)
    normalize(graph)
    found, misses = recognize(graph, source)
    recs = [r.describe() for r in found] + describe_unrecognized(graph, found)
    return {"source": source, "inputs": [_tensor_desc(t) for t in graph.inputs],
            "outputs": [_tensor_desc(t) for t in graph.outputs], "parameters": count_parameters(graph),
            "recurrences": recs, "not_recognized": [str(m) for m in misses]}


def _tensor_desc(t) -> dict:
    return {"name": t.name, "dtype": str(np.dtype(t.dtype)) if t.dtype is not None else None,
            "shape": [d if isinstance(d, (int, np.integer)) else str(d) for d in (t.shape or [])]}


def count_parameters(graph: gs.Graph) -> int:
    """Floating-point parameters (weights and biases) in the graph's constants."""
    total = 0
    for t in graph.tensors().values():
        if isinstance(t, gs.Constant):
            v = t.values
            if np.issubdtype(np.asarray(v).dtype, np.floating):
                total += int(np.asarray(v).size)
    return total


def count_parameters_proto(proto: onnx.ModelProto) -> int:
    return count_parameters(gs.import_onnx(proto))
