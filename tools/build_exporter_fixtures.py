#!/usr/bin/env python
"""Rebuild the fixtures from other ONNX exporters: ``fixtures/exporters/``.

    python tools/build_exporter_fixtures.py --keras-python /work/venvs/tf/bin/python
    python tools/build_exporter_fixtures.py --only torch_dynamo          # torch part only
    python tools/build_exporter_fixtures.py --only tf2onnx_keras3 --keras-python VENV/bin/python
    python tools/build_exporter_fixtures.py --describe-only             # manifest + README only
    python tools/build_exporter_fixtures.py --describe-only --only torch_dynamo   # ... of one source

Small classifiers are trained on the EXISTING committed splits (``fixtures/<task>/data.npz``;
nothing is copied) and exported by the exporters people use today, so that onnxmod's front-ends
can be tested on what those exporters really write:

* ``torch_dynamo``: ``torch.onnx.export(..., dynamo=True)`` (torch's default exporter) from
  ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``; runs in this python (needs ``torch==2.13.0``, the
  ``[torch]`` extra).
* ``tf2onnx_keras3``: Keras 3 models converted by ``tf2onnx``; runs in ``--keras-python``
  (a venv with ``tensorflow-cpu==2.21.0 tf2onnx==1.17.0``, the ``[keras]`` extra).
* ``tf2onnx_tf_keras``: tf_keras 2 models (``hard_sigmoid`` gates, the seed paper's models),
  also through tf2onnx; runs in ``--keras-python`` (needs ``tf_keras==2.21.0`` there too).

Reproducibility: the torch part rebuilds byte-identical files.  The Keras parts rebuild the same
weights, op counts and accuracies, but tf2onnx's node order and some generated names vary from
run to run (measured: two rebuilds of the same Keras model differ in bytes only there).

Each part trains (seeded), exports, checks onnxruntime against its framework at a second batch
size and, where the sequence axis is dynamic, two more sequence lengths (atol 1e-4; the build
stops on a mismatch unless the model is one the exporter is known to freeze to the example's
length, which is then recorded), and writes a per-part record to ``.cache/exporters/``.  This
driver then measures everything else with onnx + onnxruntime only (test accuracy on the task's
``x_test``/``y_test``, op types, recurrence form, readout chain, file size) and writes
``fixtures/exporters/manifest.json`` and the generated table in ``fixtures/exporters/README.md``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
OUT = FIXTURES / "exporters"
CACHE = REPO / ".cache" / "exporters"
SEED = 20261130
SOURCES = ("torch_dynamo", "tf2onnx_keras3", "tf2onnx_tf_keras")
ATOL = 1e-4
EMB, HIDDEN = 12, 24  # small: the 5,000-word embedding dominates the file size

TASK_SHAPE = {"brown_genre": "M:1", "brown_pos": "M:N", "math_topics": "1:1"}


def log(*a):
    print(*a, flush=True)


def load_task(task: str) -> dict:
    z = np.load(FIXTURES / task / "data.npz")
    return {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test", "class_names", "vocab")}


def metadata(task: str, d: dict) -> dict[str, str]:
    """The same ``metadata_props`` as the torch-legacy fixtures (added after export; the graph is
    the exporter's, untouched)."""
    import hashlib

    vocab = [str(v) for v in d["vocab"]]
    return {
        "onnxmod.task": task,
        "onnxmod.class_names": json.dumps([str(c) for c in d["class_names"]]),
        "onnxmod.vocab_sha256": hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest(),
        "onnxmod.shape": TASK_SHAPE[task],
    }


def finalize_onnx(path: Path, task: str, d: dict) -> None:
    """Load (pulling in external data if the exporter wrote any), add metadata, save embedded."""
    import onnx

    m = onnx.load(str(path), load_external_data=True)
    del m.metadata_props[:]
    for k, v in metadata(task, d).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    for f in path.parent.glob(path.name + "*"):
        if f != path:
            f.unlink()  # a stale external-data file
    onnx.save_model(m, str(path), save_as_external_data=False)
    for f in path.parent.glob(path.name + ".*"):
        f.unlink()


def check_points(shape: str, T: int) -> list[tuple[int, int]]:
    pts = [(5, T), (17, T)]
    if shape in ("M:1", "M:N"):
        pts += [(3, T - 9), (11, T + 6)]
    return pts


def check_rows(x: np.ndarray, shape: str, b: int, t: int, rng) -> np.ndarray:
    """``b`` test rows at length ``t``: M:1 data is pre-padded (cut/extend on the left), M:N
    post-padded (cut/extend on the right); the extension repeats real tokens of the row."""
    T = x.shape[1]
    rows = x[rng.choice(len(x), size=b, replace=False)]
    if t <= T:
        xb = rows[:, T - t:] if shape == "M:1" else rows[:, :t]
    else:
        extra = rows[:, -(t - T):] if shape == "M:1" else rows[:, : t - T]
        xb = np.concatenate([extra, rows], 1) if shape == "M:1" else np.concatenate([rows, extra], 1)
    return np.ascontiguousarray(xb, dtype=np.int64)


def verify(path: Path, shape: str, x_test: np.ndarray, framework_fn, *, may_freeze: bool) -> dict:
    """onnxruntime vs the framework at the check points; returns the check record."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    T = x_test.shape[1]
    diffs, frozen = [], None
    for b, t in check_points(shape, T):
        xb = check_rows(x_test, shape, b, t, rng)
        ref = np.asarray(framework_fn(xb), dtype=np.float32)
        try:
            got = sess.run(None, {name: xb})[0]
            err = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
            why = f"max abs diff {err:.3g}" if got.shape == ref.shape else f"shape {got.shape} vs {ref.shape}"
        except Exception as e:  # noqa: BLE001 - onnxruntime's own error is the record
            err, why = float("inf"), f"onnxruntime error: {str(e).splitlines()[0][:200]}"
        if err <= ATOL:
            diffs.append({"batch": b, "seq": t, "max_abs_diff": err})
            continue
        if may_freeze and t != T:
            frozen = frozen or {"length": T, "fails_at": []}
            frozen["fails_at"].append({"batch": b, "seq": t, "what": why})
            continue
        raise SystemExit(f"{path}: onnxruntime vs framework at batch {b}, seq {t}: {why}")
    return {"atol": ATOL, "points": diffs, "max_abs_diff": max(p["max_abs_diff"] for p in diffs),
            "frozen_length": frozen}


def split_train_val(n: int, seed: int, frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Seeded 10 % of the training split held out to pick the best epoch (test never seen)."""
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(n * frac))
    return np.sort(perm[k:]), np.sort(perm[:k])


def masked_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    pred = logits.argmax(-1)
    mask = y != -1
    return float((pred[mask] == y[mask]).mean())


# ============================================================================================
# part 1: torch default exporter (dynamo=True)
# ============================================================================================
TORCH_MODELS = [
    # name, task, cell, layers, bidirectional, epochs
    ("brown_genre_lstm1", "brown_genre", "lstm", 1, False, 6),
    ("brown_genre_gru1", "brown_genre", "gru", 1, False, 6),
    ("brown_genre_rnn_tanh1", "brown_genre", "rnn_tanh", 1, False, 6),
    ("brown_genre_lstm2", "brown_genre", "lstm", 2, False, 6),
    ("brown_genre_lstm1_bi", "brown_genre", "lstm", 1, True, 6),
    ("brown_pos_lstm1", "brown_pos", "lstm", 1, False, 5),
]


def part_torch(only: list[str] | None, emit) -> list[dict]:
    import warnings

    import torch
    from torch.export import Dim

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fixturelib as fl

    torch.set_num_threads(1)
    import onnxscript

    out_dir = OUT / "torch_dynamo"
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for k, (name, task, cell, layers, bi, epochs) in enumerate(TORCH_MODELS):
        if only and name not in only:
            continue
        d = load_task(task)
        shape = TASK_SHAPE[task]
        log(f"[torch_dynamo] {name}: training ({task}, {cell}, {layers} layer(s){', bi' if bi else ''})")
        torch.manual_seed(SEED + k)  # the initial weights too (a new process' seed is random)
        model = fl.RecurrentClassifier(shape=shape, vocab_size=len(d["vocab"]), emb_dim=EMB, cell=cell,
                                       layers=layers, hidden=HIDDEN, n_classes=len(d["class_names"]),
                                       bidirectional=bi, dropout=0.2)
        cfg = fl.TrainConfig(epochs=epochs, batch_size=128 if shape == "M:1" else 64,
                             lr=1e-3 if cell.startswith("rnn") else 3e-3, bucket=shape == "M:N")
        rep = fl.train_model(model, d["x_train"], d["y_train"], cfg, seed=SEED + k, log=log)
        model.eval()
        path = out_dir / f"{name}.onnx"
        example = torch.from_numpy(d["x_test"][:2])
        dyn = {"tokens": {0: Dim.AUTO, 1: Dim.AUTO}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["tokens"],
                              output_names=["logits"], dynamic_shapes=dyn, external_data=False,
                              verbose=False)
        finalize_onnx(path, task, d)

        @torch.no_grad()
        def fw(xb, model=model):
            return model(torch.from_numpy(xb)).numpy()

        check = verify(path, shape, d["x_test"], fw, may_freeze=cell.startswith("rnn"))
        log(f"    check: max abs diff {check['max_abs_diff']:.2e}"
            + (f"; length FROZEN to {check['frozen_length']['length']}" if check["frozen_length"] else ""))
        records.append({
            "name": name, "source": "torch_dynamo", "file": f"torch_dynamo/{name}.onnx", "task": task,
            "shape": shape, "cell": cell, "layers": layers, "bidirectional": bi, "hidden_size": HIDDEN,
            "embedding_dim": EMB, "params": fl.count_params(model),
            "framework": {"torch": torch.__version__.split("+")[0], "onnxscript": onnxscript.__version__},
            "export_call": "torch.onnx.export(model, (tokens,), path, dynamo=True, input_names=['tokens'], "
                           "output_names=['logits'], dynamic_shapes={'tokens': {0: Dim.AUTO, 1: Dim.AUTO}}, "
                           "external_data=False)",
            "keras_layers": None,
            "training": {"epochs": epochs, "best_epoch": rep["best_epoch"], "val_acc": round(rep["val_acc"], 4),
                         "seed": SEED + k},
            "check": check,
        })
        emit(records[-1])
    return records


# ============================================================================================
# part 2 and 3: tf2onnx from Keras 3 / tf_keras 2
# ============================================================================================
# name, task, recipe, epochs
KERAS3_MODELS = [
    ("brown_genre_lstm", "brown_genre", "lstm", 5),
    ("brown_genre_gru", "brown_genre", "gru", 5),
    ("brown_genre_simplernn", "brown_genre", "simplernn", 5),
    ("brown_genre_bilstm", "brown_genre", "bilstm", 5),
    ("brown_genre_bigru", "brown_genre", "bigru", 5),
    ("brown_genre_lstm_mask", "brown_genre", "lstm_mask", 5),
    ("brown_genre_gru_mask", "brown_genre", "gru_mask", 5),
    ("brown_pos_lstm_dense", "brown_pos", "lstm_dense3d", 3),
    ("brown_pos_lstm_timedistributed", "brown_pos", "lstm_timedistributed", 3),
]
TF_KERAS_MODELS = [
    ("brown_genre_lstm_hard_sigmoid", "brown_genre", "lstm_hard", 5),
    ("brown_genre_gru_hard_sigmoid", "brown_genre", "gru_hard", 5),
]


def keras_build(K, recipe: str, d: dict, shape: str):
    """The Keras model for ``recipe`` (``K`` = ``keras`` or ``tf_keras``); logits out."""
    L = K.layers
    V, C = len(d["vocab"]), len(d["class_names"])
    T = d["x_train"].shape[1]
    fixed_t = recipe == "lstm_timedistributed"  # TimeDistributed over a known length (as the paper)
    inp = K.Input(shape=(T if fixed_t else None,), dtype="int64", name="tokens")
    mask = recipe.endswith("_mask")
    x = L.Embedding(V, EMB, mask_zero=mask, name="embedding")(inp)
    seq = shape == "M:N"
    if recipe in ("lstm", "lstm_mask", "lstm_dense3d", "lstm_timedistributed"):
        x = L.LSTM(HIDDEN, return_sequences=seq, name="lstm")(x)
    elif recipe in ("gru", "gru_mask"):
        x = L.GRU(HIDDEN, return_sequences=seq, name="gru")(x)
    elif recipe == "simplernn":
        x = L.SimpleRNN(HIDDEN, return_sequences=seq, name="simple_rnn")(x)
    elif recipe == "bilstm":
        x = L.Bidirectional(L.LSTM(HIDDEN, return_sequences=seq), name="bidirectional")(x)
    elif recipe == "bigru":
        x = L.Bidirectional(L.GRU(HIDDEN, return_sequences=seq), name="bidirectional")(x)
    elif recipe == "lstm_hard":
        x = L.LSTM(HIDDEN, recurrent_activation="hard_sigmoid", return_sequences=seq, name="lstm")(x)
    elif recipe == "gru_hard":
        x = L.GRU(HIDDEN, recurrent_activation="hard_sigmoid", return_sequences=seq, name="gru")(x)
    else:
        raise ValueError(recipe)
    if recipe == "lstm_timedistributed":
        out = L.TimeDistributed(L.Dense(C), name="logits")(x)
    else:
        out = L.Dense(C, name="logits")(x)
    return K.Model(inp, out, name=recipe)


def keras_layers_summary(model) -> list[str]:
    return [f"{l.__class__.__name__}" + (f"({l.layer.__class__.__name__})" if hasattr(l, "layer") else "")
            for l in model.layers]


def part_keras(source: str, only: list[str] | None, emit) -> list[dict]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import tensorflow as tf

    if source == "tf2onnx_tf_keras":
        import tf_keras as K
    else:
        import keras as K
    import tf2onnx

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    models = KERAS3_MODELS if source == "tf2onnx_keras3" else TF_KERAS_MODELS
    out_dir = OUT / source
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for k, (name, task, recipe, epochs) in enumerate(models):
        if only and name not in only:
            continue
        d = load_task(task)
        shape = TASK_SHAPE[task]
        seed = SEED + 100 + k
        K.utils.set_random_seed(seed)
        log(f"[{source}] {name}: training ({task}, {recipe})")
        model = keras_build(K, recipe, d, shape)
        x, y = d["x_train"], d["y_train"]
        tr, va = split_train_val(len(x), seed)
        yt = np.where(y == -1, 0, y)
        wt = (y != -1).astype(np.float32)
        model.compile(optimizer=K.optimizers.Adam(learning_rate=1e-3 if "simplernn" in recipe else 3e-3,
                                                  clipnorm=1.0),
                      loss=K.losses.SparseCategoricalCrossentropy(from_logits=True))
        best = (-1.0, 0, None)
        t0 = time.time()
        for ep in range(epochs):
            model.fit(x[tr], yt[tr], sample_weight=wt[tr], batch_size=128 if shape == "M:1" else 64,
                      epochs=1, shuffle=True, verbose=0)
            va_acc = masked_accuracy(model.predict(x[va], batch_size=512, verbose=0), y[va])
            log(f"    epoch {ep + 1}: val acc {va_acc:.4f} ({time.time() - t0:.0f}s)")
            if va_acc > best[0]:
                best = (va_acc, ep + 1, [w.copy() for w in model.get_weights()])
        model.set_weights(best[2])
        path = out_dir / f"{name}.onnx"
        fixed_t = recipe == "lstm_timedistributed"
        spec = (tf.TensorSpec((None, x.shape[1] if fixed_t else None), tf.int64, name="tokens"),)
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=None, output_path=str(path))
        finalize_onnx(path, task, d)

        def fw(xb, model=model):
            return model(xb, training=False).numpy()

        check = verify(path, shape if not fixed_t else "fixed", d["x_test"], fw, may_freeze=False)
        log(f"    check: max abs diff {check['max_abs_diff']:.2e}")
        lstm_like = "lstm" in recipe
        cell = "lstm" if lstm_like else ("gru" if "gru" in recipe else "simplernn")
        records.append({
            "name": name, "source": source, "file": f"{source}/{name}.onnx", "task": task, "shape": shape,
            "cell": cell, "layers": 1, "bidirectional": recipe.startswith("bi"), "hidden_size": HIDDEN,
            "embedding_dim": EMB, "params": int(model.count_params()),
            "framework": {"tensorflow": tf.__version__, ("tf_keras" if source == "tf2onnx_tf_keras" else "keras"):
                          K.__version__, "tf2onnx": tf2onnx.__version__},
            "export_call": "tf2onnx.convert.from_keras(model, input_signature=(tf.TensorSpec("
                           f"(None, {x.shape[1] if fixed_t else None}), tf.int64, name='tokens'),), "
                           "output_path=path)",
            "keras_layers": keras_layers_summary(model),
            "recipe": recipe,
            "fixed_length": x.shape[1] if fixed_t else None,
            "training": {"epochs": epochs, "best_epoch": best[1], "val_acc": round(best[0], 4), "seed": seed},
            "check": check,
        })
        emit(records[-1])
    return records


# ============================================================================================
# driver: describe every model with onnx + onnxruntime only
# ============================================================================================
RECURRENT = {"LSTM", "GRU", "RNN"}
CONTROL = {"Loop", "Scan", "If"}
NONLIN = {"Tanh", "Sigmoid", "Relu", "HardSigmoid"}


def describe_graph(proto) -> dict:
    """Recurrence form(s) and readout chain of a model, measured from its graph."""
    import onnx

    g = proto.graph
    ops = [n.op_type for n in g.node]
    counts = collections.Counter(ops)
    rec_nodes = [n for n in g.node if n.op_type in RECURRENT]
    loops = [n for n in g.node if n.op_type in ("Loop", "Scan")]
    forms = []
    for n in rec_nodes:
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        acts = [s.decode() for s in a.get("activations", [])]
        extra = [f"direction={a.get('direction', b'forward').decode()}"]
        if "linear_before_reset" in a:
            extra.append(f"linear_before_reset={a['linear_before_reset']}")
        if acts:
            extra.append("activations=" + "/".join(acts))
        for k in ("activation_alpha", "activation_beta"):
            if k in a:
                extra.append(f"{k}=" + "/".join(f"{v:.6g}" for v in a[k]))
        for k in ("clip", "input_forget"):
            if k in a:
                extra.append(f"{k}={a[k]}")
        if len(n.input) > 4 and n.input[4]:
            extra.append("sequence_lens")
        if a.get("layout"):
            extra.append(f"layout={a['layout']}")
        forms.append(f"native {n.op_type} ({', '.join(extra)})")
    body_ops = {}
    for n in loops:
        for at in n.attribute:
            if at.type == onnx.AttributeProto.GRAPH:
                body_ops[n.name] = sorted({o.op_type for o in at.g.node})
                forms.append(f"{n.op_type} with body: {_collapse([o.op_type for o in at.g.node])}")
    unrolled = 0
    if not rec_nodes and not loops:
        unrolled = max([counts[o] for o in NONLIN] + [0])
        if unrolled > 1:
            nl = max(NONLIN, key=lambda o: counts[o])
            split = "SplitToSequence/SequenceAt" if counts["SequenceAt"] else "Split"
            forms.append(f"unrolled: {unrolled} steps of MatMul(h, W_hh^T) + Add + {nl} "
                         f"(inputs projected once: {split})")
    # readout: the nodes after the last recurrence up to the output, in graph order
    last = max([i for i, n in enumerate(g.node) if n.op_type in RECURRENT | {"Loop", "Scan"}], default=None)
    if last is None:  # unrolled: after the last nonlinearity
        last = max([i for i, n in enumerate(g.node) if n.op_type in NONLIN], default=-1)
    produced = {}
    for i, n in enumerate(g.node):
        for o in n.output:
            produced[o] = i
    # walk back from the output through nodes after `last`
    keep, stack = set(), [o.name for o in g.output]
    while stack:
        t = stack.pop()
        i = produced.get(t)
        if i is None or i <= last or i in keep:
            continue
        keep.add(i)
        stack.extend(g.node[i].input)
    readout = _collapse([g.node[i].op_type for i in sorted(keep)])
    return {"ops": sorted(counts), "op_counts": dict(sorted(counts.items())),
            "native_recurrent_ops": [n.op_type for n in rec_nodes],
            "has_loop": bool(counts["Loop"]), "has_scan": bool(counts["Scan"]), "unrolled_steps": unrolled,
            "loop_body_ops": body_ops, "recurrence": forms, "readout": readout}


def _collapse(ops: list[str]) -> str:
    """``A → B×3 → (C → D)×40``: runs of one op and of a repeated block (e.g. a head unrolled
    per step) written once with their count."""
    parts, i = [], 0
    while i < len(ops):
        best = (1, 1)  # (period, repeats)
        for p in range(1, (len(ops) - i) // 2 + 1):
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


def ort_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, str, str]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    iname, oname = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    logits = np.concatenate([sess.run([oname], {iname: x[i:i + 500]})[0] for i in range(0, len(x), 500)])
    return masked_accuracy(logits, y), iname, oname


def describe(records: list[dict]) -> list[dict]:
    import onnx

    out = []
    for r in records:
        path = OUT / r["file"]
        proto = onnx.load(str(path))
        d = load_task(r["task"])
        acc, iname, oname = ort_accuracy(path, d["x_test"], d["y_test"])
        ishape = [dim.dim_param or dim.dim_value for dim in proto.graph.input[0].type.tensor_type.shape.dim]
        e = dict(r)
        e.update({
            "test_accuracy": acc,
            "input": {"name": iname,
                      "dtype": onnx.TensorProto.DataType.Name(proto.graph.input[0].type.tensor_type.elem_type).lower(),
                      "shape": ishape},
            "output": oname,
            "output_shape": [dim.dim_param or dim.dim_value
                             for dim in proto.graph.output[0].type.tensor_type.shape.dim],
            "opset": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "file_bytes": path.stat().st_size,
            "sha256": __import__("hashlib").sha256(path.read_bytes()).hexdigest(),
        })
        e.update(describe_graph(proto))
        out.append(e)
    return out


def write_manifest(entries: list[dict]) -> None:
    order = {s: i for i, s in enumerate(SOURCES)}
    entries = sorted(entries, key=lambda e: (order[e["source"]], e["task"], e["name"]))
    man = {"about": "fixtures from other ONNX exporters; see README.md. Data: the task's fixtures/<task>/data.npz "
                    "(x_test/y_test; accuracy over labels != -1).",
           "builder": "tools/build_exporter_fixtures.py", "models": entries}
    (OUT / "manifest.json").write_text(json.dumps(man, indent=1, ensure_ascii=False) + "\n")
    rows = ["| source | model | task | cell | layers | bi | input → output | test acc | params | bytes | recurrence "
            "| readout |",
            "|---|---|---|---|---:|---|---|---:|---:|---:|---|---|"]
    for e in entries:
        rec = "; ".join(e["recurrence"]) or "?"
        if e["check"].get("frozen_length"):
            rec += f" — **length frozen to {e['check']['frozen_length']['length']}**"
        if e.get("fixed_length"):
            rec += f" — input length fixed to {e['fixed_length']}"
        rows.append(f"| {e['source']} | `{e['name']}` | {e['task']} ({e['shape']}) | {e['cell']} | {e['layers']} | "
                    f"{'yes' if e['bidirectional'] else ''} | `{e['input']['name']}` {e['input']['dtype']} "
                    f"{e['input']['shape']} → `{e['output']}` {e['output_shape']} | {100 * e['test_accuracy']:.2f} % | "
                    f"{e['params']:,} | "
                    f"{e['file_bytes']:,} | {rec} | {e['readout']} |")
    readme = OUT / "README.md"
    text = readme.read_text() if readme.exists() else "<!-- table:begin -->\n<!-- table:end -->\n"
    a, b = text.index("<!-- table:begin -->"), text.index("<!-- table:end -->")
    total = sum(e["file_bytes"] for e in entries)
    table = "\n".join(rows) + f"\n\n{len(entries)} models, {total:,} bytes in all.\n"
    readme.write_text(text[:a] + "<!-- table:begin -->\n\n" + table + "\n" + text[b:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=SOURCES, help="rebuild only this source (repeatable)")
    p.add_argument("--model", action="append", help="rebuild only this model name (repeatable)")
    p.add_argument("--keras-python", default=os.environ.get("ONNXMOD_KERAS_PYTHON"),
                   help="python of a venv with tensorflow-cpu==2.21.0, tf2onnx==1.17.0, tf_keras==2.21.0 "
                        "(default: $ONNXMOD_KERAS_PYTHON)")
    p.add_argument("--describe-only", action="store_true", help="only rewrite manifest.json and the README table")
    p.add_argument("--part", choices=SOURCES, help=argparse.SUPPRESS)  # internal: run one part here
    a = p.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    if a.part:
        rec_file = CACHE / f"{a.part}.json"
        valid = [m[0] for m in (TORCH_MODELS if a.part == "torch_dynamo" else
                                KERAS3_MODELS if a.part == "tf2onnx_keras3" else TF_KERAS_MODELS)]

        def emit(rec):  # one model done: record it now (a later model's failure keeps it)
            old = json.loads(rec_file.read_text()) if rec_file.exists() else []
            new = {r["name"]: r for r in old if r["name"] in valid}
            new[rec["name"]] = rec
            rec_file.write_text(json.dumps([new[k] for k in valid if k in new], indent=1))

        if a.part == "torch_dynamo":
            part_torch(a.model, emit)
        else:
            part_keras(a.part, a.model, emit)
        return 0
    if not a.describe_only:
        for src in a.only or SOURCES:
            py = sys.executable if src == "torch_dynamo" else a.keras_python
            if not py:
                raise SystemExit(f"{src}: needs --keras-python (a venv with tensorflow-cpu, tf2onnx, tf_keras)")
            cmd = [py, str(Path(__file__).resolve()), "--part", src] + sum((["--model", m] for m in a.model or []), [])
            log("$ " + " ".join(cmd))
            subprocess.run(cmd, check=True)
    # the record of each part comes from the cache (this run's or an earlier one's) or, failing
    # that, from the committed manifest (so one source can be rebuilt without the others)
    committed = {}
    if (OUT / "manifest.json").exists():
        for e in json.loads((OUT / "manifest.json").read_text())["models"]:
            committed[e["name"], e["source"]] = e
    recs = {}
    for src in SOURCES:
        f = CACHE / f"{src}.json"
        if f.exists():
            for r in json.loads(f.read_text()):
                recs[r["name"], src] = r
    for k, e in committed.items():
        if k not in recs:
            recs[k] = {x: e[x] for x in e if x in _RECORD_KEYS}
    if a.describe_only and a.only:  # describe just these sources (the others leave the manifest)
        recs = {k: r for k, r in recs.items() if r["source"] in a.only}
    entries = describe([r for r in recs.values() if (OUT / r["file"]).exists()])
    write_manifest(entries)
    log(f"wrote {OUT / 'manifest.json'} ({len(entries)} models)")
    return 0


_RECORD_KEYS = {"name", "source", "file", "task", "shape", "cell", "layers", "bidirectional", "hidden_size",
                "embedding_dim", "params", "framework", "export_call", "keras_layers", "recipe", "fixed_length",
                "training", "check"}

if __name__ == "__main__":
    sys.exit(main())
