"""Constant folding with a memory bound.

graphsurgeon's ``fold_constants`` evaluates every node whose inputs are all constants with
onnxruntime, including intermediate tensors it never keeps: three added nodes
(``ConstantOfShape [20000, 20000]`` -> ``ReduceSum`` -> ``Add``) make it allocate 1.6 GB to fold
one bias. Here every foldable node's output size is known before anything runs (from shape
inference, or from its constant inputs for the ops that make large tensors out of small ones);
a node whose output would exceed ``limit_bytes`` is refused with its name, and a node whose size
cannot be known and that can make a tensor larger than its inputs is not folded (it stays in the
graph as onnxruntime computes it).

``limit_bytes``: ``FOLD_CAP`` or the largest constant the model file already holds, whichever is
larger (a transposed embedding table folds as before; what amplifies a few bytes into gigabytes
does not).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .errors import UnsupportedModelError

FOLD_CAP = 64 << 20  # bytes

# ops whose output can be much larger than their inputs
_GROWING = {"ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "Pad", "OneHot", "EyeLike",
            "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "MatMul", "Gemm", "Einsum",
            "Mul", "Add", "Sub", "Div", "Where", "Pow", "Equal", "Less", "Greater", "And", "Or", "Xor", "Max", "Min",
            "Sum", "Mean", "BitShift", "Mod", "PRelu", "Concat", "ScatterND", "CumSum", "Loop", "Scan", "If",
            "GatherElements", "Gather", "Col2Im", "DFT", "STFT", "MelWeightMatrix", "BlackmanWindow", "HannWindow",
            "HammingWindow", "Bernoulli", "Multinomial", "CenterCropPad", "Unique", "NonZero", "TopK"}


def _itemsize(dtype) -> int:
    try:
        return max(np.dtype(dtype).itemsize, 1)
    except TypeError:
        return 8


def _values(t):
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def _elements_from_inputs(node: gs.Node) -> int | None:
    """Output elements of the growing ops whose size their constant inputs decide, else None."""
    try:
        ins = [_values(i) if i is not None and i.name else None for i in node.inputs]
        if node.op == "ConstantOfShape" and ins and ins[0] is not None:
            return int(np.prod([int(d) for d in ins[0].reshape(-1)], dtype=object))
        if node.op == "Expand" and len(ins) > 1 and ins[1] is not None and node.inputs[0].shape is not None:
            shape = [int(d) for d in ins[1].reshape(-1)]
            src = [d if isinstance(d, (int, np.integer)) else 1 for d in node.inputs[0].shape]
            n = max(len(shape), len(src))
            a, b = [1] * (n - len(shape)) + shape, [1] * (n - len(src)) + src
            return int(np.prod([max(int(x), int(y)) for x, y in zip(a, b)], dtype=object))
        if node.op == "Tile" and len(ins) > 1 and ins[1] is not None and ins[0] is not None:
            return int(ins[0].size) * int(np.prod([int(r) for r in ins[1].reshape(-1)], dtype=object))
        if node.op == "Range" and len(ins) == 3 and all(v is not None for v in ins):
            start, limit, delta = (float(v.reshape(-1)[0]) for v in ins)
            return max(int(np.ceil((limit - start) / delta)), 0) if delta else None
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def _output_bytes(node: gs.Node) -> int | None:
    """Bytes of the node's largest output, or None when it cannot be known before running it."""
    largest = 0
    for out in node.outputs:
        shape = out.shape
        n = None
        if shape is not None and all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
            n = int(np.prod([int(d) for d in shape], dtype=object))
        if n is None:
            n = _elements_from_inputs(node)
        if n is None:
            return None
        largest = max(largest, n * _itemsize(out.dtype if out.dtype is not None else np.float64))
    return largest


def largest_constant(graph: gs.Graph) -> int:
    sizes = [t.values.nbytes for t in graph.tensors().values()
             if isinstance(t, gs.Constant) and hasattr(t.values, "nbytes")]
    return max(sizes, default=0)


def fold_bounded(graph: gs.Graph, source: str, limit_bytes: int | None = None) -> gs.Graph:
    """``graph.fold_constants`` (error_ok) that refuses, before anything runs, a foldable node
    whose output would exceed ``limit_bytes`` (default: see module doc), and leaves unfolded a
    growing node whose output size is unknown."""
    limit = limit_bytes if limit_bytes is not None else max(FOLD_CAP, largest_constant(graph))
    refused = []

    def exclude(node: gs.Node) -> bool:
        size = _output_bytes(node)
        if size is None:
            return node.op in _GROWING
        if size > limit:
            refused.append((node, size))
            return True
        return False

    graph.fold_constants(error_ok=True, should_exclude_node=exclude, size_threshold=limit)
    if refused:
        node, size = refused[0]
        raise UnsupportedModelError(
            f"{source}: node {node.name or node.op!r} ({node.op}) computes a constant of {size:,} bytes from "
            f"constants, above the folding limit of {limit:,} bytes (the largest of {FOLD_CAP:,} and the model's "
            f"largest weight); onnxmod does not fold or run it")
    return graph
