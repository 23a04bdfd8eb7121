"""Graph preparation: what every model goes through before its readouts are normalized
(``onnxmod.rewrite``) and its recurrences recognized (``onnxmod.recurrence``).

Shapes are inferred (with data propagation), batch-major recurrent ops become time-major ones
(``ops.layout``), constants are folded and the graph is cleaned and sorted. The proto given is
never modified.
"""
from __future__ import annotations

import copy

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER

from .errors import OnnxmodError, UnsupportedModelError
from .fold import fold_bounded
from .ops import recurrent_op_types
from .ops.layout import to_time_major


def prepare_graph(proto: onnx.ModelProto, source: str) -> tuple[gs.Graph, list[str]]:
    """The prepared graph, and what preparation rewrote (one line each; none: the graph computes
    as the proto does, node for node)."""
    inferred = onnx.shape_inference.infer_shapes(copy.deepcopy(proto), data_prop=True)
    graph = gs.import_onnx(inferred)
    rewrites = [f"{name}: layout=1 -> layout=0" for name in to_time_major(graph, recurrent_op_types())]
    try:
        severity, G_LOGGER.severity = G_LOGGER.severity, G_LOGGER.ERROR  # its warnings are not the user's
        try:
            fold_bounded(graph, source).cleanup().toposort()  # refuses a folding bomb, naming the node
        finally:
            G_LOGGER.severity = severity
    except OnnxmodError:
        raise
    except Exception as exc:  # graphsurgeon folding is best-effort
        raise UnsupportedModelError(f"{source}: cannot normalize the graph ({type(exc).__name__}: {exc})")
    return graph, rewrites
