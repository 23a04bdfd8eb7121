"""The one reference evaluator of the recurrence side: the value of one node whose inputs are all
known, computed by ONNX's reference implementation under the opset of the graph the node is in.

Front-ends fold what a cell computes from constants (a weight a model normalizes before its loop, a
bias it broadcasts) one node at a time. A node that would make a large tensor from a small one
(``ConstantOfShape``, ``Expand``, ``Tile``, ``Range``, ``Pad``, ``OneHot``) is evaluated only when
its output has at most ``FOLD_LIMIT`` elements (computed before it is made), so folding stays
bounded whatever shapes a model feeds it; ``Resize`` is never folded.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.reference import ReferenceEvaluator

FOLD_LIMIT = 1 << 24  # elements: a constant larger than this is not made here (never a cell's weight)
DEFAULT_OPSET = 17  # a graph that does not say its opset


class NotEvaluated(Exception):
    """The reference implementation cannot compute this node (an op or attribute it does not know)."""


def _size(shape) -> float:
    return float(np.prod([max(int(d), 0) for d in shape], dtype=np.float64)) if len(shape) else 1.0


def output_size(node: gs.Node, args: list) -> float | None:
    """How many elements ``node`` (one of the ops that make large tensors) would output; None when
    that cannot be told before computing it."""
    a = [None if x is None else np.asarray(x) for x in args]
    need = {"ConstantOfShape": 1, "Range": 3}.get(node.op, 2)
    if len(a) < need or any(x is None for x in a[:need]):
        return None  # the size is in an attribute (an old opset's Pad) or an input is omitted: not told here
    try:
        if node.op == "ConstantOfShape":
            return _size(a[0].reshape(-1))
        if node.op == "Expand":
            return _size(np.broadcast_shapes(a[0].shape, tuple(int(d) for d in a[1].reshape(-1))))
        if node.op == "Tile":
            return a[0].size * _size(a[1].reshape(-1))
        if node.op == "Range":
            start, limit, delta = (float(x.reshape(-1)[0]) for x in a[:3])
            return max(np.ceil((limit - start) / delta), 0) if delta else None
        if node.op == "Pad":
            pads = a[1].reshape(-1).astype(np.int64)
            r = a[0].ndim
            return _size([d + max(int(pads[i]), 0) + max(int(pads[i + r]), 0) for i, d in enumerate(a[0].shape)])
        if node.op == "OneHot":
            return a[0].size * float(a[1].reshape(-1)[0])
    except (ValueError, IndexError):  # shapes that do not broadcast, too few pads
        return None
    return 0.0


_GROWING = ("ConstantOfShape", "Expand", "Tile", "Range", "Pad", "OneHot")


def evaluate(node: gs.Node, args: list, opset: int | None) -> list[np.ndarray]:
    """Every output of ``node`` given its inputs' values ``args`` (None for an omitted optional input),
    dtypes kept. Raises ``NotEvaluated`` when it cannot (or must not, ``FOLD_LIMIT``) be computed."""
    if node.op == "Constant":
        v = node.attrs.get("value")
        if v is None:
            raise NotEvaluated(f"Constant {node.name!r} holds no 'value'")
        return [np.asarray(v.values if isinstance(v, gs.Constant) else v)]
    if node.op == "Resize" or any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        raise NotEvaluated(f"{node.op} is not folded")
    if node.op in _GROWING:
        size = output_size(node, args)
        if size is None or size > FOLD_LIMIT:
            raise NotEvaluated(f"{node.op} {node.name!r} would make a tensor of {size} elements")
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(args)]
    outs = [f"out{i}" for i in range(len(node.outputs))]
    feeds = {n: np.asarray(a) for n, a in zip(names, args) if n}
    proto = onnx.helper.make_node(node.op, names, outs, domain=node.domain or "", **{
        k: (v.values if isinstance(v, gs.Constant) else v) for k, v in node.attrs.items()})
    graph = onnx.helper.make_graph(
        [proto], "fold",
        [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in feeds.items()],
        [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", int(opset or DEFAULT_OPSET))])
    try:
        res = ReferenceEvaluator(model).run(None, feeds)
    except (RuntimeError, ValueError, TypeError, IndexError, onnx.checker.ValidationError) as exc:
        # what the reference implementation raises on an op it does not know (NotImplementedError, a
        # RuntimeError) or on inputs the op does not accept (types, shapes, indices out of range)
        raise NotEvaluated(f"{node.op} {node.name!r}: {type(exc).__name__}") from None
    return [np.asarray(r) for r in res]
