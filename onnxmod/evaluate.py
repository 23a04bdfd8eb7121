"""Evaluation: accuracy of models and compositions, per class; Jaccard index; parameter counts.

**Jaccard index** (onnxmod's definition, on unit positions): for a module and the model it came
from, ``J = |kept ∩ all| / |kept ∪ all| = Σ kept units / Σ units`` summed over every recurrent
layer and direction (and, in unrolled mode, every step). J = 1 means the module kept every unit.
(The reference implementation compared weight *values* as sets, which says little.)
"""
from __future__ import annotations

import json

import numpy as np
import onnx

from . import runtime
from .concern import Concern
from .errors import InputError
from .io import keys


def kind(proto: onnx.ModelProto) -> str:
    meta = {p.key: p.value for p in proto.metadata_props}
    return meta.get(keys.KIND, "model")


def predict(proto_or_path, x: np.ndarray, batch_size: int = 512, threads: int | None = None) -> np.ndarray:
    """Class predictions: argmax of a model's logits, a composition's ``label``, or a module's
    "is dominant" decision (1/0)."""
    proto = proto_or_path if isinstance(proto_or_path, onnx.ModelProto) else onnx.load(str(proto_or_path))
    check_length(proto, x, "input")
    sess = runtime.session(proto, threads=threads)
    k = kind(proto)
    if k in ("composition", "fused"):
        (label,) = runtime.run_batched(sess, x, ["label"], batch_size)
        return label
    (out,) = runtime.run_batched(sess, x, [sess.get_outputs()[0].name], batch_size)
    return out.argmax(axis=-1)


def module_scores(proto: onnx.ModelProto, x: np.ndarray, batch_size: int = 512, threads: int | None = None):
    """A module's dominant probability (``score[..., 1]``), from which its decision and AUC follow."""
    check_length(proto, x, "input")
    sess = runtime.session(proto, threads=threads)
    (score,) = runtime.run_batched(sess, x, ["score"], batch_size)
    return score[..., 1]


def predict_composed(proto: onnx.ModelProto, x: np.ndarray, batch_size: int = 512, threads: int | None = None):
    """A composition's ``label`` and ``scores`` (each module's dominant probability) in one pass."""
    check_length(proto, x, "input")
    sess = runtime.session(proto, threads=threads)
    label, scores = runtime.run_batched(sess, x, ["label", "scores"], batch_size)
    return label, scores


def check_length(proto: onnx.ModelProto, x: np.ndarray, where: str) -> None:
    """Unrolled modules know concerns only for the steps seen in tracing: refuse longer inputs."""
    meta = {p.key: p.value for p in proto.metadata_props}
    limit = meta.get(keys.MAX_STEPS)
    if limit and x.ndim >= 2 and x.shape[1] > int(limit):
        raise InputError(f"{where}: sequences of length {x.shape[1]} are longer than this unrolled "
                         f"{meta.get(keys.KIND, 'module')} supports ({limit} steps, the longest seen in tracing)")


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    valid = y >= 0
    return float((pred[valid] == y[valid]).mean()) if valid.any() else float("nan")


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): the standard error of an AUC measured on this many samples."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / max(
        positives * negatives, 1)
    return float(np.sqrt(max(var, 0.0)))


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Threshold-free quality of a module's dominant score (Mann-Whitney U; ties get mid-ranks).

    Channeled modules rank well but are not calibrated at 0.5 (their "rest" logit is a mean), so
    AUC says more about a module than its binary accuracy does."""
    score, positive = np.asarray(score, np.float64).ravel(), np.asarray(positive, bool).ravel()
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return None
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid = ends - (counts - 1) / 2.0  # 1-based mid-rank of each distinct value
    ranks = mid[inverse]
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, num_classes: int) -> list[float | None]:
    """Per class, the share of its labelled samples (steps) predicted as it; None for a class with
    none. Two bincounts: O(samples + classes), whatever the head's width."""
    y, pred = np.asarray(y).ravel(), np.asarray(pred).ravel()
    valid = (y >= 0) & (y < num_classes)
    support = np.bincount(y[valid], minlength=num_classes)
    hits = np.bincount(y[valid & (pred == y)], minlength=num_classes)
    return [float(h / n) if n else None for h, n in zip(hits.tolist(), support.tolist())]


def jaccard(concern: Concern) -> float:
    return concern.kept_fraction()


def describe_classes(proto: onnx.ModelProto) -> list[dict]:
    meta = {p.key: p.value for p in proto.metadata_props}
    return json.loads(meta.get(keys.CLASSES, "[]"))
