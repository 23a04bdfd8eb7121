"""Concern modularization (SPEC §3, step 5): one standalone ONNX module per class.

A module is the model with each recurrent layer physically restricted to the class's kept units
(rolled mode; see ``unrolled.py`` for per-step concerns) and its output layer *channeled* to two
outputs: ``rest`` (the mean of the other classes' weights and biases) and ``dominant`` (the class's
own weights and bias). The module's outputs are ``score``, the 2-way softmax
``[..., (rest, dominant)]``, and ``logits``, the channeled logits before it (compositions vote on
the log-odds ``logits[..., 1] - logits[..., 0]``, which never saturate as float32 softmax does).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import __version__
from .concern import Concern
from .graph import Model
from .io import keys
from .ops.base import UnitSelection
from .quantized import stored

SCORE, LOGITS = "score", "logits"


def selections(model: Model, concern: Concern) -> dict[int, UnitSelection]:
    out = {}
    for op in model.recurrent:
        mask = concern.keep[op.index]
        H = op.hidden_size
        out[op.index] = UnitSelection.from_keep(
            H, [np.flatnonzero(mask[d * H:(d + 1) * H]) for d in range(op.directions)])
    return out


def channeled(values: np.ndarray, axis: int, class_indices: list[int], blank: int | None = None) -> np.ndarray:
    """The head's weights or bias with the C class entries along ``axis`` replaced by, per class
    in ``class_indices``, the pair (rest = mean of the other classes', dominant = the class's).
    With a CTC ``blank``, the triple (rest, dominant, blank): rest is then the mean of the classes
    other than the class and the blank, and the blank keeps its own entry (``ctc.LAYOUT``)."""
    C = values.shape[axis]
    parts = []
    for c in class_indices:
        mask = np.ones(C, dtype=bool)
        mask[c] = False
        if blank is not None:
            mask[blank] = False
        dom = np.take(values, [c], axis=axis)
        rest = (np.compress(mask, values, axis=axis).mean(axis=axis, keepdims=True) if mask.any()
                else np.zeros_like(dom))
        parts += [rest, dom] + ([np.take(values, [blank], axis=axis)] if blank is not None else [])
    out = np.concatenate(parts, axis=axis)
    if np.issubdtype(values.dtype, np.integer):  # an integer head (MatMulInteger): the mean rounded
        info = np.iinfo(values.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(values.dtype)


def channel_head(model: Model, class_indices: list[int], tag: str, blank: int | None = None) -> None:
    """Rewrite the head's C classes to (rest, dominant) pairs, one per class in ``class_indices``
    ((rest, dominant, blank) triples for a CTC head's ``blank``): its weight and bias, every
    per-class constant after it (a bias added after a ``MatMul``) and every literal that sizes the
    class axis on the way to the output."""
    head = model.head
    w = stored(head.node, 1)
    w.replace(channeled(w.values, head.weight_axis, class_indices, blank), f"{head.node.name}/W_{tag}",
              head.weight_axis)
    if head.bias_node is not None:
        b = stored(head.bias_node, head.bias_index)
        b.replace(channeled(b.values, b.values.ndim - 1, class_indices, blank), f"{head.node.name}/B_{tag}",
                  b.values.ndim - 1)
    zp = head.node.inputs[3] if head.node.op == "MatMulInteger" and len(head.node.inputs) > 3 else None
    if isinstance(zp, gs.Constant) and np.asarray(zp.values).size > 1:  # per-class zero points of the weight
        z = np.asarray(zp.values)
        head.node.inputs[3] = gs.Constant(f"{head.node.name}/zp_{tag}",
                                          channeled(z, z.ndim - 1, class_indices, blank))
    width = (2 if blank is None else 3) * len(class_indices)
    for s in head.sites:
        c = np.asarray(s.node.inputs[s.input_index].values)
        if s.kind == "shape":
            c = c.copy()
            c.reshape(-1)[s.axis] = width
            s.node.inputs[s.input_index] = gs.Constant(f"{s.node.name}/classes_{tag}", c)
        elif c.ndim and c.shape[s.axis] > 1:  # a per-class constant (a bias after a MatMul)
            name = f"{head.node.name}/B_{tag}" if s.node.op == "Add" else f"{s.node.name}/classes_{tag}"
            s.node.inputs[s.input_index] = gs.Constant(name, channeled(c, s.axis, class_indices, blank))


def channel(model: Model, class_index: int, blank: int | None = None) -> tuple[gs.Variable, gs.Variable]:
    """Rewrite the head to (rest, dominant) (a CTC head: (rest, dominant, blank)); return the new
    (softmax, logits) outputs."""
    head = model.head
    channel_head(model, [class_index], "channeled", blank)
    for t in model.graph.tensors().values():  # free the names of the module's outputs
        if t.name in (SCORE, LOGITS) and t is not head.output:
            t.name = f"{t.name}_original"
    head.output.name = LOGITS
    head.output.shape = None  # was [..., C]; inferred again as [..., 2] on export
    head.output.dtype = np.float32
    score = gs.Variable(SCORE, dtype=np.float32)
    model.graph.nodes.append(gs.Node("Softmax", "onnxmod/score", attrs={"axis": -1},
                                     inputs=[head.output], outputs=[score]))
    return score, head.output


def input_signature(model: Model) -> list[dict]:
    """Name, dtype and shape (None for dynamic dims) of every graph input."""
    return [{"name": t.name, "dtype": str(np.dtype(t.dtype)),
             "shape": [d if isinstance(d, (int, np.integer)) else None for d in (t.shape or [])]}
            for t in model.inputs]


def model_digest(proto: onnx.ModelProto) -> str:
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


def module_metadata(model: Model, concern: Concern, vocab_sha256: str | None, digest: str,
                    features: int | None = None) -> dict:
    """``features``: the embedding's width before ``concern.embedding_rank`` reduced it."""
    layers = []
    for op in model.recurrent:
        k = concern.keep[op.index]
        layers.append({"op": op.name, "units": int(k.shape[-1]), "kept": int(k.sum()) if k.ndim == 1 else
                       [int(x) for x in k.sum(axis=1)],
                       # where the model wrote the layer otherwise (a Loop body, an unrolled chain), the module
                       # holds the native op that computes the same: say what it came from
                       **({} if op.form == "native" else {"form": op.form, "cell": op.op_type})})
    return {
        keys.KIND: "module",
        keys.VERSION: __version__,
        keys.CLASS_INDEX: concern.class_index,
        keys.CLASS_NAME: concern.class_name,
        keys.MODE: concern.mode,
        keys.SHAPE: model.shape,
        keys.SOURCE_SHA256: digest,
        keys.INPUT_SIGNATURE: json.dumps(input_signature(model), sort_keys=True),
        keys.VOCAB_SHA256: vocab_sha256 or "",
        keys.CONCERN: json.dumps({"layers": layers, "positives": concern.positives,
                                  "negatives": concern.negatives,
                                  **({} if concern.vocabulary is None else
                                     {"vocabulary": {"rows": int(concern.vocabulary.size),
                                                     "kept": int(concern.vocabulary.sum())}}),
                                  **({} if concern.embedding_rank is None else
                                     {"embedding": {"features": features, "kept": int(concern.embedding_rank)}})},
                                 sort_keys=True),
        # the input's length drives the recurrent steps only for many-input shapes (M:1, M:N)
        **({keys.MAX_STEPS: next(iter(concern.keep.values())).shape[0]}
           if concern.mode == "unrolled" and model.shape.startswith("M") else {}),
    }


def build_module(model: Model, concern: Concern, vocab_sha256: str | None = None,
                 digest: str | None = None, unrolled: str = "output", means: dict | None = None,
                 ctc_blank: int | None = None) -> onnx.ModelProto:
    """The module for ``concern`` as a checked ModelProto (``model`` itself is left untouched).
    ``ctc_blank``: a CTC head's blank, kept as every module's third logit (``onnxmod.ctc_blank``;
    default: the model's ``ctc_blank`` attribute, which ``pipeline.load.load_labelled`` sets)."""
    if ctc_blank is None:
        ctc_blank = getattr(model, "ctc_blank", None)
    m = model.fresh()
    if concern.vocabulary is not None:
        m.prune_vocabulary(concern.vocabulary)
    if concern.mode == "rolled":
        m.apply_selection(selections(m, concern), means)
    else:
        from .unrolled import apply_unrolled

        apply_unrolled(m, concern, unrolled)
    if concern.embedding_rank is not None:
        m.reduce_embedding(concern.embedding_rank)
    score, logits = channel(m, concern.class_index, ctc_blank)
    meta = module_metadata(m, concern, vocab_sha256, digest or model_digest(model.original), model.embedding_width())
    if ctc_blank is not None:
        meta[keys.CTC_BLANK] = str(ctc_blank)
    if getattr(model, "output_vocab_sha256", None):  # a CTC head's charset: what each class index means
        meta[keys.OUTPUT_VOCAB_SHA256] = model.output_vocab_sha256
    if concern.mode == "unrolled":
        meta[keys.UNROLLED_SEMANTICS] = unrolled
    proto = m.export(outputs=[score, logits], metadata=meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto
