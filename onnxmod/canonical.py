"""Canonicalizing a model before its recurrences are recognized, with a maintained optimizer.

Exporters write the same computation many ways: reshape targets built at run time from ``Shape`` →
``Gather`` → ``Unsqueeze`` → ``Concat``, one copy of a weight per unrolled step, ``Identity`` chains,
repeated subexpressions, an ``If`` on a constant. onnxscript's optimizer (constant folding, with
shape arithmetic folded where shapes are static, and its default rewrite rules) and onnx-ir's passes
(equal initializers made one, common subexpressions eliminated, identities removed) turn them into
one form; onnxmod's recognizers then read by value and meaning.

Memory stays bounded: nothing is folded whose output onnxmod cannot size beforehand or that would
exceed ``fold.FOLD_CAP`` (``should_fold``), and the optimizer's own limits cap what it evaluates.
What it could not take (an op it does not know, a malformed subgraph) leaves the model as it was,
and the reason is returned.
"""
from __future__ import annotations

import numpy as np
import onnx

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


def canonicalize(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """The canonical form of ``proto`` (a new proto; ``proto`` is untouched), and None, or the
    model unchanged and why the optimizer could not take it (one line)."""
    try:
        import onnx_ir as ir
        import onnx_ir.passes.common as passes
        from onnxscript.optimizer import optimize_ir
    except ImportError as exc:  # pragma: no cover - runtime dependencies
        return proto, f"onnxscript's optimizer is not installed ({exc})"
    try:
        model = ir.serde.deserialize_model(proto)
        optimize_ir(model, num_iterations=2, input_size_limit=INPUT_LIMIT, output_size_limit=OUTPUT_LIMIT,
                    should_fold=_should_fold)
        for p in (passes.DeduplicateInitializersPass(), passes.CommonSubexpressionEliminationPass(),
                  passes.IdentityEliminationPass(), passes.RemoveUnusedNodesPass()):
            p(model)
        out = ir.serde.serialize_model(model)
    except Exception as exc:  # noqa: BLE001 - a third-party optimizer's failure leaves the model as written
        return proto, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return out, None


def initializer_count(proto: onnx.ModelProto) -> int:
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in proto.graph.initializer))
