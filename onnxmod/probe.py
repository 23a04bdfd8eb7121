"""Probing a graph by running it: the sizes of tensors that static shape inference cannot tell
(a time-major output built by reshapes whose targets are computed), and whether a model declared
for one row at a time runs batched.

Inputs are made up, deterministic and cheap: token ids 1, floats from a seeded normal, ``True``;
a dynamic axis other than the batch takes the first size among ``SIZES`` the model runs at.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import runtime

SIZES = (8, 16, 32, 64, 128)


class ProbeError(Exception):
    """The graph did not run on made-up inputs (the message is onnxruntime's, one line)."""


def _inputs(graph: gs.Graph, batch: int, size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in graph.inputs:
        shape = list(t.shape or [batch])
        dims = [batch if i == 0 else (int(d) if isinstance(d, (int, np.integer)) and d > 0 else size)
                for i, d in enumerate(shape)]
        dtype = np.dtype(t.dtype) if t.dtype is not None else np.dtype(np.float32)
        if np.issubdtype(dtype, np.integer):
            feeds[t.name] = np.ones(dims, dtype=dtype)
        elif dtype == np.bool_:
            feeds[t.name] = np.ones(dims, dtype=bool)
        else:
            feeds[t.name] = (rng.standard_normal(dims) * 0.5).astype(dtype)
    return feeds


def run(graph: gs.Graph, names: list[str], batch: int, size: int | None = None, opset: dict | None = None):
    """``{name: array}`` for the tensors ``names`` of ``graph`` (left untouched) run on made-up
    inputs with ``batch`` rows; the size used for other dynamic axes is the first that runs."""
    from .graph import copy_graph

    g = copy_graph(graph)
    tensors = g.tensors()
    outs = []
    for n in names:
        t = tensors[n]
        if t.dtype is None:
            t.dtype = np.float32
        t.shape = None
        outs.append(t)
    g.outputs = outs
    g.cleanup(remove_unused_graph_inputs=False).toposort()
    proto = gs.export_onnx(g, do_type_check=False)
    if opset:
        del proto.opset_import[:]
        for domain, version in sorted(opset.items()):
            proto.opset_import.append(onnx.helper.make_opsetid(domain, version))
    last = None
    for s in ([size] if size else SIZES):
        try:
            sess = runtime.session(proto)
            res = sess.run(names, _inputs(g, batch, s))
            return dict(zip(names, res)), s
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own error types; reported as one line
            last = exc
    raise ProbeError(" ".join(str(last).split())[:400])


def shapes(graph: gs.Graph, names: list[str], opset: dict | None = None) -> dict:
    """``{name: (shape_a, shape_b)}``: the tensors' sizes in two runs that differ in every dynamic
    axis (2 then 3 rows; the first size the model runs at, then a larger one)."""
    a, size = run(graph, names, 2, opset=opset)
    later = [s for s in SIZES if s > size]
    b = None
    for s in later:
        try:
            b, _ = run(graph, names, 3, s, opset=opset)
            break
        except ProbeError:
            continue
    if b is None:
        b, _ = run(graph, names, 3, size, opset=opset)
    return {n: (list(a[n].shape), list(b[n].shape)) for n in names}


def batch_axis(graph: gs.Graph, name: str, opset: dict | None = None) -> int | None:
    """The axis of tensor ``name`` whose size follows the number of rows (None: none, or several)."""
    a, size = run(graph, [name], 2, opset=opset)
    b, _ = run(graph, [name], 3, size, opset=opset)
    sa, sb = a[name].shape, b[name].shape
    hits = [i for i, (x, y) in enumerate(zip(sa, sb)) if x == 2 and y == 3]
    return hits[0] if len(hits) == 1 else None


def rank(graph: gs.Graph, name: str, opset: dict | None = None) -> int:
    a, _ = run(graph, [name], 2, opset=opset)
    return a[name].ndim


def rows_independent(graph: gs.Graph, name: str, opset: dict | None = None) -> bool:
    """Whether row 0 of a two-row run equals a one-row run of the same row (a graph declared for one
    row at a time that computes each row on its own when given several)."""
    two, size = run(graph, [name], 2, opset=opset)
    one, _ = run(graph, [name], 1, size, opset=opset)
    a, b = two[name], one[name]
    axes = [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x == 2 and y == 1]
    if a.ndim != b.ndim or len(axes) != 1:
        return False
    first = np.take(a, [0], axis=axes[0])
    return first.shape == b.shape and np.allclose(first, b, rtol=1e-4, atol=1e-5)
