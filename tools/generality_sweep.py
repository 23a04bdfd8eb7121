#!/usr/bin/env python
"""Which models practitioners build around an RNN does onnxmod still refuse, handle inexactly, or
make larger than the model? One line per variant.

    python tools/generality_sweep.py                                  # everything (torch + Keras)
    python tools/generality_sweep.py --no-keras                       # torch only
    python tools/generality_sweep.py --only lstm1_mha --only keras_   # variants whose name has one of these
    python tools/generality_sweep.py --list                           # the variants, nothing run
    python tools/generality_sweep.py --keep /tmp/sweep                # keep the models and outputs there
    python tools/generality_sweep.py --keep /tmp/sweep                # again: the same models, onnxmod rerun

Builds, in a temporary directory (nothing is committed), small variants of the architectures
practitioners put around a recurrence, each trained for one or two quick epochs on a subset of a
committed split (``fixtures/brown_genre``, ``surround/brown_genre_post``, ``brown_pos``,
``digits``, ``math_topics``): a rough model is enough, δ is measured against the model itself.

* torch 2.13 (this python): LSTM/GRU/RNN, 1-2 layers, uni/bidirectional, batch_first or time-major;
  fronts: an embedding, an embedding + Conv1d, an image CNN (8x8 digits), float features; heads:
  last step, ``h_n[-1]``, ``cat(h_n[-2:])``, max, mean, masked mean, packed sequences, attention
  (additive, a learned query, ``nn.MultiheadAttention``), LayerNorm, BatchNorm1d + MLP, MLP,
  residual MLP, Conv1d over the outputs, per-step taggers (batch-first and time-major outputs).
  Each model is exported by the legacy exporter (``dynamo=False``, opset 13, 17 or 20) and by
  the default one (``dynamo=True``), and each export is checked against torch first.
* Keras 3 and tf_keras 2 via tf2onnx (``--keras-python``, default ``/work/venvs/tf/bin/python``):
  Bidirectional(LSTM) + GlobalAveragePooling1D (and merge_mode sum), Conv1D → LSTM, LSTM →
  Attention / AdditiveAttention / MultiHeadAttention, Masking → LSTM, Flatten, return_state,
  LayerNorm + BatchNorm + softmax, LSTM → GlobalMaxPooling1D → MLP; taggers (the seed paper's:
  LSTM/GRU/SimpleRNN, 1-2 layers, bidirectional, TimeDistributed Dense with or without softmax;
  tf_keras 2 with hard_sigmoid gates).

For every variant the CURRENT onnxmod of this checkout runs as a subprocess (this checkout first
on ``PYTHONPATH``): ``inspect``, ``decompose --mode rolled`` and, for many-output models,
``decompose --mode unrolled``; then every module is checked: ``onnx.checker.check_model(...,
full_check=True)``, runs in onnxruntime on test rows, and has no more weights than the model
(elements of float and integer initializers and ``Constant`` tensors, int64 index/shape tensors
excluded, counted the same way in both). A line per variant: ``ok`` (δ ≥ −1.0 point and every
check passes), ``refused: <onnxmod's error line>``, ``inexact δ …``, ``larger …``,
``invalid …``; then the wall time of the whole sweep.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
SEED = 20261220
MIN_DELTA = -0.01  # δ ≥ −1.0 point
KERAS_PYTHON = "/work/venvs/tf/bin/python"

# the data subsets every variant trains and is decomposed on: task -> (file, train rows, test rows)
TASKS = {
    "genre": (FIXTURES / "brown_genre" / "data.npz", 8000, 800),
    "genre_post": (FIXTURES / "surround" / "brown_genre_post" / "data.npz", 8000, 800),
    "pos": (FIXTURES / "brown_pos" / "data.npz", 5000, 300),
    "digits_rows": (FIXTURES / "digits" / "data.npz", None, None),
    "digits_img": (FIXTURES / "digits" / "data.npz", None, None),
    "math": (FIXTURES / "math_topics" / "data.npz", 8000, 800),
}
MANY = {"pos"}  # many-output tasks


@dataclass
class Variant:
    """One model: ``name`` (unique), framework part, task, and the torch recipe (front, cell,
    layers, directions, batch_first, head) or the Keras recipe (``recipe``)."""

    name: str
    part: str  # torch_legacy, torch_dynamo, keras
    task: str
    front: str = "emb"  # emb, embconv, cnn, float
    cell: str = "LSTM"
    layers: int = 1
    bi: bool = False
    batch_first: bool = True
    head: str = "last"
    opset: int | None = None
    recipe: str = ""  # keras
    epochs: int = 1
    config: str = ""  # the torch config the variant shares its training with
    notes: list = field(default_factory=list)


# ---- the torch configurations (each exported by both exporters) --------------------------------
# name, task, front, cell, layers, bi, batch_first, head, legacy opset
TORCH = [
    ("lstm1_last", "genre", "emb", "LSTM", 1, False, True, "last", 20),
    ("gru1_hn", "math", "emb", "GRU", 1, False, True, "hn", 17),
    ("rnn1_max", "math", "emb", "RNN", 1, False, True, "max", 13),
    ("rnnrelu1_mean", "math", "emb", "RNN_relu", 1, False, True, "mean", 20),
    ("lstm1bi_hncat", "math", "emb", "LSTM", 1, True, True, "hncat", 17),
    ("gru2_hn", "math", "emb", "GRU", 2, False, True, "hn", 20),
    ("lstm2bi_hncat", "genre", "emb", "LSTM", 2, True, True, "hncat", 13),
    ("gru2bi_hnall", "math", "emb", "GRU", 2, True, True, "hn_all", 17),
    ("lstm1_hc", "math", "emb", "LSTM", 1, False, True, "hc", 20),
    ("lstm1tm_mean", "genre", "emb", "LSTM", 1, False, False, "mean", 17),
    ("gru1tm_last", "math", "emb", "GRU", 1, False, False, "last", 20),
    ("lstm1bi_bilast", "math", "emb", "LSTM", 1, True, True, "bi_last", 13),
    ("gru1bi_bisum", "math", "emb", "GRU", 1, True, True, "bi_sum", 17),
    ("lstm1bi_maxmean", "math", "emb", "LSTM", 1, True, True, "max_mean", 20),
    ("gru1bi_maskedmean", "genre_post", "emb", "GRU", 1, True, True, "masked_mean", 13),
    ("lstm1_attnadd", "math", "emb", "LSTM", 1, False, True, "attn_add", 17),
    ("gru1bi_attndot", "genre_post", "emb", "GRU", 1, True, True, "attn_dot", 20),
    ("lstm1_mha", "math", "emb", "LSTM", 1, False, True, "mha", 17),
    ("lstm1_layernorm13", "math", "emb", "LSTM", 1, False, True, "layernorm", 13),
    ("gru1bi_layernorm", "math", "emb", "GRU", 1, True, True, "layernorm", 17),
    ("gru1bi_bnmlp", "math", "emb", "GRU", 1, True, True, "bn_mlp", 20),
    ("lstm1_mlp_softmax", "math", "emb", "LSTM", 1, False, True, "mlp_softmax", 13),
    ("rnn1_resmlp", "math", "emb", "RNN", 1, False, True, "res_mlp", 17),
    ("lstm1_conv1d", "math", "emb", "LSTM", 1, False, True, "conv1d", 20),
    ("lstm1_packed", "genre_post", "emb", "LSTM", 1, False, True, "packed", 17),
    ("embconv_lstm1_max", "math", "embconv", "LSTM", 1, False, True, "max", 20),
    ("cnn_lstm1_last", "digits_img", "cnn", "LSTM", 1, False, True, "last", 13),
    ("cnn_gru1bi_mean", "digits_img", "cnn", "GRU", 1, True, True, "mean", 17),
    ("float_rnn1_hn", "digits_rows", "float", "RNN", 1, False, True, "hn", 20),
    ("float_lstm2_attnadd", "digits_rows", "float", "LSTM", 2, False, True, "attn_add", 13),
    ("pos_lstm1_td", "pos", "emb", "LSTM", 1, False, True, "td", 20),
    ("pos_gru1bi_tdtm", "pos", "emb", "GRU", 1, True, False, "td_tm", 17),
    ("pos_lstm2_tdmlp", "pos", "emb", "LSTM", 2, False, True, "td_mlp", 13),
    ("pos_rnn1bi_tdln", "pos", "emb", "RNN", 1, True, True, "td_ln", 17),
    ("pos_lstm1bi_tdlogsoftmax", "pos", "emb", "LSTM", 1, True, True, "td_logsoftmax", 20),
    ("lstm1_flatten", "math", "emb", "LSTM", 1, False, True, "flatten", 17),
    ("pos_gru1_viewlinear", "pos", "emb", "GRU", 1, False, True, "view_linear", 13),
    ("lstm1_residual2", "math", "emb", "LSTM", 1, False, True, "residual_rnn", 20),
    ("gru1_skipemb", "math", "emb", "GRU", 1, False, True, "skip_emb", 17),
    ("lstm1_transformer", "math", "emb", "LSTM", 1, False, True, "transformer", 17),
    ("gru1bi_l2norm", "math", "emb", "GRU", 1, True, True, "l2norm", 20),
    ("gru2bi_hnview", "math", "emb", "GRU", 2, True, True, "hn_view", 17),
    ("lstm1_silumlp_temp", "math", "emb", "LSTM", 1, False, True, "silu_mlp_temp", 20),
    ("gru1_gated_sum", "math", "emb", "GRU", 1, False, True, "gated_sum", 13),
]
STATIC_T = {"flatten"}  # heads that need the exported length

# ---- Keras 3 via tf2onnx -----------------------------------------------------------------------
KERAS = [
    ("keras_bilstm_gap", "genre", "bilstm_gap"),
    ("keras_conv1d_lstm", "genre", "conv1d_lstm"),
    ("keras_lstm_attention", "genre", "lstm_attention"),
    ("keras_masking_lstm", "digits_rows", "masking_lstm"),
    ("keras_gru2_td", "pos", "gru2_td"),
    ("keras_bigru_td", "pos", "bigru_td"),
    ("keras_lstm_gmp_mlp", "genre", "lstm_gmp_mlp"),
    ("keras_bilstm_sum_gmp", "math", "bilstm_sum_gmp"),
    ("keras_lstm_flatten", "math", "lstm_flatten"),
    ("keras_lstm_state_hc", "math", "lstm_state_hc"),
    ("keras_lstm_ln_bn_softmax", "math", "lstm_ln_bn_softmax"),
    ("keras_lstm_mha", "math", "lstm_mha"),
    ("keras_gru_additive_attention", "math", "gru_additive_attention"),
    ("keras_tagger_lstm2_softmax", "pos", "tagger_LSTM_2_softmax"),
    ("keras_tagger_simplernn1", "pos", "tagger_SimpleRNN_1"),
    ("keras_tagger_bilstm1_softmax", "pos", "tagger_LSTM_1_bi_softmax"),
    ("tfkeras_tagger_lstm1_softmax", "pos", "tfk_tagger_LSTM_1_softmax"),
    ("tfkeras_tagger_gru2_softmax", "pos", "tfk_tagger_GRU_2_softmax"),
    ("tfkeras_tagger_simplernn2", "pos", "tfk_tagger_SimpleRNN_2"),
    ("tfkeras_lstm_softmax", "genre", "tfk_lstm_softmax"),
]


def variants() -> list[Variant]:
    out = []
    for name, task, front, cell, layers, bi, bf, head, opset in TORCH:
        common = dict(task=task, front=front, cell=cell, layers=layers, bi=bi, batch_first=bf, head=head,
                      epochs=6 if task.startswith("digits") else 3, config=name)
        out.append(Variant(f"{name}@legacy{opset}", "torch_legacy", opset=opset, **common))
        if head != "packed":  # torch.export cannot take a PackedSequence
            out.append(Variant(f"{name}@dynamo", "torch_dynamo", **common))
    for name, task, recipe in KERAS:
        epochs = 6 if task.startswith("digits") else 3
        out.append(Variant(f"{name}@tf2onnx", "keras", task, recipe=recipe, epochs=epochs, config=name))
    return out


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ================================================================================================
# data
# ================================================================================================
def write_data(work: Path) -> None:
    """Seeded subsets of the committed splits (test rows from ``x_test`` only)."""
    (work / "data").mkdir(parents=True, exist_ok=True)
    for task, (src, n_train, n_test) in TASKS.items():
        z = np.load(src)
        rng = np.random.default_rng(SEED)
        d = {}
        for split, n in (("train", n_train), ("test", n_test)):
            x, y = z[f"x_{split}"], z[f"y_{split}"]
            idx = np.sort(rng.choice(len(x), size=n, replace=False)) if n and n < len(x) else np.arange(len(x))
            x, y = x[idx], y[idx]
            if task == "digits_img":
                x = x[:, None].astype(np.float32)
            elif task == "digits_rows":
                x = x.astype(np.float32)
            d[f"x_{split}"], d[f"y_{split}"] = x, y
        d["class_names"] = np.array([str(c) for c in z["class_names"]])
        if "vocab" in z.files:
            d["vocab"] = z["vocab"]
        np.savez(work / "data" / f"{task}.npz", **d)


def load(work: Path, task: str) -> dict:
    z = np.load(work / "data" / f"{task}.npz")
    return {k: z[k] for k in z.files}


# ================================================================================================
# torch: models, training, export
# ================================================================================================
def torch_net():
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    H = 16  # hidden units per direction (≤ 32)
    T_STATIC = {"math": 40, "genre": 60, "genre_post": 60, "pos": 40}

    class Net(nn.Module):
        def __init__(self, v: Variant, vocab: int, classes: int):
            super().__init__()
            self.v = v
            if v.front in ("emb", "embconv"):
                self.embedding = nn.Embedding(vocab, 12, padding_idx=0)
                feat = 12
                if v.front == "embconv":
                    self.fconv = nn.Conv1d(12, 16, 3, padding=1)
                    feat = 16
            elif v.front == "cnn":
                self.cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 1)))
                feat = 8 * 4
            else:
                feat = 8
            kind, _, act = v.cell.partition("_")
            extra = {"nonlinearity": act} if act else {}
            self.rnn = getattr(nn, kind)(feat, H, num_layers=v.layers, bidirectional=v.bi,
                                         batch_first=v.batch_first, **extra)
            U = H * (2 if v.bi else 1)
            width = U
            h = v.head
            if h in ("hncat", "hc"):
                width = 2 * H
            elif h == "hn_all":
                width = H * v.layers * (2 if v.bi else 1)
            elif h == "bi_sum":
                width = H
            elif h == "max_mean":
                width = 2 * U
            if h == "attn_add":
                self.att = nn.Linear(U, 12)
                self.att_v = nn.Linear(12, 1)
            elif h == "attn_dot":
                self.query = nn.Parameter(torch.randn(U) * 0.3)
            elif h == "mha":
                self.mha = nn.MultiheadAttention(U, num_heads=2, batch_first=True)
            elif h in ("layernorm", "td_ln"):
                self.norm = nn.LayerNorm(U)
            elif h == "bn_mlp":
                self.bn = nn.BatchNorm1d(U)
            elif h == "res_mlp":
                self.r1, self.r2 = nn.Linear(U, 24), nn.Linear(24, U)
            elif h == "conv1d":
                self.conv = nn.Conv1d(U, 12, 3, padding=1)
                width = 12
            elif h == "flatten":
                width = U * T_STATIC[v.task]
            elif h == "residual_rnn":
                self.rnn2 = getattr(nn, kind)(U, H, batch_first=True)
            elif h == "skip_emb":
                width = U + feat
            elif h == "transformer":
                self.block = nn.TransformerEncoderLayer(U, nhead=2, dim_feedforward=32, dropout=0.1, batch_first=True)
            elif h == "hn_view":
                width = 2 * H
            elif h == "silu_mlp_temp":
                self.mlp = nn.Sequential(nn.Linear(U, 20), nn.SiLU(), nn.Linear(20, 20), nn.GELU(),
                                         nn.Linear(20, classes))
            elif h == "gated_sum":
                self.gate = nn.Linear(U, U)
            if h == "silu_mlp_temp":
                pass
            elif h in ("bn_mlp", "mlp_softmax", "td_mlp"):
                self.mlp = nn.Sequential(nn.Linear(width, 20), nn.ReLU(), nn.Dropout(0.2), nn.Linear(20, classes))
            else:
                self.out = nn.Linear(width, classes)

        def features(self, x):
            """[N, T, F] batch-first."""
            v = self.v
            if v.front in ("emb", "embconv"):
                e = self.embedding(x)
                if v.front == "embconv":
                    e = torch.relu(self.fconv(e.transpose(1, 2))).transpose(1, 2)
                return e
            if v.front == "cnn":
                c = self.cnn(x)  # [N, 8, 4, 8]
                return c.permute(0, 3, 1, 2).flatten(2)  # [N, W, C*H]
            return x

        def forward(self, x):
            v = self.v
            seq = self.features(x)
            if v.head == "packed":  # the outputs padded back, each row read at its length − 1
                lengths = (x != 0).sum(1).clamp(min=1)
                packed = pack_padded_sequence(seq, lengths, batch_first=True, enforce_sorted=False)
                y, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True)
                return self.out(y[torch.arange(y.shape[0]), lengths - 1])
            if not v.batch_first:
                seq = seq.transpose(0, 1)
            y, hn = self.rnn(seq)
            h_n = hn[0] if v.cell == "LSTM" else hn
            h = v.head
            if h == "hc":
                return self.out(torch.cat([h_n[-1], hn[1][-1]], dim=1))
            if h == "hn_all":  # every layer's and direction's final state, rows first
                return self.out(h_n.transpose(0, 1).reshape(h_n.shape[1], -1))
            if h == "hn_view":  # the last layer's two directions, by the documented view
                last = h_n.view(v.layers, 2, h_n.shape[1], -1)[-1]
                return self.out(last.transpose(0, 1).reshape(h_n.shape[1], -1))
            if h == "td_tm":  # time-major in, time-major out
                return self.out(y)
            if h == "last" and not v.batch_first:
                return self.out(y[-1])
            if not v.batch_first:
                y = y.transpose(0, 1)
            if h == "td":
                return self.out(y)
            if h == "td_mlp":
                return self.mlp(y)
            if h == "td_ln":
                return self.out(self.norm(y))
            if h == "td_logsoftmax":
                return torch.log_softmax(self.out(y), dim=-1)
            if h == "view_linear":  # crnn.pytorch's way: steps folded into rows and back
                n, t, u = y.shape
                return self.out(y.contiguous().view(n * t, u)).view(n, t, -1)
            if h == "flatten":
                return self.out(y.reshape(y.shape[0], -1))
            if h == "last":
                z = y[:, -1]
            elif h == "hn":
                z = h_n[-1]
            elif h == "hncat":
                z = torch.cat([h_n[-2], h_n[-1]], dim=1)
            elif h == "max":
                z = y.max(dim=1).values
            elif h == "bi_last":  # the forward direction's last step, the backward one's first
                Hd = y.shape[-1] // 2
                z = torch.cat([y[:, -1, :Hd], y[:, 0, Hd:]], dim=1)
            elif h == "bi_sum":  # the two directions summed unit by unit
                Hd = y.shape[-1] // 2
                z = (y[:, :, :Hd] + y[:, :, Hd:]).max(dim=1).values
            elif h == "max_mean":
                z = torch.cat([y.max(dim=1).values, y.mean(dim=1)], dim=1)
            elif h == "residual_rnn":  # a second layer with a residual connection around it
                z = (self.rnn2(y)[0] + y).max(dim=1).values
            elif h == "skip_emb":  # the embedding beside the recurrence's outputs
                z = torch.cat([seq, y], dim=-1).max(dim=1).values
            elif h == "transformer":
                z = self.block(y).mean(dim=1)
            elif h == "l2norm":
                z = torch.nn.functional.normalize(y[:, -1], dim=-1)
            elif h == "silu_mlp_temp":
                return self.mlp(y.max(dim=1).values) / 1.5
            elif h == "gated_sum":
                z = (y * torch.sigmoid(self.gate(y))).sum(dim=1)
            elif h == "mean":
                z = y.mean(dim=1)
            elif h == "masked_mean":
                m = (x != 0).unsqueeze(-1).to(y.dtype)
                z = (y * m).sum(1) / m.sum(1).clamp(min=1.0)
            elif h == "attn_add":
                a = torch.softmax(self.att_v(torch.tanh(self.att(y))).squeeze(-1), dim=1)
                z = (a.unsqueeze(-1) * y).sum(1)
            elif h == "attn_dot":
                a = torch.softmax(y @ self.query, dim=1)
                z = torch.bmm(a.unsqueeze(1), y).squeeze(1)
            elif h == "mha":
                att, _ = self.mha(y, y, y, need_weights=False)
                z = att.mean(dim=1)
            elif h == "layernorm":
                z = self.norm(y[:, -1])
            elif h == "bn_mlp":
                return self.mlp(self.bn(y.max(dim=1).values))
            elif h == "mlp_softmax":  # the model answers probabilities
                return torch.softmax(self.mlp(y[:, -1]), dim=-1)
            elif h == "res_mlp":
                z = y[:, -1]
                z = z + self.r2(torch.relu(self.r1(z)))
            elif h == "conv1d":
                z = torch.relu(self.conv(y.transpose(1, 2))).max(dim=2).values
            else:
                raise ValueError(h)
            return self.out(z)

    return Net


def train_torch(v: Variant, d: dict, seed: int):
    import torch
    from torch import nn

    Net = torch_net()
    torch.manual_seed(seed)
    vocab = len(d["vocab"]) if "vocab" in d else 0
    model = Net(v, vocab, len(d["class_names"]))
    x, y = d["x_train"], d["y_train"]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-1)
    rng = np.random.default_rng(seed)
    time_major_out = v.head == "td_tm"
    for _ in range(v.epochs):
        model.train()
        order = rng.permutation(len(x))
        for i in range(0, len(order), 64):
            b = order[i:i + 64]
            out = model(torch.from_numpy(x[b]))
            if time_major_out:
                out = out.transpose(0, 1)
            if v.head.endswith("_softmax") and not v.head.endswith("logsoftmax"):
                out = torch.log(out + 1e-9)  # probabilities: their logs are the scores
            loss = loss_fn(out.reshape(-1, out.shape[-1]), torch.from_numpy(y[b]).reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    model.eval()
    return model


@contextlib.contextmanager
def quiet_stdout():
    """The process's stdout, C++ code's included (torch prints its IR there when an export fails),
    goes nowhere: stdout is the sweep's table (progress and checks log to stderr)."""
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    sys.stdout.flush()
    try:
        os.dup2(null, 1)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def export_torch(model, v: Variant, x: np.ndarray) -> bytes:
    import onnx
    import torch
    from torch.export import Dim

    tokens = v.front in ("emb", "embconv") and v.head not in STATIC_T
    ex = torch.from_numpy(x[:4])
    with warnings.catch_warnings(), quiet_stdout():
        warnings.simplefilter("ignore")
        if v.part == "torch_legacy":
            dyn_in = {0: "batch", 1: "seq"} if tokens else {0: "batch"}
            dyn_out = {1: "batch", 0: "seq"} if v.head == "td_tm" else (
                {0: "batch", 1: "seq"} if v.task in MANY else {0: "batch"})
            buf = io.BytesIO()
            torch.onnx.export(model, (ex,), buf, dynamo=False, opset_version=v.opset, input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": dyn_in, "logits": dyn_out})
            proto = onnx.load_from_string(buf.getvalue())
        else:
            dyn = {0: Dim.AUTO, 1: Dim.AUTO} if tokens else {0: Dim.AUTO}
            prog = torch.onnx.export(model, (ex,), dynamo=True, input_names=["x"], output_names=["logits"],
                                     dynamic_shapes={"x": dyn}, external_data=False, verbose=False)
            proto = prog.model_proto
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def part_torch(work: Path, todo: list[Variant], built=lambda v, rec: None) -> dict:
    """Train each torch config once, export it by each exporter asked for; ``{name: record}``
    (``built(variant, record)`` is called as each is done, so checking starts at once)."""
    import logging

    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    records, trained = {}, {}
    for v in todo:
        t0 = time.time()
        d = load(work, v.task)
        rec = {"name": v.name}
        try:
            if v.config not in trained:
                trained[v.config] = train_torch(v, d, SEED + sum(map(ord, v.config)))
            model = trained[v.config]
            data = export_torch(model, v, d["x_test"])
            with torch.no_grad():
                want = model(torch.from_numpy(d["x_test"][:5])).numpy()
            got = ort_run(data, d["x_test"][:5])
            if got.shape != want.shape or not np.allclose(got, want, atol=1e-4, rtol=1e-3):
                why = f"shape {got.shape} vs {want.shape}" if got.shape != want.shape else \
                    f"max abs diff {np.abs(got - want).max():.3g}"
                rec["build_error"] = f"export differs from torch ({why})"
            else:
                (work / "models" / f"{v.name}.onnx").write_bytes(data)
        except Exception as exc:  # noqa: BLE001 - a failed export is the sweep's record, not a crash
            rec["build_error"] = f"export failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        rec["build_seconds"] = round(time.time() - t0, 1)
        log(f"  built {v.name} ({rec['build_seconds']} s){' — ' + rec['build_error'] if 'build_error' in rec else ''}")
        records[v.name] = rec
        built(v, rec)
    return records


# ================================================================================================
# Keras 3 via tf2onnx (runs in the Keras python)
# ================================================================================================
def keras_build(K, recipe: str, d: dict):
    L = K.layers
    C = len(d["class_names"])
    x = d["x_train"]
    if recipe == "masking_lstm":
        inp = K.Input(shape=(x.shape[1], x.shape[2]), dtype="float32", name="x")
        h = L.Masking(mask_value=0.0)(inp)
        h = L.LSTM(16)(h)
        return K.Model(inp, L.Dense(C)(h))
    tagger = recipe.endswith("_td") or "tagger_" in recipe
    static = tagger or recipe.endswith("_flatten")
    inp = K.Input(shape=(x.shape[1] if static else None,), dtype="int64", name="x")
    h = L.Embedding(len(d["vocab"]), 12)(inp)
    if "tagger_" in recipe:  # tagger_<cell>_<layers>[_bi][_softmax]: the seed paper's taggers and kin
        parts = recipe.split("tagger_")[1].split("_")
        cell, layers = getattr(L, parts[0]), int(parts[1])
        kw = {"recurrent_activation": "hard_sigmoid"} if recipe.startswith("tfk_") and parts[0] != "SimpleRNN" else {}
        for _ in range(layers):
            layer = cell(16, return_sequences=True, **kw)
            h = (L.Bidirectional(layer) if "bi" in parts else layer)(h)
        act = "softmax" if "softmax" in parts else None
        return K.Model(inp, L.TimeDistributed(L.Dense(C, activation=act))(h))
    if recipe == "tfk_lstm_softmax":  # a Keras 2 classifier as the seed paper's: hard_sigmoid gates, softmax
        h = L.LSTM(16, recurrent_activation="hard_sigmoid")(h)
        return K.Model(inp, L.Dense(C, activation="softmax")(h))
    if recipe == "bilstm_gap":
        h = L.Bidirectional(L.LSTM(16, return_sequences=True))(h)
        h = L.GlobalAveragePooling1D()(h)
    elif recipe == "conv1d_lstm":
        h = L.Conv1D(16, 3, padding="same", activation="relu")(h)
        h = L.LSTM(16)(h)
    elif recipe == "lstm_attention":
        s = L.LSTM(16, return_sequences=True)(h)
        h = L.Attention()([s, s])
        h = L.GlobalAveragePooling1D()(h)
    elif recipe == "gru2_td":
        h = L.GRU(16, return_sequences=True)(h)
        h = L.GRU(16, return_sequences=True)(h)
    elif recipe == "bigru_td":
        h = L.Bidirectional(L.GRU(16, return_sequences=True))(h)
    elif recipe == "bilstm_sum_gmp":
        h = L.Bidirectional(L.LSTM(16, return_sequences=True), merge_mode="sum")(h)
        h = L.GlobalMaxPooling1D()(h)
    elif recipe == "lstm_flatten":
        h = L.Flatten()(L.LSTM(16, return_sequences=True)(h))
    elif recipe == "lstm_state_hc":
        _, hh, cc = L.LSTM(16, return_state=True)(h)
        h = L.Concatenate()([hh, cc])
    elif recipe == "lstm_ln_bn_softmax":
        h = L.LSTM(16)(h)
        h = L.LayerNormalization()(h)
        h = L.BatchNormalization()(h)
        h = L.Dense(20, activation="relu")(h)
        return K.Model(inp, L.Dense(C, activation="softmax")(h))
    elif recipe == "lstm_mha":
        s_ = L.LSTM(16, return_sequences=True)(h)
        h = L.GlobalAveragePooling1D()(L.MultiHeadAttention(num_heads=2, key_dim=8)(s_, s_))
    elif recipe == "gru_additive_attention":
        s_ = L.GRU(16, return_sequences=True)(h)
        h = L.GlobalAveragePooling1D()(L.AdditiveAttention()([s_, s_]))
    elif recipe == "lstm_gmp_mlp":
        h = L.LSTM(16, return_sequences=True)(h)
        h = L.GlobalMaxPooling1D()(h)
        h = L.Dense(20, activation="relu")(h)
        h = L.Dropout(0.2)(h)
    else:
        raise ValueError(recipe)
    out = L.TimeDistributed(L.Dense(C))(h) if tagger else L.Dense(C)(h)
    return K.Model(inp, out)


def part_keras(work: Path, names: list[str]) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import keras as K3
    import tensorflow as tf
    import tf2onnx
    import tf_keras as K2

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    records = {}
    for v in variants():
        if v.part != "keras" or v.name not in names:
            continue
        t0 = time.time()
        rec = {"name": v.name}
        try:
            d = load(work, v.task)
            K = K2 if v.recipe.startswith("tfk_") else K3
            K.utils.set_random_seed(SEED + sum(map(ord, v.config)))
            model = keras_build(K, v.recipe, d)
            y = d["y_train"]
            model.compile(optimizer=K.optimizers.Adam(5e-3, clipnorm=1.0),
                          loss=K.losses.SparseCategoricalCrossentropy(from_logits="softmax" not in v.recipe))
            model.fit(d["x_train"], np.where(y == -1, 0, y), sample_weight=(y != -1).astype(np.float32),
                      batch_size=64, epochs=v.epochs, verbose=0)
            x = d["x_train"]
            fixed = x.shape[1] if v.recipe.endswith(("_td", "_flatten")) or "tagger_" in v.recipe \
                or v.task.startswith("digits") else None
            shape = (None, fixed) if x.ndim == 2 else (None,) + x.shape[1:]
            spec = (tf.TensorSpec(shape, tf.int64 if x.dtype == np.int64 else tf.float32, name="x"),)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=None)
            data = proto.SerializeToString()
            want = model(d["x_test"][:5], training=False).numpy()
            got = ort_run(data, d["x_test"][:5])
            if got.shape != want.shape or not np.allclose(got, want, atol=1e-4, rtol=1e-3):
                rec["build_error"] = "export differs from Keras"
            else:
                (work / "models" / f"{v.name}.onnx").write_bytes(data)
        except Exception as exc:  # noqa: BLE001
            rec["build_error"] = f"export failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        rec["build_seconds"] = round(time.time() - t0, 1)
        log(f"  built {v.name} ({rec['build_seconds']} s){' — ' + rec['build_error'] if 'build_error' in rec else ''}")
        records[v.name] = rec
    (work / "keras.json").write_text(json.dumps(records))


# ================================================================================================
# checking one variant with the checkout's onnxmod
# ================================================================================================
def ort_session(data):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(data if isinstance(data, bytes) else str(data), so,
                                providers=["CPUExecutionProvider"])


def ort_run(data, x: np.ndarray) -> np.ndarray:
    s = ort_session(data)
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def weights(proto) -> int:
    """Elements of float and integer weights (initializers and ``Constant`` tensors, subgraphs
    included; int64 indices and shapes, bools and scalars excluded)."""
    import onnx

    kinds = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
             onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32}

    def size(t) -> int:
        return int(np.prod(t.dims, dtype=np.int64)) if t.dims and t.data_type in kinds else 0

    def graph(g) -> int:
        n = sum(size(t) for t in g.initializer)
        for node in g.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    n += size(a.t)
                if a.type == onnx.AttributeProto.GRAPH:
                    n += graph(a.g)
                for sub in a.graphs:
                    n += graph(sub)
        return n

    return graph(proto.graph)


CHECKOUT = [REPO]  # whose onnxmod runs (--checkout)


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(CHECKOUT[0])] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p])
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def onnxmod(args: list[str], timeout: float) -> tuple[int | None, str]:
    try:
        p = subprocess.run([sys.executable, "-m", "onnxmod", *args], capture_output=True, text=True, env=env(),
                           cwd=REPO, timeout=timeout, check=False)
        return p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout:.0f} s"


def error_line(stderr: str, work: Path) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("onnxmod") and "error:" in ln]
    text = (errs or lines or ["(no message)"])[-1]
    text = re.sub(r"^onnxmod: error: ", "", text).replace(str(work) + os.sep, "")
    return re.sub(r"^models/\S+\.onnx: ", "", text)


def check_modules(out: Path, model_weights: int, x: np.ndarray) -> list[str]:
    """Problems of the modules in ``out``: checker, onnxruntime, size (one line each)."""
    import onnx

    problems = []
    files = sorted((out / "modules").glob("*.onnx"))
    if not files:
        return ["no module files written"]
    for f in files:
        proto = onnx.load(str(f))
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"invalid: {f.name}: checker: {' '.join(str(exc).split())[:160]}")
            continue
        try:
            ort_run(proto.SerializeToString(), x)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"invalid: {f.name}: onnxruntime: {' '.join(str(exc).split())[:160]}")
            continue
        n = weights(proto)
        if n > model_weights:
            problems.append(f"larger: {f.name} {n:,} weights > model {model_weights:,}")
    return problems


def check(work: Path, v: Variant, timeout: float, cap: float) -> dict:
    """inspect, decompose (rolled; unrolled for many-output models), and the module checks."""
    import onnx

    path = work / "models" / f"{v.name}.onnx"
    data = work / "data" / f"{v.task}.npz"
    rec = {"name": v.name}
    t0 = time.time()
    rc, err = onnxmod(["inspect", str(path), "-q"], timeout)
    rec["inspect"] = "ok" if rc == 0 else error_line(err, work)
    model_weights = weights(onnx.load(str(path)))
    try:
        p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--exactness", str(path), str(data)],
                           capture_output=True, text=True, env=env(), cwd=REPO, timeout=timeout, check=False)
        rec["exact"] = json.loads(p.stdout) if p.returncode == 0 else {"error": error_line(p.stderr, work)}
    except subprocess.TimeoutExpired:
        rec["exact"] = {"error": f"timeout after {timeout:.0f} s"}
    x = np.load(data)["x_test"][:7]
    for mode in ("rolled", "unrolled") if v.task in MANY else ("rolled",):
        out = work / "runs" / v.name / mode
        rc, err = onnxmod(["decompose", str(path), "--data", str(data), "--mode", mode, "--out", str(out), "--force",
                           "--threads", "1", "-q", "--max-sequences", "500", "--removal-cap", str(cap)], timeout)
        if rc != 0:
            rec[mode] = {"status": "refused", "why": error_line(err, work)}
            continue
        report = json.loads((out / "report.json").read_text())
        delta = report.get("delta")
        problems = check_modules(out, model_weights, x)
        if delta is not None and delta < MIN_DELTA:
            problems.insert(0, f"low δ: {100 * delta:+.2f}")
        status = problems[0].split(":")[0] if problems else "ok"
        rec[mode] = {"status": status, "delta": delta, "problems": problems,
                     "largest_module": max((m.get("params", 0) for m in report.get("modules", [])), default=None),
                     "model_params": report.get("model_params")}
    rec["check_seconds"] = round(time.time() - t0, 1)
    return rec


GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def zeroed(proto, keeps: dict):
    """A copy of ``proto`` whose native recurrences (``keeps[node name]`` = units kept per direction)
    have every other unit's ``W``/``R``/``B`` rows (and peepholes) at 0: from a zero initial state
    such a unit outputs exactly 0 at every step, which is what removing it means."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    inits = {t.name: t for t in m.graph.initializer}
    consts = {n.output[0]: n for n in m.graph.node if n.op_type == "Constant"}

    def get(name):
        if name in inits:
            return numpy_helper.to_array(inits[name]).copy()
        a = next(a for a in consts[name].attribute if a.name == "value")
        return numpy_helper.to_array(a.t).copy()

    def put(name, arr):
        if name in inits:
            inits[name].CopyFrom(numpy_helper.from_array(arr, name))
        else:
            a = next(a for a in consts[name].attribute if a.name == "value")
            a.t.CopyFrom(numpy_helper.from_array(arr, name))

    for node in m.graph.node:
        if node.name not in keeps:
            continue
        H = next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "hidden_size")
        G = GATES[node.op_type]
        for d, keep in enumerate(keeps[node.name]):
            gone = np.setdiff1d(np.arange(H), keep)
            rows = np.concatenate([g * H + gone for g in range(G)])
            for i in (1, 2, 3, 7):  # W, R, B (both halves), P
                if len(node.input) <= i or not node.input[i]:
                    continue
                w = get(node.input[i])
                if i == 3:
                    w[d, np.concatenate([rows, G * H + rows])] = 0
                elif i == 7:
                    w[d, np.concatenate([g * H + gone for g in range(3)])] = 0
                else:
                    w[d, rows] = 0
                put(node.input[i], w)
    return m


def exactness(path: str, data: str, seed: int = 0) -> dict:
    """Removing a random quarter of every native recurrence's units through onnxmod's unit flow
    (sliced, re-widened where it must) against the model with those units' weights zeroed, on test
    rows (onnxruntime): ``{"max_diff": relative max |difference|}``, or why it was not checked."""
    import onnx

    from onnxmod import runtime
    from onnxmod.graph import Model
    from onnxmod.units import UnitSelection

    proto = onnx.load(path)
    names = {n.name: n for n in proto.graph.node if n.op_type in GATES}
    model = Model(proto, source=path)
    lifted = any(op.name not in names for op in model.recurrent)
    if lifted:  # a recurrence lifted from a loop or unrolled steps: compare on onnxmod's own reading of the
        proto = model.fresh().export()  # file (the lift itself is checked against the file when decomposing)
        names = {n.name: n for n in proto.graph.node if n.op_type in GATES}
        model = Model(proto, source=path)
        if any(op.name not in names for op in model.recurrent):
            return {"skipped": "a recurrence onnxmod lifts is not a native op of its own reading either"}
    x = np.load(data)["x_test"][:16]
    rng = np.random.default_rng(seed)
    sel, keeps = {}, {}
    for op in model.recurrent:
        H = op.hidden_size
        keep = [np.sort(rng.choice(H, size=H - max(1, H // 4), replace=False)) for _ in range(op.directions)]
        sel[op.index], keeps[op.name] = UnitSelection.from_keep(H, keep), keep

    def logits(m: Model, selection=None):
        m = m.fresh()
        if selection:
            m.apply_selection(selection)
        out = m.head.output
        out.shape = None
        return runtime.session(m.export(outputs=[out])).run(None, {m.input.name: x})[0]

    got = logits(model, sel)
    want = logits(Model(zeroed(proto, keeps), source=path))
    if got.shape != want.shape:
        return {"max_diff": float("inf"), "why": f"shape {got.shape} vs {want.shape}"}
    return {"max_diff": float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max()))), "lifted": lifted}


EXACT = 1e-4  # sliced vs zeroed: max |difference| relative to max(1, max |logit|)


def exact_text(e: dict | None) -> str | None:
    """The exactness check in a few words, or None when it passed or did not apply."""
    if not e or "skipped" in e:
        return None
    if "error" in e:
        return f"slicing failed: {e['error']}"
    if e["max_diff"] > EXACT:
        return f"inexact: sliced ≠ zeroed by {e['max_diff']:.2g}" + (f" ({e['why']})" if e.get("why") else "")
    return None


def line(v: Variant, build: dict, rec: dict | None) -> str:
    if build.get("build_error"):
        return f"{v.name:42s} not built: {build['build_error']}"
    parts = [] if rec["inspect"] == "ok" else [f"inspect: {rec['inspect']}"]
    for mode in ("rolled", "unrolled"):
        r = rec.get(mode)
        if r is None:
            continue
        if r["status"] == "refused":
            parts.append(f"{mode}: refused: {r['why']}")
        elif r["status"] == "ok":
            parts.append(f"{mode}: ok δ {100 * r['delta']:+.2f}")
        else:
            parts.append(f"{mode}: {'; '.join(r['problems'][:2])}" + (f" (δ {100 * r['delta']:+.2f})"
                                                                       if r["status"] != "low δ" else ""))
    e = rec.get("exact") or {}
    parts.append(exact_text(e) or ("exact" if "max_diff" in e else "exactness n/a"))
    return f"{v.name:42s} " + " | ".join(parts) + f"  [{build.get('build_seconds', 0) + rec['check_seconds']:.0f} s]"


def verdict(rec: dict | None, build: dict) -> str:
    if build.get("build_error"):
        return "not built"
    modes = [rec[m]["status"] for m in ("rolled", "unrolled") if m in rec]
    if exact_text(rec.get("exact")):
        modes.append("inexact")
    return next((s for s in ("refused", "invalid", "inexact", "larger", "low δ") if s in modes), "ok")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", help="variants whose name contains this (repeatable)")
    p.add_argument("--no-keras", action="store_true", help="skip the Keras variants")
    p.add_argument("--keras-python", default=os.environ.get("ONNXMOD_KERAS_PYTHON", KERAS_PYTHON),
                   help=f"python with tensorflow, keras 3 and tf2onnx (default: {KERAS_PYTHON})")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary directory)")
    p.add_argument("--rebuild", action="store_true", help="with --keep: build the models again even if DIR has them")
    p.add_argument("--jobs", type=int, default=2, help="onnxmod runs at once (default: 2)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per onnxmod call (default: 600)")
    p.add_argument("--removal-cap", type=float, default=0.2,
                   help="decompose's --removal-cap: enough units removed to exercise slicing (default: 0.2, the "
                        "paper's; onnxmod's default 0.05 removes none of 16 units)")
    p.add_argument("--checkout", metavar="DIR", help="run the onnxmod package found in DIR instead of this "
                   "checkout's (e.g. `git archive main onnxmod | tar -x -C DIR`: a before/after on the same models)")
    p.add_argument("--json", metavar="FILE", help="also write every record to FILE")
    p.add_argument("--list", action="store_true", help="list the variants and stop")
    p.add_argument("--keras-part", metavar="WORKDIR", help=argparse.SUPPRESS)  # internal
    p.add_argument("--exactness", nargs=2, metavar=("MODEL", "NPZ"), help=argparse.SUPPRESS)  # internal
    p.add_argument("--names", help=argparse.SUPPRESS)  # internal
    a = p.parse_args(argv)
    if a.checkout:
        CHECKOUT[0] = Path(a.checkout).resolve()
    if a.exactness:
        print(json.dumps(exactness(*a.exactness)))
        return 0
    if a.keras_part:
        part_keras(Path(a.keras_part), a.names.split(","))
        return 0
    todo = [v for v in variants() if (not a.only or any(s in v.name for s in a.only))
            and not (a.no_keras and v.part == "keras")]
    if a.list:
        for v in todo:
            print(v.name)
        return 0
    t_start = time.time()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="onnxmod-sweep-"))
    (work / "models").mkdir(parents=True, exist_ok=True)
    try:
        saved = work / "builds.json"
        builds = json.loads(saved.read_text()) if a.keep and saved.exists() and not a.rebuild else {}
        if builds:
            log(f"reusing the models built in {work} ({saved.name}; --rebuild builds them again)")
        else:
            write_data(work)
        recs: dict[str, dict] = {}
        pool = cf.ThreadPoolExecutor(max_workers=max(1, a.jobs))
        futs = {}

        def built(v: Variant, rec: dict) -> None:
            builds[v.name] = rec
            if not rec.get("build_error"):
                futs[pool.submit(check, work, v, a.timeout, a.removal_cap)] = v

        for v in todo:
            if v.name in builds:
                built(v, builds[v.name])
        keras = [v for v in todo if v.part == "keras" and v.name not in builds]
        kproc = None
        if keras:
            if not Path(a.keras_python).exists():
                for v in keras:
                    built(v, {"name": v.name, "build_error": f"no Keras python at {a.keras_python}"})
            else:
                log(f"building {len(keras)} Keras variants in {a.keras_python} (in the background)")
                kproc = subprocess.Popen([a.keras_python, str(Path(__file__).resolve()), "--keras-part", str(work),
                                          "--names", ",".join(v.name for v in keras)], env={**os.environ,
                                         "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
        torch_todo = [v for v in todo if v.part.startswith("torch") and v.name not in builds]
        if torch_todo:
            log(f"building {len(torch_todo)} torch variants (each checked as soon as it is built)")
            part_torch(work, torch_todo, built)
        if kproc is not None:
            _, kerr = kproc.communicate()
            kjson = work / "keras.json"
            got = json.loads(kjson.read_text()) if kjson.exists() else {}
            for v in keras:
                built(v, got.get(v.name, {"name": v.name,
                                          "build_error": "Keras part failed: " + (kerr or "").strip()[-300:]}))
        t_built = time.time()
        old = json.loads(saved.read_text()) if saved.exists() else {}
        saved.write_text(json.dumps({**old, **builds}, indent=1))
        for fut in cf.as_completed(list(futs)):
            v = futs[fut]
            recs[v.name] = fut.result()
            log("  " + line(v, builds[v.name], recs[v.name]))
        pool.shutdown()
        print(f"{'variant':42s} result")
        counts: dict[str, int] = {}
        for v in todo:
            print(line(v, builds[v.name], recs.get(v.name)))
            k = verdict(recs.get(v.name), builds[v.name])
            counts[k] = counts.get(k, 0) + 1
        total = time.time() - t_start
        by_count = sorted(counts.items(), key=lambda x: -x[1])
        print(f"\n{len(todo)} variants: " + ", ".join(f"{n} {k}" for k, n in by_count)
              + f"; wall {total / 60:.1f} min (building done after {(t_built - t_start) / 60:.1f}; onnxmod runs "
              f"{sum(r['check_seconds'] for r in recs.values()) / 60:.1f} min in all, {a.jobs} at a time)")
        if a.json:
            Path(a.json).write_text(json.dumps({"variants": [asdict(v) for v in todo], "builds": builds,
                                                "checks": recs, "seconds": round(total, 1)}, indent=1))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
