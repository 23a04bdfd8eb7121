"""The readout: the graph output holding the class scores, the output layer (head) that makes
them, and the model's input/output shape (1:1, 1:N, M:1, M:N, encoder-decoder).

The head is the last linear map before the class axis, wherever that axis sits: walking back from
the output through what only moves or normalizes the scores (a softmax, reshapes, transposes), the
first ``Gemm``, ``MatMul`` or ``MatMulInteger`` with a constant weight. From its output the unit
flow follows the *classes* forward to the output (``flow.Flow`` with ``classes=True``): every
literal that sizes the class axis and every per-class constant (a bias added after a ``MatMul``,
a quantized head's bias after its scale) is a site that channeling rewrites. An output that is not
batch-first (time-major ``[T, N, C]``, say) is read through one ``Transpose`` to ``[N, (T,) C]``,
added to the normalized graph and reported, so tracing, scoring and modules all see rows first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .errors import UnsupportedModelError
from .flow import Flow, Units, category
from .quantized import stored

_POST_HEAD = {"Softmax", "LogSoftmax", "Identity"}

SHAPES = ("1:1", "1:N", "M:1", "M:N")


@dataclass
class Head:
    node: gs.Node  # Gemm, MatMul or MatMulInteger
    weight_axis: int  # axis of the weight indexing classes
    bias_node: gs.Node | None  # the Gemm itself when it holds a bias (other biases are class sites)
    bias_index: int | None
    output: gs.Variable  # tensor holding the logits (batch first, classes last)
    num_classes: int
    sites: list = field(default_factory=list)  # per-class constants and class-axis literals after the node


class Readout:
    """``Model``'s readout (a mixin)."""

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

    def _find_head(self) -> Head:
        logits = self.output
        while logits.inputs and logits.inputs[0].op in _POST_HEAD:
            logits = logits.inputs[0].inputs[0]
        t = logits
        while True:
            if not t.inputs:
                raise UnsupportedModelError(f"{self.source}: output {self.output.name!r} is not computed by a layer")
            node = t.inputs[0]
            head = self._linear(node)
            if head is not None:
                break
            scaled = node.op == "Div" and isinstance(node.inputs[1], gs.Constant)  # a temperature
            if category(node.op) != "layout" and not scaled and node.op not in (
                    "Identity", "Cast", "Add", "Mul", "Sub", "QuantizeLinear", "DequantizeLinear"):
                raise UnsupportedModelError(
                    f"{self.source}: cannot find the output layer: {t.name!r} is produced by node {node.name!r} "
                    f"({node.op}); expected a Gemm, MatMul or MatMulInteger with constant weights, followed only "
                    f"by reshapes, transposes, a bias, a scale or a softmax")
            t = next((x for x in node.inputs if not isinstance(x, gs.Constant)), None)
            if t is None:
                raise UnsupportedModelError(f"{self.source}: output {self.output.name!r} is computed from constants")
        return self._follow_classes(head, logits)

    def _linear(self, node: gs.Node) -> Head | None:
        if node.op not in ("Gemm", "MatMul", "MatMulInteger") or len(node.inputs) < 2 \
                or isinstance(node.inputs[0], gs.Constant) or stored(node, 1) is None:
            return None
        w = stored(node, 1).raw
        if node.op == "Gemm":
            axis = 0 if int(node.attrs.get("transB", 0)) else 1
            bias = 2 if len(node.inputs) > 2 and node.inputs[2].name else None
            if bias and stored(node, 2) is None:
                raise UnsupportedModelError(f"{self.source}: output layer {node.name!r} (Gemm): its bias "
                                            f"{node.inputs[2].name!r} is computed, not a constant")
            return Head(node, axis, node if bias else None, bias, node.outputs[0], int(w.shape[axis]))
        if node.op in ("MatMul", "MatMulInteger") and w.ndim >= 2:
            return Head(node, w.ndim - 1, None, None, node.outputs[0], int(w.shape[-1]))
        return None

    def _follow_classes(self, head: Head, logits: gs.Variable) -> Head:
        """Follow the head's classes to ``logits``: its class axis, the class sites on the way, and
        the output read batch-first."""
        out = head.node.outputs[0]
        rank = len(out.shape) if out.shape is not None else 2
        C = head.num_classes
        lab = np.arange(C, dtype=np.int64).reshape([1] * (rank - 1) + [C])
        name = head.node.name
        flow = Flow(self.graph, self.source, {}, lambda ids: f"classes of the output layer {name!r}", classes=True,
                    probe=self._probe_shapes)
        sites = flow.run([(out, Units(lab, rank - 1))], until=[logits])
        u = flow.units.get(id(logits)) if logits is not out else Units(lab, rank - 1)
        if u is None:
            raise UnsupportedModelError(f"{self.source}: output {self.output.name!r} does not carry the classes of "
                                        f"the output layer {name!r}")
        along = np.moveaxis(u.lab, u.axis, -1).reshape(-1, u.size)
        if u.rows() or not np.array_equal(along[0], np.arange(C)):
            raise UnsupportedModelError(f"{self.source}: output {self.output.name!r} rearranges the classes of the "
                                        f"output layer {name!r}")
        head.sites = [s for s in sites if s.kind in ("shape", "param")]
        for s in head.sites:  # the bias added right after a MatMul head is the head's bias
            if (head.bias_node is None and s.kind == "param" and s.node.op == "Add"
                    and head.node.outputs[0] in s.node.inputs):
                head.bias_node, head.bias_index = s.node, s.input_index
                head.sites = [x for x in head.sites if x is not s]
                break
        odd = [s for s in sites if s.kind not in ("shape", "param")]
        if odd:
            s = odd[0]
            raise UnsupportedModelError(f"{self.source}: node {s.node.name!r} ({s.node.op}) reads the classes of the "
                                        f"output layer {name!r} again ({s.kind})")
        self._class_count = C
        head.output = self._batch_first(logits, u.axis)
        return head

    def _batch_first(self, logits: gs.Variable, class_axis: int) -> gs.Variable:
        """``logits`` with rows first and classes last: a ``Transpose`` is added when the model writes
        them otherwise (a time-major CTC head ``[T, N, C]``)."""
        rank = len(logits.shape) if logits.shape is not None else None
        if rank is None:
            rank = self._probe_rank(logits)
        self.output_rank = rank
        batch = self._batch_axis(logits, rank, class_axis)
        perm = [batch] + [a for a in range(rank) if a not in (batch, class_axis)] + [class_axis]
        if perm == list(range(rank)):
            return logits
        out = gs.Variable(f"{logits.name}/batch_first", dtype=logits.dtype)
        self.graph.nodes.append(gs.Node("Transpose", f"onnxmod/{logits.name}/batch_first", attrs={"perm": perm},
                                        inputs=[logits], outputs=[out]))
        if logits.shape is not None:
            out.shape = [logits.shape[p] for p in perm]
        else:
            out.shape = ["batch"] + ["steps"] * (rank - 2) + [self._class_count]
        self.graph.outputs = [out if o is self.output else o for o in self.graph.outputs]
        self.output = out
        self.layout_rewrites = [*getattr(self, "layout_rewrites", []),
                                f"output {logits.name}: axes {perm} read as [batch, ..., classes]"]
        return out

    def _batch_axis(self, logits, rank: int, class_axis: int) -> int:
        """Which axis of ``logits`` holds the rows: the one named like the input's first axis, else
        the one whose size follows the batch when the model is run (``probe``)."""
        if rank <= 2:
            return [a for a in range(rank) if a != class_axis][0] if rank == 2 else 0
        batch_dim = (self.input.shape or [None])[0]
        shape = logits.shape or []
        if isinstance(batch_dim, str) and batch_dim:
            hits = [a for a, d in enumerate(shape) if d == batch_dim]
            if len(hits) == 1:
                return hits[0]
        declared = self._declared_batch_axis(logits, rank, batch_dim)
        if declared is not None:
            return declared
        probed = self._probe_batch_axis(logits)
        if probed is not None:
            return probed
        return 0

    def _declared_batch_axis(self, logits, rank: int, batch_dim) -> int | None:
        """The axis the file declares ``logits`` (a graph output) with the input's named batch dimension,
        when exactly one is: canonicalization drops declared output shapes (exporters get some wrong), but
        a name shared with the input's batch is the exporter's own link, and a graph specialized to one
        sequence length (torch's dynamo, ``[40, s77, 12]``) cannot be probed at made-up lengths."""
        if not (isinstance(batch_dim, str) and batch_dim):
            return None
        for o in self.original.graph.output:
            if o.name == logits.name and o.type.HasField("tensor_type"):
                dims = [d.dim_param if d.HasField("dim_param") else None for d in o.type.tensor_type.shape.dim]
                hits = [a for a, d in enumerate(dims) if d == batch_dim]
                return hits[0] if len(dims) == rank and len(hits) == 1 else None
        return None

    def _probe_rank(self, t) -> int:
        from . import probe

        key = ("rank", t.name)
        if key in self.probed:
            return self.probed[key]
        try:
            self.probed[key] = probe.rank(self.graph, t.name, self.opset)
            return self.probed[key]
        except probe.ProbeError as exc:
            raise UnsupportedModelError(f"{self.source}: the rank of output {t.name!r} is unknown and the model did "
                                        f"not run on made-up inputs to tell it: {exc}") from None

    def _probe_batch_axis(self, t) -> int | None:
        from . import probe

        key = ("batch_axis", t.name)
        if key in self.probed:
            return self.probed[key]
        try:
            self.probed[key] = probe.batch_axis(self.graph, t.name, self.opset)
            return self.probed[key]
        except probe.ProbeError as exc:
            raise UnsupportedModelError(
                f"{self.source}: which axis of output {t.name!r} holds the rows is unknown, "
                f"and the model did not run batched on made-up inputs to tell it: {exc}") from None

    def _detect_shape(self) -> str:
        if any(op.state_from is not None for op in self.recurrent):
            return "enc-dec"
        first = self.recurrent[0].x
        one_input = self._merges_sequence(first)
        if one_input:
            return "1:1" if self.one_output else "1:N"
        return "M:1" if self.one_output else "M:N"

    @staticmethod
    def _merges_sequence(t) -> bool:
        """Whether the input reaches the first recurrence through a sequence flattened into one
        vector and repeated (the paper's 1:1 and 1:N models); each tensor is looked at once."""
        seen, todo = set(), [t]
        while todo:
            x = todo.pop()
            if id(x) in seen or isinstance(x, gs.Constant) or not x.inputs:
                continue
            seen.add(id(x))
            p = x.inputs[0]
            if p.op in ("Flatten", "Expand", "Tile"):
                return True
            if p.op == "Reshape":  # a sequence flattened into one vector (an image's feature maps are no sequence)
                a, b = p.inputs[0].shape, p.outputs[0].shape
                if a is not None and b is not None and len(b) < len(a) <= 3:
                    return True
            todo.extend(i for i in p.inputs if not isinstance(i, gs.Constant))
        return False
