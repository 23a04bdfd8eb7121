"""The readout: the graph output holding the class scores, the output layer (head) that makes
them, and the model's input/output shape (1:1, 1:N, M:1, M:N, encoder-decoder)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .errors import UnsupportedModelError
from dataclasses import dataclass

_POST_HEAD = {"Softmax", "LogSoftmax", "Identity"}

SHAPES = ("1:1", "1:N", "M:1", "M:N")


@dataclass
class Head:
    node: gs.Node  # Gemm or MatMul
    weight_axis: int  # axis of the weight indexing classes
    bias_node: gs.Node | None  # Add holding the bias (MatMul heads), or the Gemm itself
    bias_index: int | None
    output: gs.Variable  # tensor holding the logits
    num_classes: int


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

