"""Labels taken from the model itself (``--labels model``): its own answers on the data's inputs.

A user's traffic, or a CTC model's training data, has no per-step labels; the model's answers are
what a decomposition should preserve anyway. With ``labels="model"`` the data may hold only
``x_train``/``x_test`` (and ``x_val``), and ``y_*`` become the model's argmax on them: one class
per sample for one-output models, one per output step for many-output models. Scores against
such labels are *agreement with the model* (fidelity), not accuracy: the model itself scores
100 %, and reports say so.

Padding follows the data's padding rule, first that applies:

1. the data holds ``y_<split>`` anyway: its ``-1`` entries stay ``-1`` (its own padding);
2. a CTC model (``ctc_blank`` given): every step is labelled (the blank is a class like any other);
3. a many-output model reading token ids whose output steps line up with its input steps, and a
   padding token the data names (``pad_id``, a scalar, or ``vocab[0]`` one of ``<pad>``,
   ``<PAD>``, ``[PAD]``): steps whose input token is padding get ``-1``;
4. otherwise every step is labelled (a 1:N model's output steps cannot be matched to input
   tokens).

Translators are refused: their labels are the target sentences the decoder reads (teacher
forcing), which the model cannot supply.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from . import evaluate as ev
from . import progress as _progress
from .errors import InputError, UsageError
from .io import Dataset, NpzArrays, _input_path, load_data

SOURCES = ("data", "model")
PAD_NAMES = ("<pad>", "<PAD>", "[PAD]")
SPLITS = ("train", "val", "test")
_log = logging.getLogger("onnxmod")


def check_source(labels) -> str:
    """``labels`` as one of ``SOURCES`` (or a one-line UsageError)."""
    if labels not in SOURCES:
        raise UsageError(f"labels {labels!r} is not one of {', '.join(SOURCES)}")
    return labels


def refuse_translator(where) -> None:
    raise UsageError(f"{where}: --labels model does not apply to translators (encoder-decoder models): their "
                     f"labels are the target sentences the decoder reads, which the model cannot supply; give "
                     f"y_* in the data")


def padding_id(path) -> int | None:
    """The data's padding token: ``pad_id`` if the file holds it, else 0 when ``vocab[0]`` names
    padding, else None. Reads only those two keys."""
    arrays = NpzArrays(_input_path(path, "an .npz data file"))
    if "pad_id" in arrays:
        v = arrays["pad_id"]
        if v.ndim != 0 or not np.issubdtype(v.dtype, np.integer) or int(v) < 0:
            raise InputError(f"{path}: pad_id must be one non-negative integer (got shape {list(v.shape)}, "
                             f"{v.dtype})")
        return int(v)
    if "vocab" in arrays:
        vocab = arrays["vocab"]
        if vocab.ndim == 1 and vocab.size and str(vocab[0]) in PAD_NAMES:
            return 0
    return None


def model_answers(proto, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """The model's class per sample (or per output step): argmax of its scores."""
    return ev.predict(proto, x, threads=threads)


def label(pred: np.ndarray, x: np.ndarray, given: np.ndarray | None, pad: int | None, ctc: bool) -> np.ndarray:
    """``pred`` with the padding rule applied (see the module docstring)."""
    pred = np.asarray(pred, dtype=np.int64)
    if given is not None:
        if given.shape != pred.shape:
            raise InputError(f"labels have shape {list(given.shape)} but the model answers {list(pred.shape)} "
                             f"per split")
        return np.where(given >= 0, pred, -1)
    if ctc or pred.ndim != 2 or pad is None or not np.issubdtype(x.dtype, np.integer):
        return pred
    if x.ndim == 2 and x.shape[1] == pred.shape[1]:
        return np.where(x == pad, -1, pred)
    return pred


def from_model(runnable, data: Dataset, threads: int | None = None, ctc: bool = False) -> Dataset:
    """``data`` with every split's ``y`` replaced by the model's answers (``runnable``: a proto
    onnxruntime runs that computes the model, ``Model.runnable``)."""
    pad = padding_id(data.path)
    out = {}
    with _progress.step("labels"):
        for split in SPLITS:
            x = getattr(data, f"x_{split}")
            if x is None:
                continue
            _log.info("labelling %s rows of x_%s with the model's own answers", f"{x.shape[0]:,}", split)
            pred = model_answers(runnable, x, threads)
            out[f"y_{split}"] = label(pred, x, getattr(data, f"y_{split}"), pad, ctc)
    return dataclasses.replace(data, **out)


def load(model, data_path, labels: str = "data", train: bool = True, threads: int | None = None,
         ctc: bool = False, runnable=None, optional: bool = False) -> Dataset:
    """The data for ``model`` (a ``graph.Model``), its ``y_*`` from the data or from the model
    (``runnable``: another model's proto whose answers are the labels instead). ``optional``:
    the data's ``y_*`` may be absent (a CTC model scored on its strings)."""
    from .io import token_limit

    dtype = np.dtype(model.input.dtype) if model.input.dtype is not None else np.dtype(np.int64)
    data = load_data(data_path, num_classes=model.num_classes, many_output=not model.one_output,
                     input_dtype=dtype, input_shape=list(model.input.shape or []) or None,
                     max_token=token_limit(model.original), train=train,
                     labels=check_source(labels) == "data" and not optional)
    if labels == "model":
        data = from_model(model.runnable if runnable is None else runnable, data, threads, ctc)
    return data


def reference_model(labels, kind: str, path):
    """What ``evaluate --labels`` names: None (the data's labels), True (the evaluated model's own
    answers) or the proto of the model whose answers are the labels (a path)."""
    from pathlib import Path

    from .graph import Model
    from .io import load_onnx

    if labels in (None, "data"):
        return None
    if labels == "model":
        if kind != "model":
            raise UsageError(f"{path}: --labels model takes the labels from a model, and this file is a {kind}: "
                             f"name the model it came from (--labels MODEL.onnx)")
        return True
    if not str(labels).endswith(".onnx") and not Path(labels).is_file():
        raise UsageError(f"--labels {labels!r} is not data, model or the path of an ONNX model")
    return Model(load_onnx(labels), source=str(labels)).runnable


def metric_words(metric: str, labels: str) -> str:
    """``accuracy`` -> ``agreement with the model`` (``token accuracy`` -> ``token agreement with
    the model``) when the labels are the model's own answers."""
    if labels != "model":
        return metric
    return metric.replace("accuracy", "agreement with the model")
