"""Canonicalizing a model before its recurrences are recognized, with a maintained optimizer.

Exporters write the same computation many ways: reshape targets built at run time from ``Shape`` →
``Gather`` → ``Unsqueeze`` → ``Concat``, one copy of a weight per unrolled step, ``Identity`` chains,
repeated subexpressions, an ``If`` on a constant. onnxscript's optimizer (constant folding, with
shape arithmetic folded where shapes are static, and its default rewrite rules) and onnx-ir's passes
(equal initializers made one, common subexpressions eliminated, identities removed) turn them into
one form; onnxmod's recognizers then read by value and meaning. One rewrite is onnxmod's own: an
operand ``Expand``-ed to the ``Shape`` of the other operand of a broadcasting op is read as the
broadcast it is (``_broadcast_instead_of_expand``).

Memory stays bounded: nothing is folded whose output onnxmod cannot size beforehand or that would
exceed ``fold.FOLD_CAP`` (``should_fold``), and the optimizer's own limits cap what it evaluates.
What it could not take (an op it does not know, a malformed subgraph) leaves the model as it was,
and the reason is returned.
"""
from __future__ import annotations

import numpy as np
import onnx

from . import optable
from .fold import _GROWING, FOLD_CAP

# onnxscript's own limits (elements): what it evaluates and what it writes back as a constant
INPUT_LIMIT = 1 << 16
OUTPUT_LIMIT = 1 << 20


def _static_size(value) -> int | None:
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    n = 1
    for d in shape:
        if not isinstance(d, int):
            return None
        n *= d
    return n


def _should_fold(node) -> bool | None:
    """onnxscript's folding hook: ops that can make a tensor much larger than their inputs are
    folded only when their output's size is known and small."""
    if node.op_type in _GROWING or node.op_type in ("ConstantOfShape", "Expand", "Tile", "Range"):
        sizes = [_static_size(o) for o in node.outputs]
        if any(s is None for s in sizes):
            return False
        if sum(sizes) * 8 > FOLD_CAP or sum(sizes) > OUTPUT_LIMIT:
            return False
    return None


MIN_OPSET = 13  # the forms onnxmod writes (Unsqueeze/Split/Squeeze taking their axes and sizes as inputs)


def upgrade_opset(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """A model written for an opset before ``MIN_OPSET`` converted to it with onnx's version
    converter (what onnxmod writes, unrolled modules' per-step masks among them, then runs in it);
    the line that says so, or why it could not (the model then stays as written)."""
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None or version >= MIN_OPSET:
        return proto, None
    try:
        from onnx import version_converter

        out = version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter's refusal leaves the model as written
        return proto, f"opset {version} kept: onnx's version converter refused ({' '.join(str(exc).split())[:200]})"
    return out, f"opset {version} -> {MIN_OPSET} (onnx's version converter)"


def canonicalize(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """The canonical form of ``proto`` (a new proto; ``proto`` is untouched), and None, or the
    model unchanged and why the optimizer could not take it (one line).

    Loop and Scan bodies are the recurrence front-ends' to read as the model wrote them: nothing is
    folded or rewritten inside a subgraph, and the rewrite rules and identity elimination (which
    reach into subgraphs) run only on models that have none. An ``If`` on a constant is inlined."""
    try:
        import onnx_ir as ir
        import onnx_ir.passes.common as passes
        from onnxscript import rewriter
        from onnxscript.optimizer import fold_constants_ir
    except ImportError as exc:  # pragma: no cover - runtime dependencies
        return proto, f"onnxscript's optimizer is not installed ({exc})"
    proto = _without_declared_shapes(proto)
    try:
        model = ir.serde.deserialize_model(proto)
        main = model.graph
        subgraphs = any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
                        for node in main for a in node.attributes.values())

        def should_fold(node):
            return False if node.graph is not main else _should_fold(node)

        for _ in range(2):
            fold_constants_ir(model, onnx_shape_inference=True, input_size_limit=INPUT_LIMIT,
                              output_size_limit=OUTPUT_LIMIT, should_fold=should_fold)
            _broadcast_instead_of_expand(main)
            if not subgraphs:
                rewriter.RewritePass(rewriter._DEFAULT_REWRITE_RULES)(model)
                passes.IdentityEliminationPass()(model)
            passes.RemoveUnusedNodesPass()(model)
        if not subgraphs:  # both would rewrite what loop bodies read from outside by name
            passes.DeduplicateInitializersPass(size_limit=1 << 24)(model)
            passes.CommonSubexpressionEliminationPass()(model)
            passes.RemoveUnusedNodesPass()(model)
        out = ir.serde.serialize_model(model)
    except Exception as exc:  # noqa: BLE001 - a third-party optimizer's failure leaves the model as written
        return proto, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    _restore_bodies(out, proto)
    return out, None


def _without_declared_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph outputs keep their types but not their declared shapes, and with no
    value_info: exporters declare shapes that are wrong (ddddocr's ``[1, seqlen]`` for ``[T, 1, C]``),
    and an optimizer that trusted them would rewrite reshape targets to match."""
    if not any(o.type.tensor_type.HasField("shape") for o in proto.graph.output) and not proto.graph.value_info:
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for o in out.graph.output:
        if o.type.HasField("tensor_type"):
            o.type.tensor_type.ClearField("shape")
    del out.graph.value_info[:]
    return out


# element-wise ops that broadcast their operands (numpy rules): Clip's bounds are scalars, BitShift left alone
_BROADCASTING = optable.NARY - {"Clip", "BitShift"}


def _broadcast_instead_of_expand(graph) -> None:
    """``Op(b, Expand(a, Shape(b)))`` is ``Op(b, a)`` for an op that broadcasts: both give
    ``broadcast(a, b)`` everywhere (torch's legacy exporter writes ``expand_as`` so: ``F.normalize``,
    ``mask.expand_as(y)``). Read as a broadcast, the unit flow follows the op instead of reading
    ``b`` at full width; the ``Expand`` and ``Shape`` go when nothing else reads them."""
    for node in list(graph):
        if node.op_type not in _BROADCASTING or node.domain not in ("", "ai.onnx"):
            continue
        for i, v in enumerate(node.inputs):
            ex = v.producer() if v is not None else None
            if ex is None or ex.op_type != "Expand" or ex.domain not in ("", "ai.onnx") or len(ex.inputs) != 2:
                continue
            sh = ex.inputs[1].producer() if ex.inputs[1] is not None else None
            if sh is None or sh.op_type != "Shape" or sh.attributes.get("start") is not None \
                    or sh.attributes.get("end") is not None:
                continue
            if any(w is sh.inputs[0] for j, w in enumerate(node.inputs) if j != i):
                node.replace_input_with(i, ex.inputs[0])


def _restore_bodies(out: onnx.ModelProto, proto: onnx.ModelProto) -> None:
    """Subgraphs exactly as the model wrote them (the optimizer annotates their shapes and names
    their unnamed nodes like the main graph's), and the main graph's generated node names made
    distinct from any name inside them."""
    bodies = {(n.op_type, tuple(n.output)): n for n in proto.graph.node
              if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)}
    for k, n in enumerate(out.graph.node):
        if (n.op_type, tuple(n.output)) in bodies:
            del n.attribute[:]
            n.attribute.extend(bodies[n.op_type, tuple(n.output)].attribute)
        elif not n.name or n.name == "node" or (n.name.startswith("node_") and n.name[5:].isdigit()):
            n.name = f"onnxmod_canonical/{n.op_type}_{k}"


def initializer_count(proto: onnx.ModelProto) -> int:
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in proto.graph.initializer))
