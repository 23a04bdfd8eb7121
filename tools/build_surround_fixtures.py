#!/usr/bin/env python
"""Rebuild the fixtures of what surrounds the recurrence (issue 20): ``fixtures/surround/``.

    python tools/build_surround_fixtures.py --keras-python /work/venvs/tf/bin/python   # everything
    python tools/build_surround_fixtures.py --only torch              # torch models (both exporters)
    python tools/build_surround_fixtures.py --only quantized          # onnxruntime.quantization ones
    python tools/build_surround_fixtures.py --only keras --keras-python VENV/bin/python
    python tools/build_surround_fixtures.py --model digits_crnn_ctc   # one model (repeatable)
    python tools/build_surround_fixtures.py --describe-only           # manifest + README table only

Small models in the architectures practitioners build around an RNN -- pooling over time, masked
means, attention, norms, packed sequences, ``h_n`` picks, unrolled cells, time-major CTC heads over
a CNN front, quantized files -- trained on the committed splits (``fixtures/<task>/data.npz``) or
on data this script derives from them and commits beside the models:

* ``fixtures/surround/brown_genre_post/data.npz``: ``brown_genre``'s rows with the padding moved
  to the end (same rows, labels and splits), for the models that mask or pack post-padded rows;
* ``fixtures/surround/digits_ctc/data.npz``: 4-5 of the committed 8x8 digits
  (``fixtures/digits/data.npz``) side by side on an 8x40 canvas, for the CTC models.

Parts (each runs in the python that has its framework):

* ``torch``: torch's legacy exporter (``dynamo=False``) and its default one (``dynamo=True``); this
  python (``torch==2.13.0``, ``onnxscript``);
* ``quantized``: ``onnxruntime.quantization`` (dynamic and QDQ static) of a committed fixture and
  of one model of the torch part; this python;
* ``keras``: Keras 3 models converted by ``tf2onnx``; ``--keras-python`` (a venv with the
  ``[keras]`` extra: ``tensorflow-cpu==2.21.0 tf2onnx==1.17.0``).

Every model is trained seeded (a seeded 10 % of the training split held out to pick the best
epoch; the test split is only scored), exported, and checked in onnxruntime against its framework
at batch 5 and 17 and, where the length is dynamic, at two more lengths (atol 1e-4; a length the
exporter froze is recorded, not hidden).  Each part writes its records to ``.cache/surround/``;
this driver then measures everything else with onnx + onnxruntime only (test accuracy on the
committed split, op types, parameter counts including integer weights, the chains before and
after the recurrence, file size) and writes ``fixtures/surround/manifest.json`` and the generated
table of ``fixtures/surround/README.md``.  The torch part rebuilds byte-identical files; tf2onnx's
node order and generated names vary between runs (same weights, ops and accuracy).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
OUT = FIXTURES / "surround"
CACHE = REPO / ".cache" / "surround"
SEED = 20261220
ATOL = 1e-4
EMB, HIDDEN, ATTN = 12, 24, 16  # small: the 5,000-word embedding dominates the file size
# nn.RNN under the default exporter with a static T: its optimizer folds the per-step transpose of
# W_hh into one initializer per step once W_hh has more than 1,024 elements (measured: copies at
# hidden 40 and 48, one shared initializer at 24 and 32) -- the copies are what that row is about
SIZES = {"rnn_static": (8, 40)}  # recipe -> (embedding, hidden)
LEGACY_OPSET = 17  # torch's legacy exporter: the first opset with LayerNormalization
CTC_OPSET = 12  # as the shipped OCR model (ddddocr's common.onnx, torch 1.9)
PARTS = ("torch", "quantized", "keras")
SOURCES = ("torch_legacy", "torch_dynamo", "tf2onnx_keras3", "ort_quantized")

# the data each model reads: task -> (file, padding side of token rows / kind)
DATA = {
    "brown_genre": (FIXTURES / "brown_genre" / "data.npz", "pre"),
    "brown_genre_post": (OUT / "brown_genre_post" / "data.npz", "post"),
    "brown_pos": (FIXTURES / "brown_pos" / "data.npz", "post"),
    "math_topics": (FIXTURES / "math_topics" / "data.npz", "post"),
    "digits_ctc": (OUT / "digits_ctc" / "data.npz", "image"),
}
TASK_SHAPE = {"brown_genre": "M:1", "brown_genre_post": "M:1", "brown_pos": "M:N", "math_topics": "1:1",
              "digits_ctc": "M:N"}

# the rows of issue 20's table (and its "what to build" items) that the models stand for
ROWS = {
    "pool": "max or mean pooling over time (GlobalMaxPooling1D, ReduceMean)",
    "masked_mean": "mean over the real steps only (mask from tokens != 0, Mul, ReduceSum, Div by a count)",
    "attention": "additive attention pooling (MatMul→Tanh→MatMul→Softmax over T, weighted sum), both torch exporters",
    "layernorm": "LayerNormalization between the recurrence and the head",
    "packed": "pack_padded_sequence: rows sorted by length (Gather on the batch axis), output read at length − 1",
    "bi_hn": "2-layer bidirectional LSTM reading h_n[-2], h_n[-1]",
    "rnn_static": "torch default exporter, nn.RNN with a static T (a copy of the recurrent weight per step)",
    "paper_taggers": "the seed paper's own 2-layer GRU and SimpleRNN taggers, Keras 3 → tf2onnx (two Loops stacked)",
    "ocr_crnn": "an OCR CRNN: CNN → BiLSTM → Reshape→Gemm→Reshape, time-major [T, N, C], Shape-built reshape targets",
    "crnn_cells_flip": "a CRNN with the LSTM unrolled into per-step cells, backward direction by flipping the sequence",
    "quantized": "quantized models (DynamicQuantizeLSTM, MatMulInteger; QDQ)",
    "mask_zero_post": "a Keras mask_zero cell over post-padded rows (what-to-build item 3)",
    "conv_head": "a Conv1d over time reading the units as channels before the head (op table class b)",
}

# name, source, part, brief item, row, task, recipe, epochs, one line on the graph around the recurrence
MODELS = [
    ("digits_crnn_ctc", "torch_legacy", "torch", "14", "ocr_crnn", "digits_ctc", "crnn", 15,
     ("image [N, 1, 8, W] → (Conv+ReLU → MaxPool)×2 → Conv+ReLU (BatchNorm folded into the Convs by the exporter) → "
     "Squeeze(H) → Transpose to [T, N, 32] → bidirectional LSTM(32) → Transpose + Reshape [T, N, 64] → "
     "Reshape [T·N, 64] → Gemm → Reshape [T, N, 11]; both Reshape targets built by Shape→Gather→Unsqueeze"
     "(→Mul)→Concat; time-major CTC logits, blank 0, T = W/2, opset 12")),
    ("genre_lstm_maxpool", "torch_legacy", "torch", "1", "pool", "brown_genre", "max", 6,
     ("LSTM Y [T, 1, N, U] → Squeeze → Transpose → ReduceMax over T (torch.max(dim=1); the unused ArgMax "
     "pruned) → Gemm")),
    ("genre_gru_meanpool", "torch_legacy", "torch", "3", "pool", "brown_genre", "mean", 6,
     ("GRU Y → Squeeze → Transpose → ReduceMean over T → Gemm")),
    ("genre_post_lstm_maskedmean", "torch_legacy", "torch", "4", "masked_mean", "brown_genre_post", "masked_mean", 6,
     ("mask = Cast(Not(Equal(tokens, 0))) → Unsqueeze; LSTM Y (Squeeze → Transpose) ⊙ mask → ReduceSum over T, "
     "÷ Clip(ReduceSum of the mask, min 1) → Gemm; post-padded rows")),
    ("genre_post_lstm_attention", "torch_legacy", "torch", "5", "attention", "brown_genre_post", "attention", 6,
     ("LSTM Y → MatMul(24→16)+Add → Tanh → MatMul(16→1)+Add → Squeeze → Where(tokens == 0, −1e9) → Softmax "
     "over T → Unsqueeze → Mul with Y → ReduceSum over T → Gemm; post-padded rows")),
    ("genre_post_lstm_attention", "torch_dynamo", "torch", "6", "attention", "brown_genre_post", "attention", 6,
     ("the weights of torch_legacy/genre_post_lstm_attention, exported by dynamo=True: Y read through "
     "Transpose→Shape→Slice×4→Mul→Reshape→Concat→Reshape→Transpose, then the same attention ops; no Constant nodes")),
    ("genre_lstm_layernorm", "torch_legacy", "torch", "7", "layernorm", "brown_genre", "layernorm", 6,
     ("LSTM Y → Squeeze → Transpose → Gather(T−1, axis 1) → LayerNormalization(24, affine, axis −1) → Gemm")),
    ("genre_post_lstm_packed", "torch_legacy", "torch", "8", "packed", "brown_genre_post", "packed", 6,
     ("lengths = ReduceSum(tokens != 0); TopK sorts them, Gather(axis 0) sorts the embedded rows; LSTM with "
     "sequence_lens (the sorted lengths); Y unsorted by a Gather(axis 0) whose indices a ScatterElements of a "
     "Range builds; Y at length − 1 by GatherElements(axis 1, Expand-ed indices); Squeeze inside an If "
     "(dim 1 == 1?) → Gemm")),
    ("genre_lstm2_bi_hn", "torch_legacy", "torch", "9", "bi_hn", "brown_genre", "bi_hn", 6,
     ("2 bidirectional LSTM ops (layer 2 reads layer 1's Y) → both ops' Y_h [2, N, U] Concat into h_n [4, N, U] → "
     "Gather 2 and 3 (h_n[-2], h_n[-1]: layer 2's forward and backward) → Concat(axis 1) → Gemm")),
    ("genre_lstm2_bi_hn", "torch_dynamo", "torch", "9", "bi_hn", "brown_genre", "bi_hn", 6,
     ("the weights of torch_legacy/genre_lstm2_bi_hn, exported by dynamo=True (the issue's row): the same "
     "Concat of Y_h → Gather×2 → Concat → Gemm")),
    ("genre_rnn_static", "torch_dynamo", "torch", "10", "rnn_static", "brown_genre", "rnn_static", 6,
     ("nn.RNN(tanh, 40 units) with a static T = 60: unrolled, inputs projected once (MatMul), steps read by "
     "Slice+Squeeze, step t: MatMul(h, W_hh^T copy t) + Add×2 → Tanh, a separate 40×40 initializer per step "
     "(60 copies); states Unsqueeze→Concat → Transpose → Gather(T−1) → Gemm")),
    ("genre_lstm_conv1d", "torch_legacy", "torch", "opt", "conv_head", "brown_genre", "conv1d", 6,
     ("LSTM Y → Squeeze → Transpose×2 to [N, U, T] → Conv(24→16, k=3, pad 1; a Conv1d reading the units as "
     "channels) → Relu → ReduceMax over T → Gemm")),
    ("digits_crnn_cells_flip", "torch_dynamo", "torch", "15", "crnn_cells_flip", "digits_ctc", "crnn_cells", 15,
     ("the CNN front → Squeeze → Transpose [N, T, 32]; forward: 20 LSTMCell steps (Gather step t; Gemm(x) + "
     "Gemm(h) → Add → Split → Sigmoid×3, Tanh×2; h and c carried); backward: Slice(step −1) of the steps, 20 "
     "steps of a second cell, its stacked outputs Slice(step −1)-ed back; Concat(axis 2) → MatMul+Add → "
     "[N, 20, 11] batch-first; static width 40")),
    ("math_lstm1_dynamic_qint8", "ort_quantized", "quantized", "16", "quantized", "math_topics", "dynamic", 0,
     ("quantize_dynamic(fixtures/math_topics/lstm1.onnx, QInt8): com.microsoft DynamicQuantizeLSTM (int8 W, R) "
     "and a DynamicQuantizeLinear → MatMulInteger head")),
    ("genre_lstm_maxpool_qdq", "ort_quantized", "quantized", "16", "quantized", "brown_genre", "qdq", 0,
     ("quantize_static(torch_legacy/genre_lstm_maxpool.onnx, QDQ, 256 training rows): Q/DQ pairs around the "
     "embedding Gather, the ReduceMax output and the Gemm (int8 weight, int32 bias); the LSTM stays float "
     "(onnxruntime's QDQ registry has no LSTM)")),
    ("digits_crnn_ctc_qdq", "ort_quantized", "quantized", "16", "quantized", "digits_ctc", "qdq", 0,
     ("quantize_static(torch_legacy/digits_crnn_ctc.onnx, QDQ, 256 training images): Q/DQ around every Conv, "
     "MaxPool, Squeeze, Transpose, the head's Gemm and last Reshape; the LSTM stays float")),
    ("genre_lstm_globalmaxpool", "tf2onnx_keras3", "keras", "2", "pool", "brown_genre", "lstm_globalmax", 5,
     ("Embedding → LSTM(return_sequences; a native LSTM op) → Squeeze → GlobalMaxPooling1D (ReduceMax over T, "
     "batch-major) → Dense (MatMul; bias folded)")),
    ("pos_gru2_timedistributed", "tf2onnx_keras3", "keras", "11", "paper_taggers", "brown_pos", "gru2_td", 3,
     ("Embedding → GRU → GRU (two Loops stacked, the second reading the first's scan output) → "
     "TimeDistributed(Dense) unrolled over the fixed length 40: (Slice → Squeeze → MatMul → Unsqueeze)×40 → "
     "Concat → Transpose")),
    ("pos_simplernn2_timedistributed", "tf2onnx_keras3", "keras", "12", "paper_taggers", "brown_pos", "simplernn2_td",
     3,
     ("Embedding → SimpleRNN → SimpleRNN (two Loops stacked) → TimeDistributed(Dense) unrolled over the fixed "
     "length 40 → Concat → Transpose")),
    ("genre_post_lstm_mask", "tf2onnx_keras3", "keras", "13", "mask_zero_post", "brown_genre_post", "lstm_mask", 5,
     ("Embedding(mask_zero=True) → LSTM: a Loop reading the mask as a second scanned input, state held on "
     "masked steps (and one cell step outside it whose only use is its Shape, for the zero output: "
     "Shape → ConstantOfShape) → Slice → Squeeze → Dense (MatMul+Add) on the final state; post-padded rows")),
    ("genre_post_gru_mask", "tf2onnx_keras3", "keras", "13", "mask_zero_post", "brown_genre_post", "gru_mask", 5,
     ("Embedding(mask_zero=True) → GRU: as the LSTM one (a Loop reading the mask, one step outside it for a "
     "Shape) → Dense on the final state; post-padded rows")),
]
SPEC = {(m[1], m[0]): dict(zip(("name", "source", "part", "item", "row", "task", "recipe", "epochs", "about"), m))
        for m in MODELS}


def log(*a):
    print(*a, flush=True)


def key(source: str, name: str) -> str:
    return f"{source}/{name}"


# ============================================================================================
# data (numpy only: every part reads it)
# ============================================================================================
def load_task(task: str) -> dict:
    z = np.load(DATA[task][0])
    return {k: z[k] for k in z.files}


def savez_deterministic(path: Path, arrays: dict) -> None:
    """``np.savez_compressed``-loadable and byte-identical across runs (fixed zip timestamps)."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".npz.partial")
    with zipfile.ZipFile(tmp, "w") as zf:
        for k, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(k + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    tmp.replace(path)


def post_pad(x: np.ndarray) -> np.ndarray:
    """Pre-padded token rows with their padding moved to the end (the tokens keep their order)."""
    out = np.zeros_like(x)
    for i, row in enumerate(x):
        real = row[row != 0]
        out[i, : len(real)] = real
    return out


def build_brown_genre_post() -> None:
    """``fixtures/surround/brown_genre_post/data.npz``: brown_genre's splits, post-padded."""
    z = np.load(DATA["brown_genre"][0])
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"x_{split}"] = post_pad(z[f"x_{split}"])
        arrays[f"y_{split}"] = z[f"y_{split}"]
    arrays["class_names"], arrays["vocab"] = z["class_names"], z["vocab"]
    savez_deterministic(DATA["brown_genre_post"][0], arrays)


CTC_SLOTS, CTC_MIN_DIGITS = 5, 4  # 8x40 canvas; 4-5 digits per image
CTC_SPLITS = {"train": 1000, "val": 200, "test": 300}
CTC_CHARSET = ["<blank>"] + [str(i) for i in range(10)]


def compose_digit_strings(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``[n, 1, 8, 40]`` of 4-5 distinct digit images of one split side by side, at a
    seeded horizontal offset on a black canvas, and their texts."""
    rng = np.random.default_rng(seed)
    width = 8 * CTC_SLOTS
    images = np.zeros((n, 1, 8, width), np.float32)
    texts = []
    for i in range(n):
        k = int(rng.integers(CTC_MIN_DIGITS, CTC_SLOTS + 1))
        idx = rng.choice(len(x), size=k, replace=False)
        off = int(rng.integers(0, width - 8 * k + 1))
        for j, d in enumerate(idx):
            images[i, 0, :, off + 8 * j: off + 8 * j + 8] = x[d]
        texts.append("".join(str(int(y[d])) for d in idx))
    return images, np.array(texts, dtype=np.str_)


def ctc_images() -> dict:
    """The digit-string splits, each from the committed digits split of the same name (no test digit
    image is ever in a training string)."""
    z = np.load(FIXTURES / "digits" / "data.npz")
    out = {}
    for k, (split, n) in enumerate(CTC_SPLITS.items()):
        out[f"x_{split}"], out[f"text_{split}"] = compose_digit_strings(z[f"x_{split}"], z[f"y_{split}"], n,
                                                                        SEED + 700 + k)
    return out


def ctc_greedy(logits: np.ndarray, time_major: bool) -> list[str]:
    """Greedy CTC decoding of digit logits (blank 0): argmax per step, collapse repeats, drop blank."""
    ids = logits.argmax(-1)
    if time_major:
        ids = ids.T
    out = []
    for row in ids:
        prev, s = 0, []
        for c in row:
            if c != prev and c != 0:
                s.append(CTC_CHARSET[c])
            prev = c
        out.append("".join(s))
    return out


def string_accuracy(logits: np.ndarray, texts: np.ndarray, time_major: bool) -> float:
    return float(np.mean([a == b for a, b in zip(ctc_greedy(logits, time_major), texts)]))


def masked_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    pred = logits.argmax(-1)
    mask = y != -1
    return float((pred[mask] == y[mask]).mean())


def split_train_val(n: int, seed: int, frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Seeded 10 % of the training split held out to pick the best epoch (test never seen)."""
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(n * frac))
    return np.sort(perm[k:]), np.sort(perm[:k])


def metadata(task: str, d: dict, extra: dict | None = None) -> dict[str, str]:
    """``metadata_props`` as the other fixtures': task, class names, shape, vocabulary sha."""
    meta = {"onnxmod.task": task,
            "onnxmod.class_names": json.dumps([str(c) for c in d["class_names"]]),
            "onnxmod.shape": TASK_SHAPE[task]}
    if "vocab" in d:
        vocab = [str(v) for v in d["vocab"]]
        meta["onnxmod.vocab_sha256"] = hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()
    meta.update(extra or {})
    return meta


def finish_onnx(proto, meta: dict[str, str]):
    """Strip the exporter's per-node debug metadata and doc strings (torch's default exporter stores
    a stack trace per node) and intermediate ``value_info``; set ``metadata_props``; check.  The
    graph itself is the exporter's, untouched."""
    import onnx
    from onnx_finish import strip_debug

    strip_debug(proto, meta)
    onnx.checker.check_model(proto)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise SystemExit("external data in an exported model")
    return proto


def save_onnx(proto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.partial")
    tmp.write_bytes(proto.SerializeToString())
    tmp.replace(path)


def session(path_or_bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def check_rows(x: np.ndarray, padding: str, b: int, t: int, rng) -> np.ndarray:
    """``b`` test rows at length ``t`` (images: width).  Pre-padded token rows are cut or extended
    on the left with the row's own tokens (the last step stays real); post-padded rows on the right
    (extended with padding); images on the right (extended with blank columns)."""
    rows = x[rng.choice(len(x), size=b, replace=False)]
    T = x.shape[-1] if padding == "image" else x.shape[1]
    if padding == "image":
        if t <= T:
            return np.ascontiguousarray(rows[..., :t])
        pad = np.zeros(rows.shape[:-1] + (t - T,), rows.dtype)
        return np.ascontiguousarray(np.concatenate([rows, pad], -1))
    if t <= T:
        xb = rows[:, T - t:] if padding == "pre" else rows[:, :t]
    elif padding == "pre":
        xb = np.concatenate([rows[:, -(t - T):], rows], 1)
    else:
        xb = np.concatenate([rows, np.zeros((b, t - T), rows.dtype)], 1)
    return np.ascontiguousarray(xb)


def verify(data: bytes, task: str, x: np.ndarray, framework_fn, *, dynamic: bool, may_freeze: bool,
           label: str) -> dict:
    """onnxruntime vs the framework at batch 5 and 17 and, if ``dynamic``, at two more lengths
    (atol 1e-4).  A length the exporter froze is recorded when ``may_freeze``; any other mismatch
    stops the build."""
    sess = session(data)
    name = sess.get_inputs()[0].name
    padding = DATA[task][1]
    T = x.shape[-1] if padding == "image" else x.shape[1]
    step = 8 if padding == "image" else 9
    points = [(5, T), (17, T)] + ([(3, T - step), (11, T + (8 if padding == "image" else 6))] if dynamic else [])
    rng = np.random.default_rng(0)
    diffs, frozen = [], None
    for b, t in points:
        xb = check_rows(x, padding, b, t, rng)
        ref = np.asarray(framework_fn(xb), dtype=np.float32)
        try:
            got = sess.run(None, {name: xb})[0]
            ok_shape = got.shape == ref.shape
            err = float(np.abs(got - ref).max()) if ok_shape else float("inf")
            why = f"max abs diff {err:.3g}" if ok_shape else f"shape {got.shape} vs {ref.shape}"
        except Exception as e:  # noqa: BLE001 - onnxruntime's own error is the record
            err, why = float("inf"), f"onnxruntime error: {str(e).splitlines()[0][:200]}"
        if err <= ATOL:
            diffs.append({"batch": b, "length": t, "max_abs_diff": err})
            continue
        if may_freeze and t != T:
            frozen = frozen or {"length": T, "fails_at": []}
            frozen["fails_at"].append({"batch": b, "length": t, "what": why})
            continue
        raise SystemExit(f"{label}: onnxruntime vs framework at batch {b}, length {t}: {why}")
    return {"atol": ATOL, "points": diffs, "max_abs_diff": max(p["max_abs_diff"] for p in diffs),
            "frozen_length": frozen}


# ============================================================================================
# part: torch (legacy and default exporter)
# ============================================================================================
def torch_models():
    """The torch modules, defined here so that the other parts never import torch."""
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class Pooled(nn.Module):
        """Embedding → recurrent layer(s) (batch-first) → ``readout`` → Linear: raw logits [N, C].

        Readouts: ``max`` (torch.max over T), ``mean``, ``masked_mean`` (over tokens != 0),
        ``attention`` (additive, masked), ``layernorm`` (on the last step), ``packed``
        (pack_padded_sequence, output at length − 1), ``bi_hn`` (2-layer BiLSTM's h_n[-2], h_n[-1]),
        ``rnn_static`` (nn.RNN, last step), ``conv1d`` (a Conv1d over time, then max over T)."""

        def __init__(self, readout: str, vocab: int, n_classes: int):
            super().__init__()
            self.readout = readout
            emb, hidden = SIZES.get(readout, (EMB, HIDDEN))
            self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
            self.drop = nn.Dropout(0.2)  # training only: gone in eval mode, so never exported
            if readout == "mean":
                self.rnn = nn.GRU(emb, hidden, batch_first=True)
            elif readout == "rnn_static":
                self.rnn = nn.RNN(emb, hidden, batch_first=True)
            elif readout == "bi_hn":
                self.rnn = nn.LSTM(emb, hidden, num_layers=2, bidirectional=True, batch_first=True)
            else:
                self.rnn = nn.LSTM(emb, hidden, batch_first=True)
            width = hidden
            if readout == "attention":
                self.att = nn.Linear(HIDDEN, ATTN)
                self.att_v = nn.Linear(ATTN, 1)
            elif readout == "layernorm":
                self.norm = nn.LayerNorm(HIDDEN)
            elif readout == "bi_hn":
                width = 2 * HIDDEN
            elif readout == "conv1d":
                self.conv = nn.Conv1d(HIDDEN, 16, kernel_size=3, padding=1)
                width = 16
            self.out = nn.Linear(width, n_classes)

        def forward(self, tokens):
            e = self.drop(self.embedding(tokens))
            r = self.readout
            if r == "packed":
                lengths = (tokens != 0).sum(1)
                packed = pack_padded_sequence(e, lengths, batch_first=True, enforce_sorted=False)
                y, _ = self.rnn(packed)
                y, _ = pad_packed_sequence(y, batch_first=True)
                idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, y.size(2))
                z = y.gather(1, idx).squeeze(1)
                return self.out(self.drop(z))
            if r == "bi_hn":
                _, (h_n, _) = self.rnn(e)
                z = torch.cat([h_n[-2], h_n[-1]], dim=1)
                return self.out(self.drop(z))
            y, _ = self.rnn(e)
            y = self.drop(y)
            if r == "max":
                z, _ = torch.max(y, dim=1)
            elif r == "mean":
                z = y.mean(dim=1)
            elif r == "masked_mean":
                mask = (tokens != 0).unsqueeze(-1).to(y.dtype)
                z = (y * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            elif r == "attention":
                scores = self.att_v(torch.tanh(self.att(y))).squeeze(-1)
                scores = scores.masked_fill(tokens == 0, -1e9)
                weights = torch.softmax(scores, dim=1)
                z = (weights.unsqueeze(-1) * y).sum(dim=1)
            elif r == "layernorm":
                z = self.norm(y[:, -1])
            elif r in ("rnn_static",):
                z = y[:, -1]
            elif r == "conv1d":
                z, _ = torch.relu(self.conv(y.transpose(1, 2))).max(dim=2)
            else:
                raise ValueError(r)
            return self.out(z)

    class BidirectionalLSTM(nn.Module):
        """crnn.pytorch's head: a time-major BiLSTM, then ``view(T*b, h)`` → Linear → ``view(T, b, -1)``
        (as torch 1.x OCR models write it; the legacy exporter builds the view targets from Shape)."""

        def __init__(self, n_in: int, hidden: int, n_out: int):
            super().__init__()
            self.rnn = nn.LSTM(n_in, hidden, bidirectional=True)
            self.embedding = nn.Linear(2 * hidden, n_out)

        def forward(self, x):
            recurrent, _ = self.rnn(x)
            T, b, h = recurrent.size()
            out = self.embedding(recurrent.view(T * b, h))
            return out.view(T, b, -1)

    def cnn_front():
        """8 x W image → [N, 32, 1, W/2]: conv blocks pooling over height (and width once)."""
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d((2, 1)),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d((2, 2)),
            nn.Conv2d(32, 32, (2, 1)), nn.BatchNorm2d(32), nn.ReLU())

    class CRNN(nn.Module):
        """Image [N, 1, 8, W] → CNN → time-major BiLSTM(32) → per-step logits [W/2, N, 11] (CTC, blank 0)."""

        time_major = True

        def __init__(self):
            super().__init__()
            self.cnn = cnn_front()
            self.rnn = BidirectionalLSTM(32, 32, len(CTC_CHARSET))

        def forward(self, image):
            conv = self.cnn(image).squeeze(2).permute(2, 0, 1)  # [T, N, 32]
            return self.rnn(conv)

    class CRNNCells(nn.Module):
        """The same CRNN with the BiLSTM written as per-step ``LSTMCell`` calls: forward over the
        steps, backward over ``torch.flip`` of them, the backward outputs flipped back, and the two
        concatenated per step; a Linear head; batch-first logits [N, W/2, 11]."""

        time_major = False

        def __init__(self):
            super().__init__()
            self.cnn = cnn_front()
            self.fwd = nn.LSTMCell(32, 32)
            self.bwd = nn.LSTMCell(32, 32)
            self.head = nn.Linear(64, len(CTC_CHARSET))

        def run(self, cell, x):  # x [N, T, F] → [N, T, U]
            n = x.shape[0]
            h = x.new_zeros(n, cell.hidden_size)
            c = x.new_zeros(n, cell.hidden_size)
            outs = []
            for t in range(x.shape[1]):
                h, c = cell(x[:, t], (h, c))
                outs.append(h)
            return torch.stack(outs, dim=1)

        def forward(self, image):
            x = self.cnn(image).squeeze(2).transpose(1, 2)  # [N, T, 32]
            f = self.run(self.fwd, x)
            b = torch.flip(self.run(self.bwd, torch.flip(x, dims=[1])), dims=[1])
            return self.head(torch.cat([f, b], dim=2))

    return {"Pooled": Pooled, "CRNN": CRNN, "CRNNCells": CRNNCells}


def count_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def train_ctc(model, d: dict, epochs: int, seed: int) -> dict:
    """CTC training (blank 0) on the committed digit-string training split; the best epoch by string
    accuracy on a seeded 10 % of it."""
    import copy

    import torch
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x, texts = d["x_train"], d["text_train"]
    tr, va = split_train_val(len(x), seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    best, history, t0 = (-1.0, 0, None), [], time.time()
    for ep in range(epochs):
        model.train()
        order = tr[rng.permutation(len(tr))]
        total = 0.0
        for i in range(0, len(order), 32):
            b = order[i:i + 32]
            out = model(torch.from_numpy(x[b]))
            if not model.time_major:
                out = out.transpose(0, 1)
            logp = out.log_softmax(-1)
            targets = [torch.tensor([CTC_CHARSET.index(c) for c in texts[k]]) for k in b]
            loss = ctc(logp, torch.cat(targets), torch.full((len(b),), logp.shape[0], dtype=torch.long),
                       torch.tensor([len(t) for t in targets]))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            acc = string_accuracy(model(torch.from_numpy(x[va])).numpy(), texts[va], model.time_major)
        history.append((round(total, 4), round(acc, 4)))
        log(f"    epoch {ep + 1:2d}: ctc loss {total:.3f}  val string acc {acc:.4f}  ({time.time() - t0:.0f}s)")
        if acc > best[0]:
            best = (acc, ep + 1, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    return {"epochs": epochs, "best_epoch": best[1], "val_string_acc": round(best[0], 4), "seed": seed,
            "history": history}


def torch_export(model, example, *, dynamo: bool, input_name: str, dynamic_length: bool, opset: int | None,
                 time_major_out: bool = False, image: bool = False):
    """Export with torch's legacy (``dynamo=False``) or default exporter; the ONNX proto."""
    import onnx
    import torch
    from torch.export import Dim

    length_axis = 3 if image else 1
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if not dynamo:
            dyn_in = {0: "batch", length_axis: "width" if image else "seq"} if dynamic_length else {0: "batch"}
            dyn_out = ({0: "steps", 1: "batch"} if dynamic_length else {1: "batch"}) if time_major_out else \
                ({0: "batch", 1: "steps"} if image and dynamic_length else {0: "batch"})
            buf = io.BytesIO()
            torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=opset,
                              input_names=[input_name], output_names=["logits"],
                              dynamic_axes={input_name: dyn_in, "logits": dyn_out})
            return onnx.load_from_string(buf.getvalue())
        dyn = {0: Dim.AUTO, length_axis: Dim.AUTO} if dynamic_length else {0: Dim.AUTO}
        prog = torch.onnx.export(model, (example,), dynamo=True, input_names=[input_name], output_names=["logits"],
                                 dynamic_shapes={input_name: dyn}, external_data=False, verbose=False,
                                 **({"opset_version": opset} if opset else {}))
        return prog.model_proto


EXPORT_CALLS = {
    "legacy": "torch.onnx.export(model, (x,), path, dynamo=False, opset_version={opset}, input_names=['{inp}'], "
              "output_names=['logits'], dynamic_axes={dyn})",
    "dynamo": "torch.onnx.export(model, (x,), dynamo=True, input_names=['{inp}'], output_names=['logits'], "
              "dynamic_shapes={{'{inp}': {dyn}}}, external_data=False)",
}


def part_torch(only: list[str] | None, emit) -> None:
    """Train each torch model once, export it with the exporters its spec rows name."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fixturelib as fl
    import onnxscript

    torch.set_num_threads(1)
    classes = torch_models()
    build_brown_genre_post()  # cheap and deterministic: always from the committed brown_genre split
    todo = [m for m in MODELS if m[2] == "torch" and (not only or m[0] in only)]
    # one training per (name): the dynamo twins of a legacy model reuse its weights
    trained: dict[str, tuple] = {}
    for name, source, _, item, row, task, recipe, epochs, _ in MODELS:
        if (name, source) not in {(m[0], m[1]) for m in todo}:
            continue
        seed = SEED + 10 * [m[0] for m in MODELS].index(name)
        if name not in trained:
            trained[name] = train_torch(classes, fl, name, task, recipe, epochs, seed)
        model, rep, d = trained[name]
        image = task == "digits_ctc"
        inp = "image" if image else "tokens"
        dynamo = source == "torch_dynamo"
        static = recipe in ("rnn_static", "crnn_cells")  # the exporter unrolls a Python loop / nn.RNN
        opset = None if dynamo else (CTC_OPSET if image else LEGACY_OPSET)
        example_rows = d["x_test"][:2]
        log(f"[{source}] {name}: exporting")
        proto = torch_export(model, torch.from_numpy(example_rows), dynamo=dynamo, input_name=inp,
                             dynamic_length=not static, opset=opset,
                             time_major_out=getattr(model, "time_major", False), image=image)
        proto = finish_onnx(proto, metadata(task, d))
        data = proto.SerializeToString()

        @torch.no_grad()
        def fw(xb, model=model):
            return model(torch.from_numpy(xb)).numpy()

        check = verify(data, task, d["x_test"], fw, dynamic=not static, may_freeze=False, label=key(source, name))
        if static:  # asked for: the input declares this length
            check["static_length"] = int(d["x_test"].shape[-1])
        path = OUT / source / f"{name}.onnx"
        save_onnx(proto, path)
        log(f"    {len(data):,} bytes; check max abs diff {check['max_abs_diff']:.2e}"
            + (f"; length FROZEN to {check['frozen_length']['length']}" if check["frozen_length"] else ""))
        if image and name == "digits_crnn_ctc":
            write_ctc_data(d, data)
        dyn = ("{0: 'batch', 3: 'width'}" if image else "{0: 'batch', 1: 'seq'}") if not static else "{0: 'batch'}"
        call = EXPORT_CALLS["dynamo" if dynamo else "legacy"].format(
            opset=opset, inp=inp,
            dyn=(dyn.replace("'batch'", "Dim.AUTO").replace("'seq'", "Dim.AUTO").replace("'width'", "Dim.AUTO")
                 if dynamo else f"{{'{inp}': {dyn}, 'logits': ...}}"))
        emit({"name": name, "source": source, "file": f"{source}/{name}.onnx", "item": item, "row": row,
              "task": task, "shape": TASK_SHAPE[task], "recipe": recipe, "params": count_params(model),
              "framework": {"torch": torch.__version__.split("+")[0],
                            **({"onnxscript": onnxscript.__version__} if dynamo else {})},
              "export_call": call, "training": rep, "check": check})


def train_torch(classes, fl, name: str, task: str, recipe: str, epochs: int, seed: int):
    """A seeded model of ``recipe`` trained on ``task``'s committed training split."""
    import torch

    d = load_task(task) if task != "digits_ctc" else ctc_images_with_classes()
    torch.manual_seed(seed)  # the initial weights too
    log(f"[torch] {name}: training ({task}, {recipe})")
    if task == "digits_ctc":
        model = classes["CRNN" if recipe == "crnn" else "CRNNCells"]()
        rep = train_ctc(model, d, epochs, seed)
    else:
        model = classes["Pooled"](recipe, len(d["vocab"]), len(d["class_names"]))
        cfg = fl.TrainConfig(epochs=epochs, batch_size=128, lr=1e-3 if recipe == "rnn_static" else 3e-3)
        rep = fl.train_model(model, d["x_train"], d["y_train"], cfg, seed=seed, log=log)
        rep = {"epochs": epochs, "best_epoch": rep["best_epoch"], "val_acc": round(rep["val_acc"], 4), "seed": seed}
    model.eval()
    return model, rep, d


def ctc_images_with_classes() -> dict:
    d = ctc_images()
    d["class_names"] = np.array(CTC_CHARSET, dtype=np.str_)
    return d


def write_ctc_data(d: dict, model_bytes: bytes) -> None:
    """``digits_ctc/data.npz``: the images, their texts, the charset, and per-step labels from the
    CRNN's own argmax (``y_*`` ``[N, T]``, batch-first: today's contract for many-output models)."""
    sess = session(model_bytes)
    arrays = {}
    for split in CTC_SPLITS:
        logits = sess.run(None, {"image": d[f"x_{split}"]})[0]  # [T, N, C]
        arrays[f"x_{split}"] = d[f"x_{split}"]
        arrays[f"y_{split}"] = logits.argmax(-1).T.astype(np.int64)
        arrays[f"text_{split}"] = d[f"text_{split}"]
    arrays["class_names"] = np.array(CTC_CHARSET, dtype=np.str_)
    arrays["charset"] = np.array(CTC_CHARSET, dtype=np.str_)
    savez_deterministic(DATA["digits_ctc"][0], arrays)
    log(f"    wrote {DATA['digits_ctc'][0].relative_to(REPO)}")


# ============================================================================================
# part: onnxruntime.quantization
# ============================================================================================
def part_quantized(only: list[str] | None, emit) -> None:
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Rows(CalibrationDataReader):
        def __init__(self, name, x):
            self.it = iter([{name: x[i:i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    out = OUT / "ort_quantized"
    out.mkdir(parents=True, exist_ok=True)
    for name, source, part, item, row, task, recipe, _, _ in MODELS:
        if part != "quantized" or (only and name not in only):
            continue
        log(f"[ort_quantized] {name}")
        d = load_task(task)
        path = out / f"{name}.onnx"
        tmp = out / f"{name}.partial.onnx"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if recipe == "dynamic":
                src = FIXTURES / "math_topics" / "lstm1.onnx"
                quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
                call = "quantize_dynamic('fixtures/math_topics/lstm1.onnx', path, weight_type=QuantType.QInt8)"
                calib = None
            else:
                src = OUT / ("torch_legacy/genre_lstm_maxpool.onnx" if task == "brown_genre"
                             else "torch_legacy/digits_crnn_ctc.onnx")
                inp = onnx.load(str(src)).graph.input[0].name
                rows = d["x_train"][np.sort(np.random.default_rng(SEED).choice(len(d["x_train"]), 256, replace=False))]
                quantize_static(str(src), str(tmp), Rows(inp, rows), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax)
                call = (f"quantize_static('{src.relative_to(REPO)}', path, reader(256 seeded x_train rows, one "
                        "per batch), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, "
                        "weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)")
                calib = {"rows": 256, "seed": SEED, "split": "x_train"}
        proto = onnx.load(str(tmp))
        tmp.unlink()
        src_meta = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
        proto = finish_onnx(proto, src_meta)
        data = proto.SerializeToString()
        # the float source vs the quantized file: same inputs, outputs close in argmax
        check = quant_check(src, data, task, d)
        save_onnx(proto, path)
        log(f"    {len(data):,} bytes; agreement with the float model {check['argmax_agreement']:.4f}")
        emit({"name": name, "source": source, "file": f"ort_quantized/{name}.onnx", "item": item, "row": row,
              "task": task, "shape": TASK_SHAPE[task], "recipe": recipe, "params": None,
              "framework": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
              "export_call": call, "quantized_from": str(src.relative_to(REPO)), "calibration": calib,
              "training": None, "check": check})


def quant_check(src: Path, data: bytes, task: str, d: dict) -> dict:
    """The quantized file against its float source on the test split: argmax agreement and the
    largest logit difference (quantization changes numbers, so no atol applies)."""
    a, b = session(src), session(data)
    name = a.get_inputs()[0].name
    x = d["x_test"]
    axis = -2 if task == "digits_ctc" else 0
    la = np.concatenate([a.run(None, {name: x[i:i + 256]})[0] for i in range(0, len(x), 256)], axis=axis)
    lb = np.concatenate([b.run(None, {name: x[i:i + 256]})[0] for i in range(0, len(x), 256)], axis=axis)
    return {"against": str(src.relative_to(REPO)), "argmax_agreement": float((la.argmax(-1) == lb.argmax(-1)).mean()),
            "max_abs_diff": float(np.abs(la - lb).max()), "frozen_length": None}


# ============================================================================================
# part: Keras 3 → tf2onnx (runs in --keras-python)
# ============================================================================================
def keras_build(K, recipe: str, d: dict):
    L = K.layers
    V, C = len(d["vocab"]), len(d["class_names"])
    T = d["x_train"].shape[1]
    tagger = recipe.endswith("_td")
    inp = K.Input(shape=(T if tagger else None,), dtype="int64", name="tokens")
    x = L.Embedding(V, EMB, mask_zero=recipe.endswith("_mask"), name="embedding")(inp)
    if recipe == "lstm_globalmax":
        x = L.LSTM(HIDDEN, return_sequences=True, name="lstm")(x)
        x = L.GlobalMaxPooling1D(name="max_over_time")(x)
    elif recipe == "gru2_td":
        x = L.GRU(HIDDEN, return_sequences=True, name="gru_1")(x)
        x = L.GRU(HIDDEN, return_sequences=True, name="gru_2")(x)
    elif recipe == "simplernn2_td":
        x = L.SimpleRNN(HIDDEN, return_sequences=True, name="simple_rnn_1")(x)
        x = L.SimpleRNN(HIDDEN, return_sequences=True, name="simple_rnn_2")(x)
    elif recipe == "lstm_mask":
        x = L.LSTM(HIDDEN, name="lstm")(x)
    elif recipe == "gru_mask":
        x = L.GRU(HIDDEN, name="gru")(x)
    else:
        raise ValueError(recipe)
    out = L.TimeDistributed(L.Dense(C), name="logits")(x) if tagger else L.Dense(C, name="logits")(x)
    return K.Model(inp, out, name=recipe)


def part_keras(only: list[str] | None, emit) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import keras as K
    import tensorflow as tf
    import tf2onnx

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    for name, source, part, item, row, task, recipe, epochs, _ in MODELS:
        if part != "keras" or (only and name not in only):
            continue
        d = load_task(task)
        seed = SEED + 10 * [m[0] for m in MODELS].index(name)
        K.utils.set_random_seed(seed)
        log(f"[tf2onnx_keras3] {name}: training ({task}, {recipe})")
        model = keras_build(K, recipe, d)
        x, y = d["x_train"], d["y_train"]
        tr, va = split_train_val(len(x), seed)
        yt, wt = np.where(y == -1, 0, y), (y != -1).astype(np.float32)
        model.compile(optimizer=K.optimizers.Adam(learning_rate=1e-3 if "simplernn" in recipe else 3e-3, clipnorm=1.0),
                      loss=K.losses.SparseCategoricalCrossentropy(from_logits=True))
        best, t0 = (-1.0, 0, None), time.time()
        tagger = TASK_SHAPE[task] == "M:N"
        for ep in range(epochs):
            model.fit(x[tr], yt[tr], sample_weight=wt[tr], batch_size=64 if tagger else 128, epochs=1,
                      shuffle=True, verbose=0)
            acc = masked_accuracy(model.predict(x[va], batch_size=512, verbose=0), y[va])
            log(f"    epoch {ep + 1}: val acc {acc:.4f} ({time.time() - t0:.0f}s)")
            if acc > best[0]:
                best = (acc, ep + 1, [w.copy() for w in model.get_weights()])
        model.set_weights(best[2])
        fixed = x.shape[1] if recipe.endswith("_td") else None
        spec = (tf.TensorSpec((None, fixed), tf.int64, name="tokens"),)
        with contextlib.redirect_stdout(io.StringIO()):
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=None)
        proto = finish_onnx(proto, metadata(task, d))
        data = proto.SerializeToString()

        def fw(xb, model=model):
            return model(xb, training=False).numpy()

        check = verify(data, task, d["x_test"], fw, dynamic=fixed is None, may_freeze=False, label=key(source, name))
        save_onnx(proto, OUT / source / f"{name}.onnx")
        log(f"    {len(data):,} bytes; check max abs diff {check['max_abs_diff']:.2e}")
        emit({"name": name, "source": source, "file": f"{source}/{name}.onnx", "item": item, "row": row,
              "task": task, "shape": TASK_SHAPE[task], "recipe": recipe, "params": int(model.count_params()),
              "framework": {"tensorflow": tf.__version__, "keras": K.__version__, "tf2onnx": tf2onnx.__version__},
              "export_call": f"tf2onnx.convert.from_keras(model, input_signature=(tf.TensorSpec((None, {fixed}), "
                             "tf.int64, name='tokens'),))",
              "keras_layers": [l.__class__.__name__ + (f"({l.layer.__class__.__name__})" if hasattr(l, "layer") else "")
                               for l in model.layers],
              "fixed_length": fixed,
              "training": {"epochs": epochs, "best_epoch": best[1], "val_acc": round(best[0], 4), "seed": seed},
              "check": check})


# ============================================================================================
# driver: describe every model with onnx + onnxruntime only
# ============================================================================================
RECURRENT = {"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"}
NONLIN = {"Tanh", "Sigmoid", "Relu", "HardSigmoid"}


def op_name(n) -> str:
    return n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"


def _collapse(ops: list[str]) -> str:
    """``A → B×3 → (C → D)×40``: runs of one op or of a repeated block written once with a count."""
    parts, i = [], 0
    while i < len(ops):
        best = (1, 1)
        for p in range(1, min(40, (len(ops) - i) // 2) + 1):
            k = 1
            while ops[i + k * p: i + (k + 1) * p] == ops[i: i + p]:
                k += 1
            if k > 1 and p * k > best[0] * best[1]:
                best = (p, k)
        p, k = best
        block = " → ".join(ops[i:i + p])
        parts.append(block if k == 1 else (f"{block}×{k}" if p == 1 else f"({block})×{k}"))
        i += p * k
    return " → ".join(parts)


def describe_graph(proto) -> dict:
    """Recurrence form(s) and the chains before and after it, measured from the graph."""
    import onnx
    from onnx import numpy_helper

    g = proto.graph
    counts = collections.Counter(op_name(n) for n in g.node)
    rec = [i for i, n in enumerate(g.node) if n.op_type in RECURRENT | {"Loop", "Scan"}]
    forms = []
    for i in rec:
        n = g.node[i]
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute if x.type != onnx.AttributeProto.GRAPH}
        if n.op_type in ("Loop", "Scan"):
            body = next(x.g for x in n.attribute if x.type == onnx.AttributeProto.GRAPH)
            forms.append(f"{n.op_type} ({len(body.node)} body nodes)")
            continue
        extra = [f"direction={a.get('direction', b'forward').decode()}", f"hidden={a.get('hidden_size')}"]
        if len(n.input) > 4 and n.input[4]:
            extra.append("sequence_lens")
        forms.append(f"{op_name(n)} ({', '.join(extra)})")
    unrolled, first, last = 0, (min(rec) if rec else 0), (max(rec) if rec else -1)
    if not rec:  # an unrolled chain: its span is that of its most frequent nonlinearity
        act = max(sorted(NONLIN), key=lambda o: counts[o])
        unrolled = counts[act]
        if unrolled > 1:
            forms.append(f"unrolled: {unrolled} × {act}")
            at = [i for i, n in enumerate(g.node) if n.op_type == act]
            first, last = at[0], at[-1]
    produced = {o: i for i, n in enumerate(g.node) for o in n.output}

    def chain(starts: list[str], lo: int, hi: int) -> str:
        keep, stack = set(), list(starts)
        while stack:
            i = produced.get(stack.pop())
            if i is None or not lo < i < hi or i in keep:
                continue
            keep.add(i)
            stack.extend(g.node[i].input)
        return _collapse([op_name(g.node[i]) for i in sorted(keep)])

    before = chain([t for i in (rec or [first]) for t in g.node[i].input], -1, first)
    after = chain([o.name for o in g.output], last, len(g.node))
    inits = list(g.initializer)
    params = {"float": 0, "integer": 0}
    for t in inits:
        n_el = int(np.prod(t.dims)) if t.dims else 1
        arr_type = numpy_helper.to_array(t).dtype
        if n_el <= 1 and not t.dims:
            continue  # scalars: constants of the graph (zero points, shape pieces), not weights
        if arr_type.kind == "f":
            params["float"] += n_el
        elif t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT32):
            params["integer"] += n_el
    return {"op_counts": dict(sorted(counts.items())), "recurrence": forms, "unrolled_steps": unrolled,
            "before": before, "after": after, "onnx_weights": params}


def io_desc(vi) -> dict:
    import onnx

    t = vi.type.tensor_type
    return {"name": vi.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower(),
            "shape": [d.dim_param or d.dim_value for d in t.shape.dim]}


def ort_outputs(path: Path, x: np.ndarray, time_major: bool) -> np.ndarray:
    sess = session(path)
    name = sess.get_inputs()[0].name
    parts = [sess.run(None, {name: x[i:i + 500]})[0] for i in range(0, len(x), 500)]
    return np.concatenate(parts, axis=1 if time_major else 0)


def test_score(entry: dict) -> dict:
    """The recorded test score: accuracy (labels != −1) or, for CTC models, greedy string accuracy."""
    d = load_task(entry["task"])
    path = OUT / entry["file"]
    if entry["task"] == "digits_ctc":
        time_major = entry["output"]["shape"][0] != entry["input"]["shape"][0]
        logits = ort_outputs(path, d["x_test"], time_major)
        return {"metric": "string_accuracy", "test_accuracy": string_accuracy(logits, d["text_test"], time_major),
                "time_major": time_major}
    logits = ort_outputs(path, d["x_test"], False)
    return {"metric": "accuracy", "test_accuracy": masked_accuracy(logits, d["y_test"]), "time_major": False}


def describe(records: list[dict]) -> list[dict]:
    import onnx

    out = []
    for r in records:
        path = OUT / r["file"]
        proto = onnx.load(str(path))
        e = dict(r)
        e["about"] = SPEC[(r["source"], r["name"])]["about"]
        e["row_text"] = ROWS[r["row"]]
        e["data"] = str(DATA[r["task"]][0].relative_to(REPO))
        e["input"], e["output"] = io_desc(proto.graph.input[0]), io_desc(proto.graph.output[0])
        e["opset"] = {(o.domain or "ai.onnx"): o.version for o in proto.opset_import}
        e["producer"] = f"{proto.producer_name} {proto.producer_version}".strip()
        data = path.read_bytes()
        e["file_bytes"], e["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        e.update(describe_graph(proto))
        e.update(test_score(e))
        out.append(e)
    return out


def write_manifest(entries: list[dict]) -> None:
    order = {s: i for i, s in enumerate(SOURCES)}
    pos = {(m[1], m[0]): i for i, m in enumerate(MODELS)}
    entries = sorted(entries, key=lambda e: (order[e["source"]], pos[e["source"], e["name"]]))
    man = {"about": "fixtures of what surrounds the recurrence (issue 20); see README.md",
           "builder": "tools/build_surround_fixtures.py", "rows": ROWS, "models": entries}
    (OUT / "manifest.json").write_text(json.dumps(man, indent=1, ensure_ascii=False) + "\n")
    rows = ["| model | item | row | task | input → output | test | params (onnx weights) | bytes | recurrence "
            "| after the recurrence |",
            "|---|---|---|---|---|---:|---:|---:|---|---|"]
    for e in entries:
        rec = "; ".join(e["recurrence"]) or "?"
        if e["check"].get("frozen_length"):
            rec += f" — **length frozen to {e['check']['frozen_length']['length']}**"
        if e["check"].get("static_length"):
            rec += f" — static length {e['check']['static_length']}"
        metric = "str " if e["metric"] == "string_accuracy" else ""
        w = e["onnx_weights"]
        wtxt = f"{w['float']:,}" + (f" + {w['integer']:,} int8" if w["integer"] else "")
        params = f"{e['params']:,} ({wtxt})" if e["params"] else f"({wtxt})"
        rows.append(f"| `{e['source']}/{e['name']}` | {e['item']} | {e['row']} | {e['task']} | "
                    f"`{e['input']['name']}` {e['input']['dtype']} {e['input']['shape']} → {e['output']['shape']} | "
                    f"{metric}{100 * e['test_accuracy']:.2f} % | {params} | {e['file_bytes']:,} | {rec} | "
                    f"{e['after']} |")
    readme = OUT / "README.md"
    text = readme.read_text() if readme.exists() else "<!-- table:begin -->\n<!-- table:end -->\n"
    a, b = text.index("<!-- table:begin -->"), text.index("<!-- table:end -->")
    total = sum(e["file_bytes"] for e in entries)
    table = "\n".join(rows) + f"\n\n{len(entries)} models, {total:,} bytes in all.\n"
    readme.write_text(text[:a] + "<!-- table:begin -->\n\n" + table + "\n" + text[b:])


_RECORD_KEYS = {"name", "source", "file", "item", "row", "task", "shape", "recipe", "params", "framework",
                "export_call", "keras_layers", "fixed_length", "quantized_from", "calibration", "training", "check"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=PARTS, help="rebuild only this part (repeatable)")
    p.add_argument("--model", action="append", help="rebuild only this model name (repeatable)")
    p.add_argument("--keras-python", default=os.environ.get("ONNXMOD_KERAS_PYTHON"),
                   help="python of a venv with tensorflow-cpu==2.21.0, tf2onnx==1.17.0 "
                        "(default: $ONNXMOD_KERAS_PYTHON)")
    p.add_argument("--describe-only", action="store_true", help="only rewrite manifest.json and the README table")
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # internal: run one part in this python
    a = p.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    if a.part:
        rec_file = CACHE / f"{a.part}.json"

        def emit(rec):  # one model done: record it now (a later model's failure keeps it)
            old = json.loads(rec_file.read_text()) if rec_file.exists() else []
            new = {key(r["source"], r["name"]): r for r in old}
            new[key(rec["source"], rec["name"])] = rec
            rec_file.write_text(json.dumps(list(new.values()), indent=1))

        {"torch": part_torch, "quantized": part_quantized, "keras": part_keras}[a.part](a.model, emit)
        return 0
    if not a.describe_only:
        parts = a.only or [pt for pt in PARTS if not a.model or any(m[2] == pt and m[0] in a.model for m in MODELS)]
        for part in PARTS:
            if part not in parts:
                continue
            py = a.keras_python if part == "keras" else sys.executable
            if not py:
                raise SystemExit("keras: needs --keras-python (a venv with tensorflow-cpu==2.21.0, tf2onnx==1.17.0)")
            only = [x for m in a.model or [] for x in ("--model", m)]
            cmd = [py, str(Path(__file__).resolve()), "--part", part] + only
            log("$ " + " ".join(cmd))
            subprocess.run(cmd, check=True)
    # each model's record: this or an earlier run's cache, else the committed manifest
    recs = {}
    if (OUT / "manifest.json").exists():
        for e in json.loads((OUT / "manifest.json").read_text())["models"]:
            recs[key(e["source"], e["name"])] = {x: e[x] for x in e if x in _RECORD_KEYS}
    for part in PARTS:
        f = CACHE / f"{part}.json"
        if f.exists():
            for r in json.loads(f.read_text()):
                recs[key(r["source"], r["name"])] = r
    entries = describe([r for r in recs.values() if (r["source"], r["name"]) in SPEC and (OUT / r["file"]).exists()])
    write_manifest(entries)
    log(f"wrote {(OUT / 'manifest.json').relative_to(REPO)} ({len(entries)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
