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

from .canonical import canonicalize, upgrade_opset
from .errors import OnnxmodError, UnsupportedModelError
from .fold import fold_bounded
from .ops import recurrent_op_types
from .ops.layout import to_time_major


def prepare_graph(proto: onnx.ModelProto, source: str, strict: bool = True) -> tuple[gs.Graph, list[str]]:
    """The prepared graph, and what preparation rewrote (one line each; none: the graph computes
    as the proto does, node for node). A first input declared for one row at a time is relaxed
    when the graph then computes rows independently (checked by running it). A graph that runs
    batched but mixes rows (one dynamic quantization scale for the whole batch, say) is refused
    (``strict``; onnxmod traces and scores many rows at once), one that does not run batched at all
    is left as declared."""
    relaxed_proto, relaxed = relax_batch(proto)
    if relaxed:
        graph, rewrites = _prepare(relaxed_proto, source)
        independent = _rows_independent(graph, proto)
        if independent:
            return graph, [relaxed] + rewrites
        if independent is False and strict:
            raise UnsupportedModelError(
                f"{source}: input {graph.inputs[0].name!r} is declared for one row at a time and the graph mixes "
                f"rows when given several (a row's outputs change with the others in its batch: a dynamic "
                f"quantization's one scale per batch, say); onnxmod traces and scores many rows at once")
    return _prepare(proto, source)


def _prepare(proto: onnx.ModelProto, source: str) -> tuple[gs.Graph, list[str]]:
    work, upgraded = upgrade_opset(proto)
    work, why = canonicalize(work)
    rewrites = ([upgraded] if upgraded else []) + ([f"not canonicalized: {why}"] if why else [])
    inferred = onnx.shape_inference.infer_shapes(work if work is not proto else copy.deepcopy(proto), data_prop=True)
    graph = gs.import_onnx(inferred)
    rewrites += [f"{name}: layout=1 -> layout=0" for name in to_time_major(graph, recurrent_op_types())]
    try:
        severity, G_LOGGER.severity = G_LOGGER.severity, G_LOGGER.ERROR  # its warnings are not the user's
        try:
            fold_bounded(graph, source).cleanup().toposort()  # refuses a folding bomb, naming the node
        finally:
            G_LOGGER.severity = severity
    except OnnxmodError:
        raise
    except Exception as exc:  # graphsurgeon folding is best-effort
        raise UnsupportedModelError(f"{source}: cannot normalize the graph ({type(exc).__name__}: {exc})") from exc
    return graph, rewrites


BATCH = "batch"  # the name a relaxed batch axis gets


def relax_batch(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """A model whose first input declares a batch of 1 (``[1, ...]``, rank ≥ 2), as exporters write
    for one-image-at-a-time pipelines, with that axis made dynamic (a copy; ``proto`` untouched) and
    the line that says so; the graph is then checked to compute rows independently."""
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if not inputs:
        return proto, None
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) < 2 or not dims[0].HasField("dim_value") or dims[0].dim_value != 1:
        return proto, None
    out = copy.deepcopy(proto)
    inp = next(i for i in out.graph.input if i.name == inputs[0].name)
    inp.type.tensor_type.shape.dim[0].dim_param = BATCH
    for o in out.graph.output:  # declared output shapes held the batch of 1 (and are not always right)
        if o.type.HasField("tensor_type"):
            o.type.tensor_type.ClearField("shape")
    del out.graph.value_info[:]
    return out, f"input {inputs[0].name}: declared batch of 1 relaxed (the graph computes each row on its own)"


def _rows_independent(graph: gs.Graph, proto: onnx.ModelProto) -> bool:
    from . import probe

    opset = {o.domain: o.version for o in proto.opset_import}
    default = "" if "" in opset or "ai.onnx" not in opset else "ai.onnx"
    opset[default] = max(opset.get(default, 0), int(getattr(graph, "opset", 0) or 0))  # an upgraded opset
    try:
        return probe.rows_independent(graph, graph.outputs[0].name, opset)
    except probe.ProbeError:
        return None  # it does not run on several rows at all
