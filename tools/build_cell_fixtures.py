#!/usr/bin/env python
"""Rebuild onnxmod's custom-recurrent-cell fixtures (issue 14): DuRNN, IndRNN and a GRU cell
written in plain torch ops, exported as a ``Loop`` and as an unrolled chain, plus native LSTM/GRU
of about the DuRNN's parameter count for comparison.

    python tools/build_cell_fixtures.py                       # all three tasks
    python tools/build_cell_fixtures.py --only digits_pixels  # one task (repeatable)

Needs torch==2.13.0 (CPU), onnxscript (torch's default exporter), onnx, onnxruntime, numpy and
scikit-learn (only for ``load_digits``; its bundled copy of the UCI 8x8 digits).

Writes
* ``fixtures/digits/data.npz`` (row by row, float32 ``[N, 8, 8]``) and
  ``fixtures/digits_pixels/data.npz`` (pixel by pixel, float32 ``[N, 64, 1]``): the same seeded,
  stratified 1,197 / 200 / 400 train / val / test split, pixels scaled to [0, 1];
* ``fixtures/cells/<task>/<cell><layers>_<export>.onnx`` with ``export`` one of
  ``loop``     ``torch.jit.script`` of the model (its Python time loop) through the legacy
               exporter (``dynamo=False``): one ``Loop`` per layer, time axis dynamic;
  ``unrolled`` the default exporter (``dynamo=True``): one chain of nodes per time step, the
               time axis frozen at the example's length although it was asked dynamic;
  ``native``   ``nn.LSTM`` / ``nn.GRU`` through the legacy exporter: one native op per layer;
* ``fixtures/cells/manifest.json`` and the table in ``fixtures/cells/README.md``.

Every export is checked in onnxruntime against torch (atol 1e-4) at two batch sizes and, where
the time axis is dynamic, two more lengths; the build stops on a mismatch. Everything is seeded,
torch runs on one thread, ``data.npz`` has fixed zip timestamps.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import math
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixturelib as fl  # noqa: E402

# CELL_FIXTURES_REPO: run a copy of this script (torch.jit.script re-reads the source of the cells,
# so editing the script under a running build breaks it) against the repository
REPO = Path(os.environ.get("CELL_FIXTURES_REPO") or Path(__file__).resolve().parent.parent)
FIXTURES = REPO / "fixtures"
CELLS_DIR = FIXTURES / "cells"
MANIFEST = CELLS_DIR / "manifest.json"
SEED = 20261122
SPLIT = (1197, 200, 400)  # train, val, test
ATOL = 1e-4
MAX_FILE_BYTES = 300_000
TASKS = ("digits", "digits_pixels", "brown_genre")


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------------------------
# data: scikit-learn's bundled 8x8 digits
# --------------------------------------------------------------------------------------------
def stratified_exact(labels: np.ndarray, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Seeded split of ``range(len(labels))`` into parts of exactly ``sizes``, stratified by label.

    Each part's per-class quota is its share of the class (largest remainder, ties to the lower
    class id); within a class the rows are shuffled by the seeded generator. Parts come back sorted.
    """
    assert sum(sizes) == len(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.zeros((len(sizes), len(classes)), dtype=np.int64)
    left = counts.copy()
    for p, size in enumerate(sizes[:-1]):
        exact = counts * size / len(labels)
        q = np.floor(exact).astype(np.int64)
        order = np.lexsort((classes, -(exact - q)))
        q[order[: size - q.sum()]] += 1
        quotas[p] = q
        left -= q
    quotas[-1] = left
    parts: list[list[int]] = [[] for _ in sizes]
    for ci, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for p in range(len(sizes)):
            parts[p].extend(idx[start:start + quotas[p, ci]].tolist())
            start += quotas[p, ci]
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def build_digits() -> dict[str, dict[str, np.ndarray]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)  # [1797, 8, 8], integers 0..16 -> [0, 1]
    y = d.target.astype(np.int64)
    assert images.shape == (1797, 8, 8) and float(d.images.max()) == 16.0
    tr, va, te = stratified_exact(y, SPLIT, SEED)
    names = np.array([str(i) for i in range(10)], dtype=np.str_)
    out = {}
    for task, view in (("digits", lambda a: a), ("digits_pixels", lambda a: a.reshape(len(a), 64, 1))):
        arrays = {}
        for split, idx in (("train", tr), ("val", va), ("test", te)):
            arrays[f"x_{split}"] = np.ascontiguousarray(view(images[idx]), dtype=np.float32)
            arrays[f"y_{split}"] = y[idx]
        arrays["class_names"] = names
        path = FIXTURES / task / "data.npz"
        tmp = path.with_name(f".data.npz.{os.getpid()}.partial")
        fl.savez_deterministic(tmp, arrays)
        tmp.replace(path)  # atomic: two builder processes may write the same bytes at once
        out[task] = arrays
        log(f"{task}: wrote data.npz x_train {arrays['x_train'].shape} x_val {arrays['x_val'].shape} "
            f"x_test {arrays['x_test'].shape}")
    return out


def load_task(task: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / task / "data.npz") as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------------------------
# the cells, in plain torch ops (scriptable: the same module is scripted for the Loop export and
# run eagerly for the unrolled export)
# --------------------------------------------------------------------------------------------
def _matrix(rows: int, cols: int) -> nn.Parameter:
    b = 1.0 / math.sqrt(cols)
    return nn.Parameter(torch.empty(rows, cols).uniform_(-b, b))


class DuRNNLayer(nn.Module):
    """One DuRNN layer (SPEC section 8's reading of Zhang et al. 2021).

    short-term  s_t = tanh(W_s x_t + U s_{t-1} + b_s),   U = U_s / max(1, ||row of U_s||)
    selection   g_t = sigmoid(W_g x_t + V_g s_t + b_g)
    long-term   l_t = relu(W_l (g_t * P s_t) + u * l_{t-1} + b_l),   u = clip(u_raw, -1, 1)
    output      [s_t; l_t]  (all steps, [B, T, hs + hl])

    The constraints are computed in ``forward`` from the raw parameters, before the time loop.
    """

    def __init__(self, n_in: int, hs: int, hl: int):
        super().__init__()
        self.hs, self.hl = hs, hl
        self.W_s, self.U_s, self.b_s = _matrix(hs, n_in), _matrix(hs, hs), nn.Parameter(torch.zeros(hs))
        self.W_g, self.V_g, self.b_g = _matrix(hs, n_in), _matrix(hs, hs), nn.Parameter(torch.zeros(hs))
        self.P, self.W_l = _matrix(hs, hs), _matrix(hl, hs)
        self.u = nn.Parameter(torch.empty(hl).uniform_(0.0, 1.0))
        self.b_l = nn.Parameter(torch.zeros(hl))

    def forward(self, x: Tensor) -> Tensor:
        U = self.U_s / torch.clamp(torch.norm(self.U_s, 2, 1, True), min=1.0)
        u = torch.clamp(self.u, -1.0, 1.0)
        s = torch.zeros([x.size(0), self.hs], dtype=x.dtype)
        l = torch.zeros([x.size(0), self.hl], dtype=x.dtype)
        outs: list[Tensor] = []
        for t in range(x.size(1)):
            xt = x[:, t]
            s = torch.tanh(F.linear(xt, self.W_s) + F.linear(s, U) + self.b_s)
            g = torch.sigmoid(F.linear(xt, self.W_g) + F.linear(s, self.V_g) + self.b_g)
            l = torch.relu(F.linear(g * F.linear(s, self.P), self.W_l) + u * l + self.b_l)
            outs.append(torch.cat([s, l], 1))
        return torch.stack(outs, 1)


class IndRNNLayer(nn.Module):
    """IndRNN: h_t = relu(W x_t + u * h_{t-1} + b), u = clip(u_raw, -1, 1) element-wise."""

    def __init__(self, n_in: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.W, self.b = _matrix(hidden, n_in), nn.Parameter(torch.zeros(hidden))
        self.u = nn.Parameter(torch.empty(hidden).uniform_(0.0, 1.0))

    def forward(self, x: Tensor) -> Tensor:
        u = torch.clamp(self.u, -1.0, 1.0)
        h = torch.zeros([x.size(0), self.hidden], dtype=x.dtype)
        outs: list[Tensor] = []
        for t in range(x.size(1)):
            h = torch.relu(F.linear(x[:, t], self.W) + u * h + self.b)
            outs.append(h)
        return torch.stack(outs, 1)


class GRUCellLayer(nn.Module):
    """A GRU written in plain ops (torch's gate equations, reset applied after the recurrent
    product as ONNX's linear_before_reset=1):
    r = sigmoid(W_r x + U_r h + b_r), z = sigmoid(W_z x + U_z h + b_z),
    n = tanh(W_n x + b_n + r * (U_n h + c_n)), h = (1 - z) * n + z * h."""

    def __init__(self, n_in: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.W_r, self.U_r, self.b_r = _matrix(hidden, n_in), _matrix(hidden, hidden), nn.Parameter(torch.zeros(hidden))
        self.W_z, self.U_z, self.b_z = _matrix(hidden, n_in), _matrix(hidden, hidden), nn.Parameter(torch.zeros(hidden))
        self.W_n, self.U_n = _matrix(hidden, n_in), _matrix(hidden, hidden)
        self.b_n, self.c_n = nn.Parameter(torch.zeros(hidden)), nn.Parameter(torch.zeros(hidden))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.zeros([x.size(0), self.hidden], dtype=x.dtype)
        outs: list[Tensor] = []
        for t in range(x.size(1)):
            xt = x[:, t]
            r = torch.sigmoid(F.linear(xt, self.W_r) + F.linear(h, self.U_r) + self.b_r)
            z = torch.sigmoid(F.linear(xt, self.W_z) + F.linear(h, self.U_z) + self.b_z)
            n = torch.tanh(F.linear(xt, self.W_n) + self.b_n + r * (F.linear(h, self.U_n) + self.c_n))
            h = (1.0 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs, 1)


CUSTOM_CELLS = ("durnn", "indrnn", "grucell")
NATIVE_CELLS = ("lstm", "gru")


def make_layer(cell: str, n_in: int, hidden: int) -> tuple[nn.Module, int]:
    """A layer and its output width."""
    if cell == "durnn":
        return DuRNNLayer(n_in, hidden, hidden), 2 * hidden
    if cell == "indrnn":
        return IndRNNLayer(n_in, hidden), hidden
    if cell == "grucell":
        return GRUCellLayer(n_in, hidden), hidden
    raise ValueError(cell)


class CellClassifier(nn.Module):
    """[Embedding ->] custom recurrent stack -> last step -> Linear(C) logits (M:1).

    ``vocab_size`` > 0: int64 token ids ``[B, T]`` through Embedding(vocab_size, emb_dim);
    otherwise float32 features ``[B, T, F]``."""

    def __init__(self, cell: str, layers: int, hidden: int, n_classes: int, *, n_features: int = 0,
                 vocab_size: int = 0, emb_dim: int = 0):
        super().__init__()
        self.use_embedding = vocab_size > 0
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=0) if vocab_size else nn.Identity()
        d = emb_dim if vocab_size else n_features
        self.layers = nn.ModuleList()
        for _ in range(layers):
            layer, d = make_layer(cell, d, hidden)
            self.layers.append(layer)
        self.out = nn.Linear(d, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        y = self.embedding(x)
        for layer in self.layers:
            y = layer(y)
        return self.out(y[:, -1])


class NativeClassifier(nn.Module):
    """float32 ``[B, T, F]`` -> nn.LSTM / nn.GRU (batch_first) -> last step -> Linear(C)."""

    def __init__(self, cell: str, layers: int, hidden: int, n_classes: int, n_features: int):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(n_features, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.rnn(x)
        return self.out(y[:, -1])


def native_hidden_for(cell: str, n_features: int, n_classes: int, target: int) -> int:
    """The hidden size whose one-layer native classifier has the parameter count nearest ``target``."""
    best = None
    for h in range(2, 128):
        n = fl.count_params(NativeClassifier(cell, 1, h, n_classes, n_features))
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (h, n)
    return best[0]


# --------------------------------------------------------------------------------------------
# the plan: which models each task gets
# --------------------------------------------------------------------------------------------
DIGITS_HIDDEN = {"durnn": 24, "indrnn": 32, "grucell": 24}
TRAIN = {
    # task: (epochs, batch, lr)
    "digits": (40, 32, 5e-3),
    "digits_pixels": (40, 32, 5e-3),
    "brown_genre": (8, 128, 3e-3),
}
# fewer epochs where an epoch is slow (64 steps x 2 layers)
EPOCHS_OVERRIDE = {("digits_pixels", "durnn2"): 25}
BROWN_EMB, BROWN_HIDDEN = 8, 24


def plan(task: str) -> list[dict]:
    if task == "brown_genre":
        return [dict(cell="durnn", layers=1, hidden=BROWN_HIDDEN)]
    specs = [dict(cell="durnn", layers=1, hidden=DIGITS_HIDDEN["durnn"]),
             dict(cell="durnn", layers=2, hidden=DIGITS_HIDDEN["durnn"]),
             dict(cell="indrnn", layers=1, hidden=DIGITS_HIDDEN["indrnn"]),
             dict(cell="grucell", layers=1, hidden=DIGITS_HIDDEN["grucell"])]
    n_features = 8 if task == "digits" else 1
    target = fl.count_params(CellClassifier("durnn", 1, DIGITS_HIDDEN["durnn"], 10, n_features=n_features))
    for cell in NATIVE_CELLS:
        specs.append(dict(cell=cell, layers=1, hidden=native_hidden_for(cell, n_features, 10, target)))
    return specs


def stem(spec: dict) -> str:
    return f"{spec['cell']}{spec['layers']}"


def model_seed(task: str, spec: dict) -> int:
    key = f"{task}/{stem(spec)}"
    return SEED + sum((i + 1) * ord(c) for i, c in enumerate(key)) % 100_000


# --------------------------------------------------------------------------------------------
# export and verification
# --------------------------------------------------------------------------------------------
class BuildError(RuntimeError):
    pass


def _session(path_or_bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def ort_logits(sess, x: np.ndarray, batch: int = 500) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(["logits"], {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def finish_proto(m, metadata: dict[str, str]):
    """Strip the exporter's per-node debug metadata / doc strings (torch's default exporter stores
    a stack trace per node, ~30x the weights) and the intermediate ``value_info``, set
    ``metadata_props``, check, and return. Idempotent."""
    import onnx
    from onnx_finish import strip_debug

    strip_debug(m, metadata)
    onnx.checker.check_model(m, full_check=True)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer):
        raise BuildError("external data in the exported model")
    return m


def check_lengths(T: int, dynamic_seq: bool) -> list[tuple[int, int]]:
    checks = [(5, T), (17, T)]
    if dynamic_seq:
        checks += [(3, max(2, T - 3)), (11, T + 5)]
    return checks


def sample_rows(x: np.ndarray, b: int, t: int, rng) -> np.ndarray:
    """``b`` real rows at length ``t``: the last ``t`` steps, or extra real steps prepended (M:1
    reads the last step, so the data's end stays at the end)."""
    T = x.shape[1]
    rows = x[rng.choice(len(x), size=b, replace=False)]
    if t <= T:
        out = rows[:, T - t:]
    else:
        out = np.concatenate([rows[:, : t - T], rows], 1)
    return np.ascontiguousarray(out)


def verify(model: nn.Module, sess, x_sample: np.ndarray, checks: list[tuple[int, int]], name: str) -> float:
    rng = np.random.default_rng(0)
    worst = 0.0
    for b, t in checks:
        xb = sample_rows(x_sample, b, t, rng)
        with torch.no_grad():
            ref = model(torch.from_numpy(xb)).numpy()
        got = sess.run(["logits"], {sess.get_inputs()[0].name: xb})[0]
        if got.shape != ref.shape or got.dtype != np.float32:
            raise BuildError(f"{name}: onnxruntime shape {got.shape}/{got.dtype} vs torch {ref.shape}")
        err = float(np.abs(got - ref).max())
        if not err <= ATOL:
            raise BuildError(f"{name}: onnxruntime vs torch max abs diff {err} at batch {b}, T {t}")
        worst = max(worst, err)
    return worst


def op_summary(m) -> dict:
    top = Counter(n.op_type for n in m.graph.node)
    bodies = []
    for n in m.graph.node:
        if n.op_type in ("Loop", "Scan"):
            for a in n.attribute:
                if a.name == "body":
                    bodies.append(sorted(Counter(b.op_type for b in a.g.node).items()))
    return {"op_types": sorted(top), "op_counts": dict(sorted(top.items())),
            "loop_body_op_counts": [dict(b) for b in bodies]}


def export(model: nn.Module, form: str, x_sample: np.ndarray, input_name: str, path: Path,
           metadata: dict[str, str], layers: int) -> dict:
    """Export ``model`` in ``form`` (loop / unrolled / native) to ``path``; verify; describe."""
    import onnx

    model.eval()
    example = torch.from_numpy(np.ascontiguousarray(x_sample[:2]))
    T = x_sample.shape[1]
    dyn_axes = {input_name: {0: "batch", 1: "seq"}, "logits": {0: "batch"}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if form == "loop":
            scripted = torch.jit.script(model)
            buf = io.BytesIO()
            torch.onnx.export(scripted, (example,), buf, dynamo=False, opset_version=fl.ONNX_OPSET,
                              input_names=[input_name], output_names=["logits"], dynamic_axes=dyn_axes)
            proto = onnx.load_from_string(buf.getvalue())
        elif form == "native":
            buf = io.BytesIO()
            torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=fl.ONNX_OPSET,
                              input_names=[input_name], output_names=["logits"], dynamic_axes=dyn_axes)
            proto = onnx.load_from_string(buf.getvalue())
        elif form == "unrolled":
            # asked for a dynamic time axis too: the exporter unrolls the Python loop and freezes it
            dims = ({0: torch.export.Dim("batch", min=1, max=4096), 1: torch.export.Dim("seq", min=2, max=4096)},)
            prog = torch.onnx.export(model, (example,), dynamo=True, opset_version=fl.ONNX_OPSET,
                                     input_names=[input_name], output_names=["logits"],
                                     dynamic_shapes=dims, verbose=False)
            proto = prog.model_proto
        else:
            raise ValueError(form)
    proto = finish_proto(proto, metadata)
    if [i.name for i in proto.graph.input] != [input_name] or [o.name for o in proto.graph.output] != ["logits"]:
        raise BuildError(f"{path.name}: inputs {[i.name for i in proto.graph.input]} / outputs "
                         f"{[o.name for o in proto.graph.output]}")
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in proto.graph.input[0].type.tensor_type.shape.dim]
    seq_dim = dims[1]
    dynamic_seq = isinstance(seq_dim, str)
    ops = op_summary(proto)
    loops = ops["op_counts"].get("Loop", 0) + ops["op_counts"].get("Scan", 0)
    native = sum(ops["op_counts"].get(o, 0) for o in fl.RECURRENT_OPS)
    if form == "loop" and (loops != layers or not dynamic_seq or native):
        raise BuildError(f"{path.name}: expected {layers} Loop ops and a dynamic time axis, "
                         f"got {ops['op_counts']}, dims {dims}")
    if form == "native" and (native != layers or loops or not dynamic_seq):
        raise BuildError(f"{path.name}: expected {layers} native recurrent ops, got {ops['op_counts']}")
    if form == "unrolled":
        if loops or native:
            raise BuildError(f"{path.name}: expected an unrolled chain, got {ops['op_counts']}")
        if dynamic_seq:
            raise BuildError(f"{path.name}: the default exporter kept the time axis dynamic ({dims}); "
                             "the fixture README says it freezes it -- update both")
        if seq_dim != T:
            raise BuildError(f"{path.name}: time axis frozen at {seq_dim}, example length {T}")
    data = proto.SerializeToString()
    if len(data) > MAX_FILE_BYTES:
        raise BuildError(f"{path.name}: {len(data):,} bytes > {MAX_FILE_BYTES:,}")
    sess = _session(data)
    checks = check_lengths(T, dynamic_seq)
    diff = verify(model, sess, x_sample, checks, path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.partial")
    tmp.write_bytes(data)
    tmp.replace(path)
    return {"sess": sess, "file_bytes": len(data), "seq_len": "dynamic" if dynamic_seq else int(seq_dim),
            "checks": [list(c) for c in checks], "check_max_diff": diff, **ops}


EXPORT_FORMS = {
    "loop": "torch.jit.script + torch.onnx.export(dynamo=False, opset 20)",
    "unrolled": "torch.onnx.export(dynamo=True, opset 20), dynamic_shapes asked for batch and time",
    "native": "torch.onnx.export(dynamo=False, opset 20) of nn.LSTM / nn.GRU",
}


# --------------------------------------------------------------------------------------------
# building one task
# --------------------------------------------------------------------------------------------
def task_metadata(task: str, d: dict) -> dict[str, str]:
    meta = {"onnxmod.task": task,
            "onnxmod.class_names": json.dumps([str(c) for c in d["class_names"]]),
            "onnxmod.shape": "M:1"}
    if "vocab" in d:
        meta["onnxmod.vocab_sha256"] = fl.vocab_sha256([str(v) for v in d["vocab"]])
        meta = {k: meta[k] for k in ("onnxmod.task", "onnxmod.class_names", "onnxmod.vocab_sha256", "onnxmod.shape")}
    return meta


def build_task(task: str, only_models: list[str] | None) -> dict:
    d = load_task(task)
    tokens = task == "brown_genre"
    input_name = "tokens" if tokens else "x"
    C = len(d["class_names"])
    epochs0, batch, lr = TRAIN[task]
    meta = task_metadata(task, d)
    out_dir = CELLS_DIR / task
    x_sample = d["x_test"][:256]
    models = []
    for spec in plan(task):
        s = stem(spec)
        if only_models and s not in only_models:
            continue
        seed = model_seed(task, spec)
        torch.manual_seed(seed)
        if spec["cell"] in CUSTOM_CELLS:
            if tokens:
                model = CellClassifier(spec["cell"], spec["layers"], spec["hidden"], C,
                                       vocab_size=len(d["vocab"]), emb_dim=BROWN_EMB)
            else:
                model = CellClassifier(spec["cell"], spec["layers"], spec["hidden"], C,
                                       n_features=d["x_train"].shape[2])
            forms = ["loop", "unrolled"]
        else:
            model = NativeClassifier(spec["cell"], spec["layers"], spec["hidden"], C, d["x_train"].shape[2])
            forms = ["native"]
        params = fl.count_params(model)
        epochs = EPOCHS_OVERRIDE.get((task, s), epochs0)
        log(f"{task}/{s}: hidden {spec['hidden']}, {params:,} parameters, seed {seed}")
        cfg = fl.TrainConfig(epochs=epochs, batch_size=batch, lr=lr, clip=1.0, val_frac=0.1)
        report = fl.train_model(model, d["x_train"], d["y_train"], cfg, seed, log=log)
        torch_test = fl.predict_logits(model, d["x_test"])
        torch_acc = fl.accuracy_from_logits(torch_test, d["y_test"])
        log(f"  torch test accuracy {torch_acc:.4f} (best epoch {report['best_epoch']}, "
            f"val {report['val_acc']:.4f}, {report['train_seconds']}s)")
        pair = {}
        for form in forms:
            name = f"{s}_{form}.onnx"
            t0 = time.time()
            info = export(model, form, x_sample, input_name, out_dir / name, meta, spec["layers"])
            sess = info.pop("sess")
            logits = ort_logits(sess, d["x_test"])
            pair[form] = logits
            correct = int((logits.argmax(-1) == d["y_test"]).sum())
            entry = {
                "file": f"cells/{task}/{name}", "task": task, "cell": spec["cell"], "layers": spec["layers"],
                "hidden": ({"short_term": spec["hidden"], "long_term": spec["hidden"]}
                           if spec["cell"] == "durnn" else spec["hidden"]),
                "params": params, "export": form, "exporter": EXPORT_FORMS[form],
                "input": input_name, "embedding_dim": BROWN_EMB if tokens else None,
                "test_accuracy": round(correct / len(d["y_test"]), 6), "test_correct": correct,
                "n_test": int(len(d["y_test"])), "torch_test_accuracy": round(torch_acc, 6),
                "val_accuracy": round(report["val_acc"], 6), "best_epoch": report["best_epoch"],
                "train": {"epochs": epochs, "batch_size": batch, "lr": lr, "clip": 1.0, "seed": seed,
                          "optimizer": "Adam", "holdout": "seeded 10 % of x_train picks the epoch"},
                **info,
            }
            log(f"  {name}: {info['file_bytes']:,} bytes, T {info['seq_len']}, check max diff "
                f"{info['check_max_diff']:.2e}, onnxruntime test accuracy {entry['test_accuracy']:.4f} "
                f"({time.time() - t0:.0f}s)")
            models.append(entry)
        if len(pair) == 2:
            diff = float(np.abs(pair["loop"] - pair["unrolled"]).max())
            if diff > ATOL:
                raise BuildError(f"{task}/{s}: loop vs unrolled max abs diff {diff} on the test rows")
            for e in models[-len(forms):]:
                e["loop_vs_unrolled_max_diff"] = diff
            log(f"  loop vs unrolled on the test rows: max abs diff {diff:.2e}")
        update_manifest(task, models[-len(forms):], keep_others=True)  # a stopped build keeps its models
    return {"models": models}


# --------------------------------------------------------------------------------------------
# manifest and README table
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def manifest_lock():
    lock = REPO / ".cache" / "fixtures" / "cells.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def update_manifest(task: str, new_models: list[dict], keep_others: bool) -> dict:
    """Put ``new_models`` into the task's entry (replacing same-file entries); the task's other
    models stay if ``keep_others``, else they are dropped (a full rebuild of the task)."""
    with manifest_lock():
        man = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"tasks": {}}
        old = man["tasks"].get(task, {}).get("models", []) if keep_others else []
        new_files = {m["file"] for m in new_models}
        models = [m for m in old if m["file"] not in new_files] + new_models
        d = load_task(task)
        man["tasks"][task] = {
            "shape": "M:1", "data": f"{task}/data.npz", "class_names": [str(c) for c in d["class_names"]],
            "input": "tokens" if task == "brown_genre" else "x",
            "x_shape": list(d["x_test"].shape[1:]), "n_train": int(len(d["y_train"])),
            "n_val": int(len(d["y_val"])), "n_test": int(len(d["y_test"])),
            "models": sorted(models, key=lambda m: m["file"]),
        }
        man["tasks"] = dict(sorted(man["tasks"].items()))
        tmp = MANIFEST.with_suffix(".json.partial")
        MANIFEST.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(man, indent=1) + "\n")
        tmp.replace(MANIFEST)
        write_readme_table(man)
    return man


CELL_LABEL = {"durnn": "DuRNN", "indrnn": "IndRNN", "grucell": "GRU cell in plain ops", "lstm": "LSTM (nn.LSTM)",
              "gru": "GRU (nn.GRU)"}
CELL_ORDER = ("durnn", "lstm", "gru", "indrnn", "grucell")
FORM_ORDER = ("loop", "unrolled", "native")


def _hidden(m: dict) -> str:
    h = m["hidden"]
    return f"{h['short_term']}+{h['long_term']}" if isinstance(h, dict) else str(h)


def _sorted(models: list[dict]) -> list[dict]:
    return sorted(models, key=lambda m: (CELL_ORDER.index(m["cell"]), m["layers"], FORM_ORDER.index(m["export"])))


def readme_tables(man: dict) -> str:
    """The comparison table (one row per trained model) and the per-file table."""
    out = ["### DuRNN vs LSTM vs GRU (test accuracy in onnxruntime)", "",
           "| task | steps × features | model | layers | hidden | params | test accuracy |",
           "|---|---|---|---:|---|---:|---:|"]
    for task in ("digits_pixels", "digits", "brown_genre"):
        if task not in man["tasks"]:
            continue
        t = man["tasks"][task]
        shape = " × ".join(str(v) for v in t["x_shape"]) if t["input"] == "x" else f"{t['x_shape'][0]} tokens"
        seen = set()
        for m in _sorted(t["models"]):
            key = (m["cell"], m["layers"])
            if key in seen:  # the loop and unrolled exports of one model score alike (tested)
                continue
            seen.add(key)
            out.append(f"| {task} | {shape} | {CELL_LABEL[m['cell']]} | {m['layers']} | {_hidden(m)} | "
                       f"{m['params']:,} | {100 * m['test_accuracy']:.2f} % |")
    out += ["", "### Every file", "",
            "| file | export | time axis | ONNX nodes (top level) | check max diff | loop vs unrolled | bytes "
            "| test accuracy |",
            "|---|---|---|---|---:|---:|---:|---:|"]
    for task in ("digits_pixels", "digits", "brown_genre"):
        if task not in man["tasks"]:
            continue
        for m in _sorted(man["tasks"][task]["models"]):
            c = m["op_counts"]
            if m["export"] == "loop":
                ops = f"{c.get('Loop', 0)} Loop, {sum(c.values())} nodes"
            elif m["export"] == "unrolled":
                ops = f"{sum(c.values()):,} nodes ({c.get('Gemm', 0)} Gemm)"
            else:
                ops = ", ".join(f"{c[o]} {o}" for o in ("LSTM", "GRU") if o in c) + f", {sum(c.values())} nodes"
            axis = "dynamic" if m["seq_len"] == "dynamic" else f"frozen at {m['seq_len']}"
            lu = m.get("loop_vs_unrolled_max_diff")
            lu_cell = "—" if lu is None else f"{lu:.1e}"
            out.append(f"| `{m['file'][len('cells/'):]}` | {m['export']} | {axis} | {ops} | "
                       f"{m['check_max_diff']:.1e} | {lu_cell} | {m['file_bytes']:,} | "
                       f"{100 * m['test_accuracy']:.2f} % |")
    return "\n".join(out)


def write_readme_table(man: dict) -> None:
    readme = CELLS_DIR / "README.md"
    if not readme.exists():
        return
    text = readme.read_text()
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    a, b = text.index(begin) + len(begin), text.index(end)
    readme.write_text(text[:a] + "\n\n" + readme_tables(man) + "\n\n" + text[b:])


def refinish() -> None:
    import onnx

    with manifest_lock():
        man = json.loads(MANIFEST.read_text())
        for task in man["tasks"].values():
            for m in task["models"]:
                path = FIXTURES / m["file"]
                proto = onnx.load(str(path))
                meta = {p.key: p.value for p in proto.metadata_props}
                data = finish_proto(proto, meta).SerializeToString()
                path.write_bytes(data)
                m["file_bytes"] = len(data)
        MANIFEST.write_text(json.dumps(man, indent=1) + "\n")
        write_readme_table(man)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=list(TASKS), help="build only this task (repeatable)")
    ap.add_argument("--models", action="append", help=argparse.SUPPRESS)  # dev: subset by stem (durnn1, ...)
    ap.add_argument("--epochs", type=int, help=argparse.SUPPRESS)  # dev: override the epochs
    ap.add_argument("--data-only", action="store_true", help="only write the digits data.npz files")
    ap.add_argument("--refinish", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--table-only", action="store_true", help="only regenerate the README tables from the manifest")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.refinish:  # dev: apply finish_proto again to the manifest's files (same as a rebuild's)
        refinish()
        return 0
    if args.table_only:
        write_readme_table(json.loads(MANIFEST.read_text()))
        return 0
    tasks = args.only or list(TASKS)
    if {"digits", "digits_pixels"} & set(tasks) or args.data_only:
        build_digits()
    if args.data_only:
        return 0
    if args.epochs:
        for k, v in TRAIN.items():
            TRAIN[k] = (args.epochs,) + v[1:]
    t0 = time.time()
    for task in tasks:
        result = build_task(task, args.models)
        update_manifest(task, result["models"], keep_others=bool(args.models))
        log(f"{task}: done ({time.time() - t0:.0f}s so far)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BuildError as exc:
        print(f"build_cell_fixtures: {exc}", file=sys.stderr)
        sys.exit(1)
