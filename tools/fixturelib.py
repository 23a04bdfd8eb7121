"""Shared code for building onnxmod's real-data fixture models.

Used by ``tools/build_fixtures.py``.  Holds:

* the recurrent classifier (the paper's four non-translation shapes: 1:1, 1:N, M:1, M:N),
* a seeded, deterministic training loop (best epoch chosen on a validation slice carved out of
  the training split -- the test split is never looked at during training),
* ONNX export (legacy TorchScript exporter, opset 20, native LSTM/GRU/RNN ops) with metadata and
  a verification against torch at other batch sizes / sequence lengths in onnxruntime,
* ``data.npz`` writing, vocabulary helpers and the Brown -> universal POS tag mapping.

Nothing here is imported by the library or its tests.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

PAD, UNK = "<pad>", "<unk>"
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
SHAPES = ("1:1", "1:N", "M:1", "M:N")
RECURRENT_OPS = {"LSTM", "GRU", "RNN"}
ONNX_OPSET = 20


# --------------------------------------------------------------------------------------------
# vocabularies and small helpers
# --------------------------------------------------------------------------------------------
def build_vocab(counter: collections.Counter, max_size: int, min_count: int = 1) -> list[str]:
    """``[<pad>, <unk>]`` + the most frequent tokens (ties broken alphabetically), capped."""
    items = sorted(
        ((w, n) for w, n in counter.items() if n >= min_count and w not in (PAD, UNK)),
        key=lambda wn: (-wn[1], wn[0]),
    )
    return [PAD, UNK] + [w for w, _ in items[: max_size - 2]]


def vocab_sha256(vocab: list[str]) -> str:
    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


def encode(tokens: list[str], index: dict[str, int]) -> list[int]:
    return [index.get(t, 1) for t in tokens]


def pad_ids(seqs: list[list[int]], length: int, *, pre: bool = False, value: int = 0) -> np.ndarray:
    """Truncate (keep the first ``length``) and pad to ``length`` -- on the left if ``pre``."""
    out = np.full((len(seqs), length), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        s = list(s)[:length]
        if pre:
            out[i, length - len(s):] = s
        else:
            out[i, : len(s)] = s
    return out


def stratified_split(labels: np.ndarray, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of indices 0..n-1, stratified by ``labels``; returns sorted (train, test)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(len(idx) * test_frac))
        test.extend(idx[:k].tolist())
        train.extend(idx[k:].tolist())
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(test), dtype=np.int64)


def seeded_subsample(n: int, k: int, seed: int) -> np.ndarray:
    """``k`` of ``range(n)`` chosen by a seeded generator, in their original order."""
    if k >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Brown corpus (NLTK "word/tag" format) and the Brown -> universal tag mapping
# --------------------------------------------------------------------------------------------
UNIVERSAL_TAGS = ["NOUN", "VERB", ".", "ADP", "DET", "ADJ", "ADV", "PRON", "CONJ", "PRT", "NUM", "X"]

# Base Brown tags (after the reductions in ``brown_to_universal``) -> universal tag.
BROWN_BASE_TO_UNIVERSAL = {
    # punctuation
    ".": ".", ",": ".", ":": ".", "--": ".", "(": ".", ")": ".", "''": ".", "``": ".", "'": ".",
    # determiners, pre-/post-determiners, existential "there"
    "at": "DET", "abn": "DET", "abx": "DET", "dt": "DET", "dti": "DET",
    "dts": "DET", "dtx": "DET", "wdt": "DET", "ex": "DET",
    # pre-qualifiers / qualifiers and adverbs
    "abl": "ADV", "ql": "ADV", "qlp": "ADV", "rb": "ADV", "rbr": "ADV", "rbt": "ADV", "rn": "ADV",
    "wql": "ADV", "wrb": "ADV", "*": "ADV",
    # verbs: be / do / have forms, modals, lexical verbs
    "be": "VERB", "bed": "VERB", "bedz": "VERB", "beg": "VERB", "bem": "VERB", "ben": "VERB",
    "ber": "VERB", "bez": "VERB", "do": "VERB", "dod": "VERB", "doz": "VERB", "hv": "VERB",
    "hvd": "VERB", "hvg": "VERB", "hvn": "VERB", "hvz": "VERB", "md": "VERB", "vb": "VERB",
    "vbd": "VERB", "vbg": "VERB", "vbn": "VERB", "vbz": "VERB",
    # conjunctions; subordinating conjunctions are ADP in the universal tagset
    "cc": "CONJ", "cs": "ADP", "in": "ADP",
    # numbers; ordinals are adjectives
    "cd": "NUM", "od": "ADJ",
    # adjectives, and post-determiners ("many", "other", "next", "few", "last")
    "ap": "ADJ", "jj": "ADJ", "jjr": "ADJ", "jjs": "ADJ", "jjt": "ADJ",
    # nouns (common, proper, adverbial)
    "nn": "NOUN", "nns": "NOUN", "np": "NOUN", "nps": "NOUN", "nr": "NOUN", "nrs": "NOUN",
    # pronouns (personal, possessive, reflexive, nominal, wh-)
    "pn": "PRON", "pp": "PRON", "ppl": "PRON", "ppls": "PRON", "ppo": "PRON", "pps": "PRON",
    "ppss": "PRON", "wp": "PRON", "wpo": "PRON", "wps": "PRON",
    # particles and infinitival "to"
    "rp": "PRT", "to": "PRT",
    # interjections and untagged material
    "uh": "X", "nil": "X",
}


def brown_to_universal(tag: str) -> str:
    """Map one raw Brown tag (as in NLTK's ``word/tag`` files) to one of the 12 universal tags.

    1. lowercase; ``fw-...`` (foreign word) -> ``X``;
    2. a compound tag (``pps+bez`` "he's", ``vb+ppo`` "let's") keeps its first part;
    3. strip the ``-hl`` (headline), ``-tl`` (title), ``-nc`` (cited) suffixes, repeatedly;
    4. the bare ``*`` tag ("not", "n't") -> ``ADV``; otherwise strip a trailing negation ``*``
       (``md*`` "can't", ``bez*`` "isn't") and possessive ``$`` (``nn$``, ``pp$$``, ``wp$``);
    5. look the base tag up in ``BROWN_BASE_TO_UNIVERSAL`` (KeyError if unknown).
    """
    t = tag.lower()
    if t.startswith("fw-"):
        return "X"
    t = t.split("+", 1)[0]
    t = re.sub(r"(-(hl|tl|nc))+$", "", t)
    if t != "*":
        t = t.rstrip("*$")
    return BROWN_BASE_TO_UNIVERSAL[t]


@dataclass
class BrownDoc:
    fileid: str
    genre: str
    sentences: list[list[tuple[str, str]]]  # (word, raw tag)


def read_brown(root: Path) -> list[BrownDoc]:
    """Read ``cats.txt`` and the ``c??nn`` files of the NLTK-format Brown corpus."""
    genres = {}
    for line in (root / "cats.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            fid, genre = line.split()
            genres[fid] = genre
    docs = []
    for fid in sorted(genres):
        sents = []
        for line in (root / fid).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            sent = []
            for item in line.split():
                word, _, tag = item.rpartition("/")
                sent.append((word, tag))
            sents.append(sent)
        docs.append(BrownDoc(fid, genres[fid], sents))
    return docs


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class RecurrentClassifier(nn.Module):
    """The paper's architectures (Keras names in brackets), with torch's native recurrent layers.

    * ``1:1``  Embedding -> Flatten -> repeat x1 [RepeatVector(1)] -> recurrent stack -> Linear(C)
    * ``1:N``  Embedding -> Flatten -> repeat x T_out -> recurrent stack (sequences)
               -> per-step Linear(C) [TimeDistributed(Dense)]
    * ``M:1``  Embedding -> recurrent stack -> Linear(C) on the last step (bidirectional: forward
               state after the last step + backward state after the first step, i.e. each
               direction's final state, as Keras' Bidirectional(return_sequences=False))
    * ``M:N``  Embedding -> recurrent stack (sequences) -> per-step Linear(C)

    Input ``tokens`` int64 ``[batch, T]``; output raw logits ``[batch, C]`` or
    ``[batch, T_out, C]``.
    """

    def __init__(self, *, shape: str, vocab_size: int, emb_dim: int, cell: str, layers: int,
                 hidden: int, n_classes: int, bidirectional: bool = False, t_in: int | None = None,
                 t_out: int | None = None, dropout: float = 0.0):
        super().__init__()
        assert shape in SHAPES and cell in CELLS
        self.shape, self.cell, self.hidden, self.bidirectional = shape, cell, hidden, bidirectional
        self.t_in, self.t_out = t_in, t_out
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        # training-time only: on the embeddings and on the recurrent output; gone in eval mode,
        # so nothing of it is exported
        self.drop = nn.Dropout(dropout)
        in_size = emb_dim * t_in if shape in ("1:1", "1:N") else emb_dim
        kw = dict(input_size=in_size, hidden_size=hidden, num_layers=layers, batch_first=True,
                  bidirectional=bidirectional)
        if cell == "lstm":
            self.rnn = nn.LSTM(**kw)
        elif cell == "gru":
            self.rnn = nn.GRU(**kw)
        else:
            self.rnn = nn.RNN(nonlinearity=cell.split("_")[1], **kw)
        self.out = nn.Linear(hidden * (2 if bidirectional else 1), n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        e = self.drop(self.embedding(tokens))
        if self.shape == "1:1":
            x = e.flatten(1).unsqueeze(1)
        elif self.shape == "1:N":
            x = e.flatten(1).unsqueeze(1).repeat(1, self.t_out, 1)
        else:
            x = e
        y, _ = self.rnn(x)
        y = self.drop(y)
        if self.shape == "1:1":
            return self.out(y[:, -1])
        if self.shape == "M:1":
            if self.bidirectional:
                h = self.hidden
                return self.out(torch.cat([y[:, -1, :h], y[:, 0, h:]], dim=-1))
            return self.out(y[:, -1])
        return self.out(y)


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    clip: float = 1.0
    val_frac: float = 0.1
    weight_decay: float = 0.0
    # M:N with post-padding only: group batches by length and cut each batch's trailing
    # all-padding columns (exact for a unidirectional stack: a step's output never depends on
    # later steps, and padded positions carry label -1); saves ~half the compute
    bucket: bool = False


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    outs = [model(torch.from_numpy(x[i:i + batch_size])).numpy()
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs, axis=0).astype(np.float32)


def accuracy_from_logits(logits: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of argmax over the last axis; labels ``-1`` (padding) are ignored."""
    pred = logits.argmax(-1)
    mask = y != -1
    return float((pred[mask] == y[mask]).mean())


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return accuracy_from_logits(predict_logits(model, x), y)


def train_model(model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, seed: int,
                log=print) -> dict:
    """Seeded mini-batch Adam training with cross-entropy (labels -1 ignored).

    A seeded ``val_frac`` slice of the *training* data is held out; after each epoch the model
    is scored on it and the best epoch's weights are kept.  Returns a small training report.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(x)
    perm = rng.permutation(n)
    n_val = int(round(n * cfg.val_frac))
    val_idx, tr_idx = np.sort(perm[:n_val]), perm[n_val:]
    xv, yv = x[val_idx], y[val_idx]
    if cfg.bucket:  # post-padded: length = last non-pad position + 1
        nz = x != 0
        lengths = np.where(nz.any(1), x.shape[1] - np.argmax(nz[:, ::-1], axis=1), 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-1)
    best = (-1.0, -1, None)
    history = []
    t0 = time.time()
    for epoch in range(cfg.epochs):
        model.train()
        order = tr_idx[rng.permutation(len(tr_idx))]
        batch_list = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        if cfg.bucket:
            chunk = cfg.batch_size * 50
            batch_list = []
            for i in range(0, len(order), chunk):
                part = order[i:i + chunk]
                part = part[np.argsort(-lengths[part], kind="stable")]
                batch_list += [part[j:j + cfg.batch_size] for j in range(0, len(part), cfg.batch_size)]
            batch_list = [batch_list[k] for k in rng.permutation(len(batch_list))]
        total, batches = 0.0, 0
        for b in batch_list:
            xb, yb = x[b], y[b]
            if cfg.bucket:
                L = int(lengths[b].max())
                xb, yb = xb[:, :L], yb[:, :L]
            xb, yb = torch.from_numpy(np.ascontiguousarray(xb)), torch.from_numpy(np.ascontiguousarray(yb))
            logits = model(xb)
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
            opt.zero_grad()
            loss.backward()
            if cfg.clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            total += loss.item()
            batches += 1
        val_acc = accuracy(model, xv, yv) if n_val else float("nan")
        train_loss = total / max(batches, 1)
        if not math.isfinite(train_loss):
            log(f"    epoch {epoch + 1}: loss {train_loss} -- stopping")
            break
        history.append((round(train_loss, 4), round(val_acc, 4)))
        log(f"    epoch {epoch + 1:2d}: loss {train_loss:.4f}  val acc {val_acc:.4f}  "
            f"({time.time() - t0:.0f}s)")
        if val_acc > best[0]:
            best = (val_acc, epoch + 1, copy.deepcopy(model.state_dict()))
    if best[2] is not None:
        model.load_state_dict(best[2])
    model.eval()
    return {"best_epoch": best[1], "val_acc": best[0], "history": history,
            "train_seconds": round(time.time() - t0, 1)}


# --------------------------------------------------------------------------------------------
# ONNX export and verification
# --------------------------------------------------------------------------------------------
class ExportError(RuntimeError):
    pass


def export_onnx(model: RecurrentClassifier, path: Path, sample: np.ndarray, *, dynamic_seq: bool,
                metadata: dict[str, str], layers: int) -> None:
    """Export with the legacy exporter (opset 20), add ``metadata_props``, then verify.

    Verification (raises ``ExportError``): every recurrent computation is a native
    LSTM/GRU/RNN node (``layers`` of them, no Loop/Scan), and onnxruntime matches torch
    (atol 1e-4) at two batch sizes and, if the sequence axis is dynamic, two sequence lengths.
    """
    import onnx
    import onnxruntime as ort

    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(sample[:2])
    dyn_in = {0: "batch", 1: "seq"} if dynamic_seq else {0: "batch"}
    if model.shape == "M:N":
        dyn_out = {0: "batch", 1: "seq"} if dynamic_seq else {0: "batch"}
    else:
        dyn_out = {0: "batch"}
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["tokens"], output_names=["logits"],
                          dynamic_axes={"tokens": dyn_in, "logits": dyn_out})
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in metadata.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))

    ops = [n.op_type for n in m.graph.node]
    rec = [o for o in ops if o in RECURRENT_OPS]
    bad = [o for o in ops if o in ("Loop", "Scan", "If", "Dropout")]
    if len(rec) != layers or bad:
        raise ExportError(f"{path.name}: expected {layers} native recurrent ops, got {rec}; "
                          f"control flow {bad}")
    if [i.name for i in m.graph.input] != ["tokens"] or [o.name for o in m.graph.output] != ["logits"]:
        raise ExportError(f"{path.name}: unexpected inputs/outputs")

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    T = sample.shape[1]
    checks = [(5, T), (17, T)]
    if dynamic_seq:
        checks += [(3, max(2, T - 9)), (11, T + 6)]
    rng = np.random.default_rng(0)
    for b, t in checks:
        rows = sample[rng.choice(len(sample), size=b, replace=len(sample) < b)]
        if t <= T:
            xb = rows[:, T - t:] if model.shape == "M:1" else rows[:, :t]
        else:  # longer than the data: prepend/append padding-like random real tokens
            extra = rows[:, : t - T]
            xb = np.concatenate([extra, rows], 1) if model.shape == "M:1" else np.concatenate([rows, extra], 1)
        xb = np.ascontiguousarray(xb, dtype=np.int64)
        with torch.no_grad():
            ref = model(torch.from_numpy(xb)).numpy()
        got = sess.run(["logits"], {"tokens": xb})[0]
        if got.shape != ref.shape or got.dtype != np.float32:
            raise ExportError(f"{path.name}: ORT shape {got.shape}/{got.dtype} vs torch {ref.shape}")
        err = float(np.abs(got - ref).max())
        if not np.allclose(got, ref, atol=1e-4, rtol=0):
            raise ExportError(f"{path.name}: ORT vs torch max abs diff {err} at batch {b}, T {t}")


def onnx_metadata(task: str, class_names: list[str], vocab: list[str], shape: str) -> dict[str, str]:
    return {
        "onnxmod.task": task,
        "onnxmod.class_names": json.dumps(list(class_names)),
        "onnxmod.vocab_sha256": vocab_sha256(vocab),
        "onnxmod.shape": shape,
    }


VAL_SEED, VAL_ROWS, VAL_KEEP_FIRST = 20261123, 1000, 256


def carve_validation(d: dict) -> dict:
    """Move a seeded ``VAL_ROWS`` (at most a third) of the held-out rows into ``x_val``/``y_val``.

    The models never train on either split, so onnxmod's guard and size search get an honest
    validation split and the test split stays untouched by every choice they make. The first
    ``VAL_KEEP_FIRST`` test rows stay where they are (the export sample and ``torch_logits_test``
    use them), and the rest keep their order. Idempotent: data that has ``x_val`` is returned as is.
    """
    if "x_val" in d:
        return d
    n = len(d["y_test"])
    k = min(VAL_ROWS, (n - VAL_KEEP_FIRST) // 3) if n > VAL_KEEP_FIRST else 0
    pool = np.arange(VAL_KEEP_FIRST, n)
    val = np.sort(np.random.default_rng(VAL_SEED).choice(pool, size=k, replace=False)) if k else pool[:0]
    test = np.setdiff1d(np.arange(n), val)
    out = dict(d)
    out.update(x_val=d["x_test"][val], y_val=d["y_test"][val], x_test=d["x_test"][test], y_test=d["y_test"][test])
    return out


def write_npz(path: Path, *, x_train, y_train, x_test, y_test, class_names, vocab,
              model_names: list[str], torch_logits: list[np.ndarray], x_val=None, y_val=None) -> None:
    """``data.npz``: the splits, names, vocabulary, and the torch logits of every model.

    ``torch_logits_test`` is ``[n_models, 64, ...]`` in the order of ``model_names`` (file stems,
    e.g. ``lstm1``), torch's outputs on ``x_test[:64]``.
    """
    arrays = dict(
        x_train=np.asarray(x_train, dtype=np.int64),
        y_train=np.asarray(y_train, dtype=np.int64),
        x_test=np.asarray(x_test, dtype=np.int64),
        y_test=np.asarray(y_test, dtype=np.int64),
        **({} if x_val is None else dict(x_val=np.asarray(x_val, dtype=np.int64),
                                         y_val=np.asarray(y_val, dtype=np.int64))),
        class_names=np.array(class_names, dtype=np.str_),
        vocab=np.array(vocab, dtype=np.str_),
        model_names=np.array(model_names, dtype=np.str_),
        torch_logits_test=np.stack(torch_logits).astype(np.float32),
    )
    savez_deterministic(path, arrays)


def savez_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` (loadable by ``np.load``) but byte-identical across runs:
    fixed zip timestamps and entry order."""
    import io
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
