"""onnxruntime sessions, created once and run in batches."""
from __future__ import annotations

import contextlib
import os
import re

import numpy as np
import onnx
import onnxruntime as ort

from . import progress as _progress
from .errors import InputError

MESSAGE_LIMIT = 500  # characters of an onnxruntime message kept in a one-line refusal
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : ")


def ort_message(exc: BaseException) -> str:
    """onnxruntime's message on one line: every line kept (its details, e.g. ``index: 0 Got: 256
    Expected: 1``, come after the first), whitespace collapsed, the ``[ONNXRuntimeError] : 2 :``
    code dropped, at most ``MESSAGE_LIMIT`` characters."""
    msg = _ORT_PREFIX.sub("", " ".join(str(exc).split())) or type(exc).__name__
    return msg if len(msg) <= MESSAGE_LIMIT else msg[:MESSAGE_LIMIT - 1] + "…"


def session(model, threads: int | None = None) -> ort.InferenceSession:
    """An InferenceSession for a path, bytes or ModelProto (CPU, no spinning, quiet)."""
    so = ort.SessionOptions()
    so.log_severity_level = 4  # failures surface as exceptions (one line); no log lines on stderr
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, (str, os.PathLike)):
        model = str(model)
    try:
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # a graph onnxruntime refuses (the static checks passed): one line, named node
        raise InputError(f"onnxruntime cannot load the model: {ort_message(exc)}") from None


def batches(sess: ort.InferenceSession, x, outputs: list[str] | None = None, batch_size: int = 512,
            progress=None):
    """Run ``sess`` over ``x`` in batches, yielding ``(start, stop, results)`` per batch.

    ``x`` is the array for the first input, or a dict {input name: array} (same number of rows).
    ``progress`` is an optional callable receiving the number of rows just processed.
    """
    feeds = x if isinstance(x, dict) else {sess.get_inputs()[0].name: x}
    n = next(iter(feeds.values())).shape[0]
    with _progress.bar(n) if progress is None else contextlib.nullcontext() as bar:  # a caller's own bar wins
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            try:
                res = sess.run(outputs, {k: v[start:stop] for k, v in feeds.items()})
            except Exception as exc:  # onnxruntime raises its own types; keep one line
                raise InputError(f"onnxruntime failed on rows {start}..{stop - 1}: {ort_message(exc)}") from None
            yield start, stop, res
            (progress or bar.update)(stop - start)


def run_batched(sess: ort.InferenceSession, x, outputs: list[str] | None = None,
                batch_size: int = 512, progress=None) -> list[np.ndarray]:
    """``batches`` concatenated: each (batch-first) output over axis 0."""
    names = outputs or [o.name for o in sess.get_outputs()]
    chunks: list[list[np.ndarray]] = []
    for start, stop, res in batches(sess, x, outputs, batch_size, progress):
        for name, r in zip(names, res):
            if np.ndim(r) == 0 or np.shape(r)[0] != stop - start:  # a damaged graph: never index labels with it
                raise InputError(f"the model's output {name!r} has shape {list(np.shape(r))} for a batch of "
                                 f"{stop - start} rows; outputs must be batch-first")
        chunks.append(res)
    return [np.concatenate([c[i] for c in chunks], axis=0) for i in range(len(chunks[0]))]
