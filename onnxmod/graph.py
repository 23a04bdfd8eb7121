"""The graph model: load an ONNX model, normalize it and find what decomposition rewrites.

Three nouns, as in onnx-graphsurgeon: the *graph* (``gs.Graph``), its *nodes* and *tensors*.
onnxmod adds ``Recurrence`` (``onnxmod.recurrence``: one recurrent layer, in whatever form a
front-end recognized it) and ``Model``: the normalized graph with its recurrences, its head and
its I/O shape. ``Model`` is assembled from one part per responsibility:

* construction and facts (this file): preparation (``prepare``), the readout rules
  (``rewrite``), recognition (``recurrence``), export;
* ``flow.UnitFlow``: where each recurrence's units go (the *sites* that index them);
* ``readout.Readout``: the class-scores output, the head, the I/O shape;
* ``embedding.Embedding``: the token embedding, its rows and its features;
* ``slicing.Slicing``: removing units physically, bridging encoder to decoder, compensation.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .embedding import Embedding
from .errors import UnsupportedModelError
from .flow import UnitFlow
from .io import keys
from .prepare import prepare_graph
from .readout import SHAPES, Head, Readout  # noqa: F401  (re-exported)
from .recurrence import Form, Recurrence, describe_unrecognized, forms_after, recognize
from .rewrite import normalize
from .slicing import Slicing


class Model(UnitFlow, Readout, Embedding, Slicing):
    """A normalized ONNX model ready for tracing and rewriting.

    ``Model.load(path)`` or ``Model(proto, source=...)``. The proto given is never modified.
    """

    def __init__(self, proto: onnx.ModelProto, source: str = "<model>", _normalized: gs.Graph | None = None,
                 _lifted: dict | None = None, _probed: dict | None = None):
        self.source = source
        self.probed = {} if _probed is None else _probed  # what running the graph told (shared by copies)
        self.original = proto
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        self.opset = {o.domain: o.version for o in proto.opset_import}
        if _normalized is not None:
            graph = _normalized
        else:
            graph, self.layout_rewrites = prepare_graph(proto, source)
            self.rewrites = normalize(graph)  # exporters' readouts -> forms the unit flow follows
        self.graph = graph
        default = "" if "" in self.opset or "ai.onnx" not in self.opset else "ai.onnx"
        if isinstance(getattr(graph, "opset", None), int) and graph.opset > self.opset.get(default, 0):
            self.opset[default] = graph.opset  # canonicalization upgraded an old opset (onnx's version converter)
        if not graph.inputs:
            raise UnsupportedModelError(f"{source}: the graph has no input")
        self.inputs = list(graph.inputs)
        self.input = graph.inputs[0]
        known = dict((_lifted or ({}, []))[0]) if _normalized is not None else {}
        self.recurrent = self._find_recurrent_ops(known)
        if _normalized is None:
            # front-ends that lift a form into native ops (a Loop body, say) leave readouts the rules may
            # now apply to; the pristine graph keeps the lifted ops, and which form each came from
            self.lifted = {op.name: op.form for op in self.recurrent if op.form != Form.NATIVE}
            # the model's own tensors that hold lifted recurrences' states (compared on traced rows)
            self.watched = [w for op in self.recurrent for w in op.watch]
            more = normalize(graph) if self.lifted else []
            if more:  # the rules rewrote around lifted ops (a reverse direction, a pair merged): recognize again
                self.rewrites += more
                self.recurrent = self._find_recurrent_ops(forms_after(self.lifted, more))
                self.lifted = {op.name: op.form for op in self.recurrent if op.form != Form.NATIVE}
            self._pristine = copy_graph(graph)
        else:
            self.lifted = known
            self.watched = list(_lifted[1])
        self.output = self._pick_output()
        self.head = self._find_head()
        self._flow_units()
        self.one_output = self.output_rank == 2
        self.shape = self._detect_shape()

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def load(cls, path) -> Model:
        from .io import load_onnx

        return cls(load_onnx(path), source=str(path))

    def fresh(self) -> Model:
        """An independent copy to rewrite (normalization is reused, the analysis redone)."""
        m = Model(self.original, source=self.source, _normalized=copy_graph(self._pristine),
                  _lifted=(self.lifted, self.watched), _probed=self.probed)
        m._pristine, m.rewrites, m.layout_rewrites = self._pristine, self.rewrites, self.layout_rewrites
        return m

    @property
    def runnable(self) -> onnx.ModelProto:
        """A proto onnxruntime runs that computes what the model computes: the original, unless
        normalization or a front-end rewrote forms onnxruntime cannot run or onnxmod cannot slice
        (then the normalized graph, exported once)."""
        if not self.rewrites and not self.layout_rewrites and not any(op.form != Form.NATIVE for op in self.recurrent):
            return self.original
        if getattr(self, "_runnable", None) is None:
            self._runnable = self.fresh().export(metadata=self.metadata)
        return self._runnable

    def _find_recurrent_ops(self, known: dict) -> list[Recurrence]:
        ops, misses = recognize(self.graph, self.source, known)
        if misses:  # a candidate no front-end could take: refuse with its reason (a general cell's first)
            m = sorted(misses, key=lambda m: not m.final)[0]
            raise m.error(f"{self.source}: {m}")
        if not ops:
            raise UnsupportedModelError(
                f"{self.source}: no recurrent op found (no LSTM, GRU or RNN op, and no Loop, Scan or unrolled cell "
                f"that a front-end recognizes); nothing to decompose")
        self.graph.cleanup()
        by_node = {id(n): op for op in ops for n in op.reader_nodes()}
        produced = {id(t): op for op in ops for t, _ in op.unit_outputs()}
        for op in ops:
            op.source = self._upstream_recurrent(op.x, produced)
            src = op.state_from_node
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

    @staticmethod
    def _upstream_recurrent(t, produced) -> int | None:
        """The recurrence whose units reach tensor ``t`` first, walking back (each tensor once: a
        CNN's branches and joins would make a plain recursion exponential)."""
        seen, todo = set(), [t]
        while todo:
            x = todo.pop(0)
            if id(x) in seen or isinstance(x, gs.Constant):
                continue
            seen.add(id(x))
            if id(x) in produced:
                return produced[id(x)].index
            if x.inputs:
                todo.extend(x.inputs[0].inputs)
        return None

    # ---- facts ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def class_names(self, fallback=None) -> list[str]:
        raw = self.metadata.get(keys.CLASS_NAMES)
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
                "head": {"name": self.head.node.name, "op_type": self.head.node.op},
                "rewrites": [f"{r.rule}: {', '.join(r.nodes)}" if hasattr(r, "rule") else str(r) for r in self.rewrites]
                + list(self.layout_rewrites),
                "front": self.front(), "full_width": self.widened()}

    def front(self) -> dict:
        """What the model computes before its first recurrence (a CNN, an embedding): op counts.
        Every module keeps it whole."""
        seen, todo, ops = set(), [self.recurrent[0].x], {}
        while todo:
            t = todo.pop()
            if id(t) in seen or isinstance(t, gs.Constant) or not t.inputs:
                continue
            seen.add(id(t))
            node = t.inputs[0]
            if id(node) in seen:
                continue
            seen.add(id(node))
            ops[node.op] = ops.get(node.op, 0) + 1
            todo.extend(node.inputs)
        return dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))

    def export(self, outputs: list[gs.Variable] | None = None, metadata: dict | None = None) -> onnx.ModelProto:
        """The current graph as a checked ModelProto (shapes re-inferred, names deterministic)."""
        g = self.graph
        if outputs is not None:
            g.outputs = outputs
        g.cleanup(remove_unused_graph_inputs=False).toposort()
        for t in g.outputs:  # a value shape inference could not type (after a contrib op): the float it is
            if t.dtype is None:
                t.dtype = np.float32
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
        for o in proto.graph.output:  # an output whose shape inference could not tell (computed reshapes)
            tt = o.type.tensor_type
            if o.type.HasField("tensor_type") and not tt.HasField("shape"):
                rank = getattr(self, "output_rank", None) if o.name in _logit_names(g, self) else None
                if rank:
                    tt.shape.dim.add().dim_param = "batch"
                    for _ in range(rank - 2):
                        tt.shape.dim.add().dim_param = "steps"
                    tt.shape.dim.add().dim_param = "classes"
        return proto


def _variables(g: gs.Graph) -> list:
    """Every variable of ``g`` and of its subgraphs, in a fixed order."""
    out = [t for t in g.tensors().values() if isinstance(t, gs.Variable)]
    for node in g.nodes:
        for attr in node.attrs.values():
            for sub in (attr if isinstance(attr, list) else [attr]):
                if isinstance(sub, gs.Graph):
                    out += _variables(sub)
    return out


def copy_graph(g: gs.Graph) -> gs.Graph:
    """``g.copy()`` that keeps what kind of value each variable is: onnx-graphsurgeon's copy makes
    every variable a tensor, and a sequence (``SplitToSequence``'s output, torch's ``unbind``) then
    exports as one, which onnxruntime refuses to load."""
    new = g.copy()
    kinds = {}
    for t in _variables(g):
        if getattr(t, "type", "tensor_type") != "tensor_type":
            kinds[t.name] = t.type
    if kinds:
        for t in _variables(new):
            if t.name in kinds:
                t.type = kinds[t.name]
    return new


def _logit_names(g: gs.Graph, model) -> set:
    """The outputs that hold class scores: the head's logits and what is computed from them alone."""
    head = getattr(model, "head", None)
    if head is None:
        return set()
    names, todo = {head.output.name}, [head.output]
    while todo:
        t = todo.pop()
        for n in t.outputs:
            if n.op in ("Softmax", "LogSoftmax", "Identity", "Sigmoid"):
                for o in n.outputs:
                    if o.name not in names:
                        names.add(o.name)
                        todo.append(o)
    return names


def describe_leniently(proto: onnx.ModelProto, source: str) -> dict:
    """What ``inspect`` can say of a model that ``Model`` refuses: its I/O, every recurrence the
    front-ends recognize (before any check that decomposition needs) and every miss."""
    graph, _ = prepare_graph(proto, source, strict=False)
    normalize(graph)
    found, misses = recognize(graph, source)
    recs = [r.describe() for r in found] + describe_unrecognized(graph, found)
    return {"source": source, "inputs": [_tensor_desc(t) for t in graph.inputs],
            "outputs": [_tensor_desc(t) for t in graph.outputs], "parameters": count_parameters(graph),
            "recurrences": recs, "not_recognized": [str(m) for m in misses]}


def _tensor_desc(t) -> dict:
    return {"name": t.name, "dtype": str(np.dtype(t.dtype)) if t.dtype is not None else None,
            "shape": [d if isinstance(d, (int, np.integer)) else str(d) for d in (t.shape or [])]}


# quantized weights' types (8- and 16-bit integers); int32/int64 constants are shapes and indices
_WEIGHT_INTEGERS = (np.int8, np.uint8, np.int16, np.uint16)


def count_parameters(graph: gs.Graph) -> int:
    """Parameters (weights and biases, floating-point or quantized to 8/16-bit integers) in the graph's
    constants."""
    total = 0
    for t in graph.tensors().values():
        if isinstance(t, gs.Constant):
            v = np.asarray(t.values)
            if np.issubdtype(v.dtype, np.floating) or v.dtype in _WEIGHT_INTEGERS:
                total += int(v.size)
    for node in graph.nodes:  # a Loop's or Scan's body holds its cell's weights
        total += sum(count_parameters(v) for v in node.attrs.values() if isinstance(v, gs.Graph))
    return total


_WEIGHT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                 onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16}


def count_parameters_proto(proto: onnx.ModelProto) -> int:
    """``count_parameters`` of a ModelProto, read from its initializers' dims (and its subgraphs')
    without copying a weight (importing a 1 GB composition would copy 1 GB)."""
    def count(g) -> int:
        total = sum(int(np.prod(t.dims, dtype=np.int64)) for t in g.initializer if t.data_type in _WEIGHT_TYPES)
        for n in g.node:
            total += sum(int(np.prod(a.t.dims, dtype=np.int64)) for a in n.attribute
                         if n.op_type == "Constant" and a.name == "value" and a.t.data_type in _WEIGHT_TYPES)
            for a in n.attribute:
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    total += count(sub)
        return total
    return count(proto.graph)
