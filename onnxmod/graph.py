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

from .errors import UnsupportedModelError
from .prepare import prepare_graph
from .recurrence import Recurrence, describe_unrecognized, recognize
from .rewrite import normalize
from .embedding import Embedding
from .flow import UnitFlow
from .readout import SHAPES, Head, Readout  # noqa: F401  (re-exported)
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
            self._pristine = copy_graph(graph)
        else:
            self.lifted = self._restore_forms((_lifted or ({}, []))[0])
            self.watched = list((_lifted or ({}, []))[1])
        self.output = self._pick_output()
        self.head = self._find_head()
        self._flow_units()
        self.one_output = self.output_rank == 2
        self.shape = self._detect_shape()

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def load(cls, path) -> "Model":
        from .io import load_onnx

        return cls(load_onnx(path), source=str(path))

    def fresh(self) -> "Model":
        """An independent copy to rewrite (normalization is reused, the analysis redone)."""
        m = Model(self.original, source=self.source, _normalized=copy_graph(self._pristine),
                  _lifted=(self.lifted, self.watched), _probed=self.probed)
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

    def _find_recurrent_ops(self) -> list[Recurrence]:
        ops, misses = recognize(self.graph, self.source)
        if misses:  # a candidate no front-end could take: refuse with its reason (a general cell's first)
            m = sorted(misses, key=lambda m: not m.final)[0]
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
    for node in graph.nodes:  # a Loop's or Scan's body holds its cell's weights
        total += sum(count_parameters(v) for v in node.attrs.values() if isinstance(v, gs.Graph))
    return total


def count_parameters_proto(proto: onnx.ModelProto) -> int:
    return count_parameters(gs.import_onnx(proto))
