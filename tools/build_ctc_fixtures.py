#!/usr/bin/env python
"""Rebuild onnxmod's CTC fixture (issue 21): a small CRNN that reads strings of 4-5 handwritten
digits, trained with CTC loss, its head a plain ``MatMul``+``Add`` per step, output batch-first.

    python tools/build_ctc_fixtures.py

Needs torch==2.13.0 (CPU), onnx, onnxruntime, numpy and scikit-learn (only for ``load_digits``,
its bundled copy of the UCI 8x8 digits, BSD-3).

Data. scikit-learn's 1,797 digit images (8 x 8, values 0..16, scaled to [0, 1]) are split once,
seeded and stratified, into 1,197 / 200 / 400 train / val / test images (the split of
``fixtures/digits``). Each string of 4 or 5 random digits is drawn from one split's images only
(so a test string never shows a training image) and placed side by side into an image
``[1, 8, 40]`` (a 4-digit string leaves its last 8 columns blank). 2,000 / 300 / 500 strings are
committed; training draws 2,000 fresh strings from the training images each epoch (the best
epoch on the validation strings is kept).

Model. ``Conv(1->16, 3x3) ReLU MaxPool(2x1) Conv(16->32, 3x3) ReLU MaxPool(4x2)`` gives
``[N, 32, 1, 20]``; squeezed and transposed, one bidirectional LSTM (48 units per direction)
reads its 20 columns, and a ``Linear(96 -> 11)`` scores each step: class 0 is the CTC blank,
class 1 + d the digit d. Output ``logits`` ``[N, T, 11]`` (batch-first, T = W / 2), exported by
torch's legacy exporter (``dynamo=False``, opset 20; the image width is a dynamic axis).

Writes ``fixtures/ctc/crnn_batch_first.onnx`` and ``fixtures/ctc/data.npz``: ``x_train``,
``x_val``, ``x_test`` (float32 ``[N, 1, 8, 40]``), ``text_train``, ``text_val``, ``text_test``
(the true strings), ``charset`` (``["", "0", ..., "9"]``: the character of each class; the
blank's is empty) and ``class_names`` (``["blank", "0", ..., "9"]``). No ``y_*``: a CTC model has
no per-step labels, so ``onnxmod decompose ... --labels model --ctc-blank 0`` takes them from the
model. The export is checked against torch in onnxruntime (atol 1e-4) at two batch sizes and
two widths; everything is seeded and torch runs on one thread.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixturelib as fl  # noqa: E402
from build_cell_fixtures import SEED, SPLIT, stratified_exact  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "fixtures" / "ctc"
STRINGS = {"train": 2000, "val": 300, "test": 500}
LENGTHS = (4, 5)
WIDTH = 8 * max(LENGTHS)
CLASSES = 11  # blank + 10 digits
BLANK = 0
ATOL = 1e-4
MAX_FILE_BYTES = 500_000


def log(*a):
    print(*a, flush=True)


def digit_images() -> tuple[np.ndarray, dict[str, dict[int, np.ndarray]]]:
    """The scaled images and, per split, each digit's image indices."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    digit = d.target.astype(np.int64)
    parts = dict(zip(("train", "val", "test"), stratified_exact(digit, SPLIT, SEED)))
    return images, {s: {k: p[digit[p] == k] for k in range(10)} for s, p in parts.items()}


def strings(images, pool, n: int, rng) -> tuple[np.ndarray, list[str]]:
    """``n`` strings of 4-5 random digits, each digit a random image of the pool."""
    x = np.zeros((n, 1, 8, WIDTH), dtype=np.float32)
    texts = []
    for i in range(n):
        ds = rng.integers(0, 10, size=int(rng.choice(LENGTHS)))
        for j, k in enumerate(ds):
            x[i, 0, :, 8 * j:8 * j + 8] = images[rng.choice(pool[int(k)])]
        texts.append("".join(str(int(k)) for k in ds))
    return x, texts


def build_data() -> dict[str, np.ndarray]:
    """Digit strings drawn per split from the split's own images (see the module docstring)."""
    images, pools = digit_images()
    rng = np.random.default_rng(SEED + 21)
    out = {}
    for split, n in STRINGS.items():
        x, texts = strings(images, pools[split], n, rng)
        out[f"x_{split}"] = x
        out[f"text_{split}"] = np.array(texts, dtype=np.str_)
    out["charset"] = np.array([""] + [str(k) for k in range(10)], dtype=np.str_)
    out["class_names"] = np.array(["blank"] + [str(k) for k in range(10)], dtype=np.str_)
    return out


class CRNN(nn.Module):
    def __init__(self, hidden: int = 48):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 1)),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d((4, 2)))
        self.rnn = nn.LSTM(32, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, CLASSES)

    def forward(self, x):
        f = self.cnn(x).squeeze(2).transpose(1, 2)  # [N, W/2, 32]
        y, _ = self.rnn(f)
        return self.fc(y)  # [N, T, C]


def targets(texts) -> tuple[torch.Tensor, torch.Tensor]:
    flat = [1 + int(ch) for t in texts for ch in t]
    return torch.tensor(flat, dtype=torch.long), torch.tensor([len(t) for t in texts], dtype=torch.long)


def greedy(logits: np.ndarray) -> list[str]:
    out = []
    for row in logits.argmax(-1):
        s, prev = [], BLANK
        for k in row:
            if k != prev and k != BLANK:
                s.append(str(int(k) - 1))
            prev = k
        out.append("".join(s))
    return out


def string_accuracy(model, x, texts) -> float:
    with torch.no_grad():
        got = greedy(model(torch.from_numpy(x)).numpy())
    return float(np.mean([a == b for a, b in zip(got, texts)]))


def train(data: dict, epochs: int = 60) -> CRNN:
    torch.manual_seed(SEED)
    model = CRNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    images, pools = digit_images()
    rng = np.random.default_rng(SEED)
    best, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        if epoch == 0:  # the committed training strings first, then fresh ones from the same training images
            xs, texts = data["x_train"], list(data["text_train"])
        else:
            xs, texts = strings(images, pools["train"], STRINGS["train"], rng)
        x = torch.from_numpy(xs)
        order = rng.permutation(len(texts))
        for s in range(0, len(order), 64):
            idx = order[s:s + 64]
            logp = model(x[idx]).log_softmax(-1).transpose(0, 1)  # [T, N, C]
            tgt, lens = targets([texts[i] for i in idx])
            loss = ctc(logp, tgt, torch.full((len(idx),), logp.shape[0], dtype=torch.long), lens)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        acc = string_accuracy(model, data["x_val"], list(data["text_val"]))
        log(f"  epoch {epoch + 1}: loss {loss.item():.3f}, val string accuracy {acc:.3f}")
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    return model


def export(model: CRNN, x: np.ndarray, path: Path) -> dict:
    import onnx
    import onnxruntime as ort
    from build_cell_fixtures import finish_proto

    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x[:2]),), buf, dynamo=False, opset_version=fl.ONNX_OPSET,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch", 3: "width"}, "logits": {0: "batch", 1: "steps"}})
    meta = {"onnxmod.task": "ctc_digits", "onnxmod.ctc_blank": str(BLANK),
            "onnxmod.class_names": json.dumps(["blank"] + [str(k) for k in range(10)])}
    proto = finish_proto(onnx.load_from_string(buf.getvalue()), meta)
    ops = sorted({n.op_type for n in proto.graph.node})
    if "LSTM" not in ops or "MatMul" not in ops:
        raise SystemExit(f"{path.name}: expected a native LSTM and a MatMul head, got {ops}")
    data = proto.SerializeToString()
    if len(data) > MAX_FILE_BYTES:
        raise SystemExit(f"{path.name}: {len(data):,} bytes > {MAX_FILE_BYTES:,}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    worst = 0.0
    for b, w in ((3, WIDTH), (17, WIDTH), (5, 24), (2, 64)):
        xb = np.zeros((b, 1, 8, w), dtype=np.float32)
        xb[..., :min(w, WIDTH)] = x[:b, ..., :min(w, WIDTH)]
        with torch.no_grad():
            ref = model(torch.from_numpy(xb)).numpy()
        got = sess.run(["logits"], {"image": xb})[0]
        err = float(np.abs(got - ref).max())
        if got.shape != ref.shape or not err <= ATOL:
            raise SystemExit(f"{path.name}: onnxruntime vs torch {got.shape} vs {ref.shape}, max diff {err}")
        worst = max(worst, err)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.partial")
    tmp.write_bytes(data)
    tmp.replace(path)
    return {"file_bytes": len(data), "ops": ops, "check_max_diff": worst}


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = build_data()
    model = train(data)
    acc = {s: string_accuracy(model, data[f"x_{s}"], list(data[f"text_{s}"])) for s in ("train", "val", "test")}
    info = export(model, data["x_test"], OUT / "crnn_batch_first.onnx")
    fl.savez_deterministic(OUT / "data.npz", data)
    params = sum(p.numel() for p in model.parameters())
    log(f"wrote {OUT}/crnn_batch_first.onnx ({info['file_bytes']:,} bytes, {params:,} parameters, "
        f"onnxruntime vs torch {info['check_max_diff']:.1e}) and data.npz; string accuracy "
        + ", ".join(f"{s} {100 * a:.1f} %" for s, a in acc.items()) + f"; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
