"""Fused compositions: every module of one model run by one copy of the model's recurrent trunk.

A side-by-side composition (``compose.py``) runs K module graphs; K small recurrent ops at batch
B cost K weight sweeps per step. When the modules come from one model, differ only in which units
they keep (rolled mode, no mean compensation, the full vocabulary) and each recurrence can hold a
module's removed units at 0 on that module's rows (``Recurrence.silence_groups``: LSTM, GRU and
ReLU RNN from their input, a general cell by a per-row mask in its step), the same answers come
from one trunk:

* the input is tiled K times along the batch, so rows ``k*B .. k*B+B-1`` are module k's copy;
* a native op reads its input concatenated with a one-hot *group* code ``[T, K*B, K]``, and its
  ``W`` gets K matching columns: for module k's removed unit j, the silencing offset on the gates
  that keep j at exactly 0 (LSTM: input and output gate −1e4; GRU: update gate +1e4; ReLU RNN:
  −1e4). A general cell carries the rows' unit masks ``code @ keep`` through its ``Scan`` and
  multiplies them in wherever its step reads a unit and into its new states. A unit at 0
  contributes nothing anywhere, which is what removing it does;
* the head holds every module's channeled (rest, dominant) columns side by side ``[.., 2K]``
  (``modularize.channel_head``, as a module's head but for K classes);
  row group k keeps its own pair, and the vote is the side-by-side composition's (argmax of the
  log-odds; ``scores`` = the dominant probability, ``sigmoid(log-odds)``).

The trunk then runs once at batch K*B: one GEMM per step instead of K, which is what makes a
composition cheaper than its modules run apart. Kept units have the model's weights exactly, so
the fused graph answers as the modules do (up to float32 rounding; tested against onnxruntime).
A fused composition is for deployment: it holds no separable modules (split and replace work on
``composed.onnx``).
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import __version__
from .concern import Concern
from .graph import Model
from .io import keys
from .modularize import channel_head, input_signature

LABEL, SCORES = "label", "scores"


def why_not_fusable(model: Model, concerns: list[Concern], compensated: bool) -> str | None:
    """None when ``fuse`` applies, else the reason (one line)."""
    if model.shape == "enc-dec":
        return "translators route each sentence to one module; there is nothing to vote"
    if getattr(model, "ctc_blank", None) is not None:
        return ("a CTC head's modules vote over the blank (rest, dominant, blank); "
                "fused.onnx votes (rest, dominant) pairs")
    if len(model.inputs) != 1:
        return "the model has more than one input"
    if any(c.mode != "rolled" for c in concerns):
        return "unrolled modules keep different units at each step"
    if compensated:
        return "mean compensation gives each module its own biases"
    if any(c.vocabulary is not None or c.embedding_rank is not None for c in concerns):
        return "modules with pruned vocabularies or fewer embedding features read different embeddings"
    if model.opset.get("", model.opset.get("ai.onnx", 0)) < 13:
        return "opset below 13"
    for op in model.recurrent:
        why = op.why_not_silenced()
        if why:
            return why
    return None


def _const(name: str, values) -> gs.Constant:
    return gs.Constant(name, np.asarray(values))


def _group_code(g: gs.Graph, x: gs.Variable, K: int) -> gs.Variable:
    """``[K*B, K]`` float32: row k*B+b is one-hot k (B = the batch of the graph input ``x``)."""
    shape = gs.Variable("onnxmod_fused/input_shape", dtype=np.int64)
    batch = gs.Variable("onnxmod_fused/batch", dtype=np.int64)
    target = gs.Variable("onnxmod_fused/code_shape", dtype=np.int64)
    expanded = gs.Variable("onnxmod_fused/code_3d", dtype=np.float32)
    code = gs.Variable("onnxmod_fused/code", dtype=np.float32)
    g.nodes += [
        gs.Node("Shape", "onnxmod_fused/shape", inputs=[x], outputs=[shape]),
        gs.Node("Slice", "onnxmod_fused/batch", inputs=[shape, _const("onnxmod_fused/0", [0]),
                                                         _const("onnxmod_fused/1", [1])], outputs=[batch]),
        gs.Node("Concat", "onnxmod_fused/code_shape", attrs={"axis": 0},
                inputs=[_const("onnxmod_fused/K", [K]), batch, _const("onnxmod_fused/K_", [K])], outputs=[target]),
        gs.Node("Expand", "onnxmod_fused/expand_code",
                inputs=[_const("onnxmod_fused/eye", np.eye(K, dtype=np.float32)[:, None, :]), target],
                outputs=[expanded]),
        gs.Node("Reshape", "onnxmod_fused/code", inputs=[expanded, _const("onnxmod_fused/flat", [-1, K])],
                outputs=[code]),
    ]
    return code


def _vote(g: gs.Graph, logits: gs.Variable, code: gs.Variable, K: int, rank: int, class_ids) -> tuple:
    """``logits`` ``[K*B, (T,) 2K]`` -> (label ``[B, (T)]``, scores ``[B, (T,) K]``)."""
    p = "onnxmod_fused/vote"
    v = {n: gs.Variable(f"{p}/{n}", dtype=d) for n, d in (
        ("pairs", np.float32), ("mask", np.float32), ("masked", np.float32), ("own", np.float32),
        ("dom", np.float32), ("rest", np.float32), ("margin", np.float32), ("shape", np.int64),
        ("tail", np.int64), ("target", np.int64), ("grouped", np.float32), ("margins", np.float32),
        ("argmax", np.int64))}
    extra = rank - 2  # the step axes between batch and classes (0 or 1)
    # the outputs' shapes are written, not inferred: onnx infers no rank for a Reshape to a computed
    # target before opset 14, and a graph output needs one
    rows = [None] * (1 + extra)
    label = gs.Variable(LABEL, dtype=np.int64, shape=rows)
    scores = gs.Variable(SCORES, dtype=np.float32, shape=rows + [K])
    g.nodes += [
        # [K*B, (T,) K, 2]
        gs.Node("Reshape", f"{p}/pairs", inputs=[logits, _const(f"{p}/pair_shape", [0] * (1 + extra) + [K, 2])],
                outputs=[v["pairs"]]),
        # row group k keeps module k's pair: multiply by its one-hot code and sum the module axis
        gs.Node("Unsqueeze", f"{p}/mask",
                inputs=[code, _const(f"{p}/mask_axes", list(range(1, 1 + extra)) + [2 + extra])],
                outputs=[v["mask"]]),
        gs.Node("Mul", f"{p}/masked", inputs=[v["pairs"], v["mask"]], outputs=[v["masked"]]),
        gs.Node("ReduceSum", f"{p}/own", attrs={"keepdims": 0},
                inputs=[v["masked"], _const(f"{p}/module_axis", [-2])], outputs=[v["own"]]),
        gs.Node("Gather", f"{p}/dom", attrs={"axis": -1}, inputs=[v["own"], _const(f"{p}/one", np.int64(1))],
                outputs=[v["dom"]]),
        gs.Node("Gather", f"{p}/rest", attrs={"axis": -1}, inputs=[v["own"], _const(f"{p}/zero", np.int64(0))],
                outputs=[v["rest"]]),
        gs.Node("Sub", f"{p}/margin", inputs=[v["dom"], v["rest"]], outputs=[v["margin"]]),  # [K*B, (T)]
        gs.Node("Shape", f"{p}/shape", inputs=[v["margin"]], outputs=[v["shape"]]),
        gs.Node("Slice", f"{p}/tail", inputs=[v["shape"], _const(f"{p}/from1", [1]), _const(f"{p}/to_end", [rank])],
                outputs=[v["tail"]]),
        gs.Node("Concat", f"{p}/target", attrs={"axis": 0},
                inputs=[_const(f"{p}/K_rows", [K, -1]), v["tail"]], outputs=[v["target"]]),
        gs.Node("Reshape", f"{p}/grouped", inputs=[v["margin"], v["target"]], outputs=[v["grouped"]]),  # [K, B, (T)]
        gs.Node("Transpose", f"{p}/margins", attrs={"perm": list(range(1, 2 + extra)) + [0]},
                inputs=[v["grouped"]], outputs=[v["margins"]]),  # [B, (T,) K]
        gs.Node("ArgMax", f"{p}/argmax", attrs={"axis": -1, "keepdims": 0}, inputs=[v["margins"]],
                outputs=[v["argmax"]]),
        gs.Node("Gather", f"{p}/label", attrs={"axis": 0},
                inputs=[_const(f"{p}/class_ids", np.asarray(class_ids, dtype=np.int64)), v["argmax"]],
                outputs=[label]),
        gs.Node("Sigmoid", f"{p}/scores", inputs=[v["margins"]], outputs=[scores]),
    ]
    return label, scores


def fuse(model: Model, concerns: list[Concern], vocab_sha256: str | None = None, digest: str = "") -> onnx.ModelProto:
    """The fused composition of ``concerns`` (see the module docstring); ``why_not_fusable`` first."""
    reason = why_not_fusable(model, concerns, compensated=False)
    if reason:
        raise ValueError(f"{model.source}: cannot fuse: {reason}")
    m = model.fresh()
    g, K, x = m.graph, len(concerns), m.input
    tiled = gs.Variable("onnxmod_fused/tiled_input", dtype=x.dtype)
    for node in list(x.outputs):
        node.inputs = [tiled if t is x else t for t in node.inputs]
    g.nodes.append(gs.Node("Concat", "onnxmod_fused/tile", attrs={"axis": 0}, inputs=[x] * K, outputs=[tiled]))
    code = _group_code(g, x, K)
    for op in m.recurrent:  # module k's removed units held at 0 on row group k
        op.silence_groups(g, code, [c.keep[op.index] for c in concerns], f"onnxmod_fused/{op.index}")
    channel_head(m, [c.class_index for c in concerns], "fused")
    rank = m.output_rank  # as read (or probed) when the head was found: a declared shape may be missing
    logits = m.head.output
    logits.shape = None
    label, scores = _vote(g, logits, code, K, rank, [c.class_index for c in concerns])
    steps = ["steps"] * (rank - 2)  # declared, for outputs shape inference cannot follow (computed reshapes)
    label.shape, scores.shape = ["batch", *steps], ["batch", *steps, K]
    classes = [{"class_index": c.class_index, "class_name": c.class_name, "source_sha256": digest, "mode": c.mode}
               for c in concerns]
    meta = {keys.KIND: "fused", keys.VERSION: __version__, keys.SHAPE: m.shape,
            keys.CLASSES: json.dumps(classes, sort_keys=True),
            keys.INPUT_SIGNATURE: json.dumps(input_signature(m), sort_keys=True),
            keys.VOCAB_SHA256: vocab_sha256 or "", keys.SOURCE_SHA256: digest,
            keys.KEPT_UNITS: json.dumps([{op.name: int(c.keep[op.index].sum()) for op in m.recurrent}
                                              for c in concerns], sort_keys=True)}
    proto = m.export(outputs=[label, scores], metadata=meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto
