"""Encoder-decoder translators: a concern per target language (SPEC §3.5, issue 4).

A translation model reads ``src`` ``[N, S]`` and the target prefix ``tgt_in`` ``[N, T]`` (its first
token marks the target language, e.g. ``<2fr>``) and outputs next-token ``logits`` ``[N, T, V]``.
The encoder's final state initialises the decoder (see ``graph.Model._bridge`` for how slicing
keeps the two consistent).

* **Data**: the npz holds ``x_*`` (source ids) and ``y_*`` (target ids: language token, words,
  ``<eos>``, 0 padding) plus ``tgt_vocab`` (with the ``<2xx>`` tokens) and ``languages``.
  ``tgt_in = y[:, :-1]``, next-token labels ``y[:, 1:]``.
* **Concerns**: positives are pairs into the language, negatives pairs into the others (500/500,
  seeded). Source-side recurrent ops are observed at their final state (the encoding), target-side
  ops at every non-padding target step.
* **Modules** keep the whole output layer (a module must still translate); a module is a
  standalone translator into its language (``onnxmod.lang_token`` in its metadata).
* **Composition** routes each sentence to the module of its language token.
* **Evaluation**: greedy decoding (``seq2seq.greedy_decode``) and sacrebleu corpus BLEU per
  language, monolithic vs composed.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import progress as _progress
from . import seq2seq
from .concern import ClassScores, ConcernConfig, score_layer
from .errors import InputError, UnsupportedModelError
from .graph import Model
from .io import _read_npz, keys, load_data, load_onnx
from .modularize import module_metadata
from .runtime import run_batched, session
from .sampling import SamplingConfig, _draw, _rng, held_out
from .trace import run_trace


@dataclass
class TranslationData:
    path: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    languages: list[str]
    tokens: list[int]  # target-vocabulary id of each language's <2xx> token
    tgt_vocab: list[str]
    src_vocab: list[str] | None
    lang_train: np.ndarray
    lang_test: np.ndarray
    max_len: int
    ref_test: list[str] | None = None  # reference sentences as written (lowercase), when the data has them
    x_val: np.ndarray | None = None  # pairs the model never trained on (x_val/y_val), when the data has them
    y_val: np.ndarray | None = None
    lang_val: np.ndarray | None = None


def load_translation_data(path, model: Model | None = None) -> TranslationData:
    """Load translation data; with ``model``, check it against the model's vocabulary and input."""
    V = model.num_classes if model is not None else None
    shape = list(model.input.shape or []) or None if model is not None else None
    d = load_data(path, num_classes=V, many_output=True, input_shape=shape)
    arrays = _read_npz(Path(d.path))
    for key in ("tgt_vocab", "languages"):
        if key not in arrays:
            raise InputError(f"{d.path}: translation data needs {key!r} (target vocabulary / language codes)")
    vocab = [str(s) for s in arrays["tgt_vocab"]]
    languages = [str(s) for s in arrays["languages"]]
    if V is not None and len(vocab) != V:
        raise InputError(f"{d.path}: tgt_vocab has {len(vocab)} entries but the model outputs {V}")
    if any(y is not None and y.max() >= len(vocab) for y in (d.y_train, d.y_test, d.y_val)):
        raise InputError(f"{d.path}: target ids exceed tgt_vocab ({len(vocab)} entries)")
    tokens = []
    for lang in languages:
        tok = f"<2{lang}>"
        if tok not in vocab:
            raise InputError(f"{d.path}: languages lists {lang!r} but tgt_vocab has no {tok}")
        tokens.append(vocab.index(tok))

    def langs(y, key):
        idx = np.full(y.shape[0], -1, dtype=np.int64)
        for k, t in enumerate(tokens):
            idx[y[:, 0] == t] = k
        if (idx < 0).any():
            raise InputError(f"{d.path}: {key} row {int(np.flatnonzero(idx < 0)[0])} "
                             f"does not start with a language token")
        return idx

    src_vocab = [str(s) for s in arrays["src_vocab"]] if "src_vocab" in arrays else None
    refs = [str(s) for s in arrays["ref_test"]] if "ref_test" in arrays else None
    if refs is not None and len(refs) != d.y_test.shape[0]:
        raise InputError(f"{d.path}: ref_test has {len(refs)} sentences but y_test has {d.y_test.shape[0]} rows")
    # tokens generated at most: the target length without its language token
    if d.y_val is not None and d.y_val.shape[1] != d.y_test.shape[1]:
        raise InputError(f"{d.path}: y_val has {d.y_val.shape[1]} target steps but y_test has {d.y_test.shape[1]}")
    return TranslationData(d.path, d.x_train, d.y_train, d.x_test, d.y_test, languages, tokens, vocab, src_vocab,
                           langs(d.y_train, "y_train"), langs(d.y_test, "y_test"), int(d.y_test.shape[1]) - 1, refs,
                           d.x_val, d.y_val, None if d.y_val is None else langs(d.y_val, "y_val"))


def feeds(model, x: np.ndarray, y: np.ndarray) -> dict:
    """Inputs for teacher forcing: ``{source: x, target prefix: y[:, :-1]}`` (a Model or a session)."""
    names = [t.name for t in model.inputs] if isinstance(model, Model) else [i.name for i in model.get_inputs()]
    if len(names) != 2:
        raise UnsupportedModelError("an encoder-decoder model needs two inputs (source, target prefix)")
    return {names[0]: x, names[1]: y[:, :-1]}


def _side(model: Model) -> list[str]:
    """'src' or 'tgt' per recurrent op: which graph input its X derives from."""
    tgt = model.inputs[1]

    def reaches(t, depth=0):
        if t is tgt:
            return True
        if depth > 64 or isinstance(t, gs.Constant) or not t.inputs:
            return False
        return any(reaches(x, depth + 1) for x in t.inputs[0].inputs)
    return ["tgt" if reaches(op.x) else "src" for op in model.recurrent]


def score_languages(model: Model, data: TranslationData, cfg: ConcernConfig, threads=None) -> list[ClassScores]:
    s: SamplingConfig = cfg.sampling
    L = len(data.languages)
    pos = {c: _draw(np.flatnonzero(data.lang_train == c), s.positives, _rng(s.seed, c)) for c in range(L)}
    k = math.ceil(s.negatives / max(L - 1, 1))
    rows = np.unique(np.concatenate(list(pos.values())))
    where = {int(r): i for i, r in enumerate(rows)}
    hidden = run_trace(model, feeds(model, data.x_train[rows], data.y_train[rows]), threads=threads,
                       progress=False).hidden  # per op [N, T, D, H]
    sides = _side(model)
    tgt_valid = data.y_train[rows][:, :-1] != 0
    obs = []
    for h, side in zip(hidden, sides):
        N, T, D, H = h.shape
        if side == "src":  # the encoding: forward at the last step, reverse at the first
            last = [h[:, -1, 0]] + ([h[:, 0, 1]] if D == 2 else [])
            obs.append((np.concatenate(last, axis=-1), None))
        else:
            obs.append((h.reshape(N, T, D * H), tgt_valid))
    out = []
    for c in range(L):
        p = np.array([where[int(r)] for r in pos[c]], dtype=np.int64)
        n = np.sort(np.concatenate([np.array([where[int(r)] for r in pos[o][:k]], dtype=np.int64)
                                    for o in range(L) if o != c])) if L > 1 else np.empty(0, np.int64)
        layers = {}
        for j, ((h, valid), op) in enumerate(zip(obs, model.recurrent)):
            if valid is None:
                hp, hn = h[p], h[n]
            else:
                hp, hn = h[p][valid[p]], h[n][valid[n]]
            layers[j] = [score_layer(hp, hn, op.rule, cfg)]
        out.append(ClassScores(c, data.languages[c], "rolled", layers, [op.rule for op in model.recurrent],
                               int(len(p)), int(len(n))))
    return out


def build_translator(model: Model, concern, data: TranslationData, digest: str) -> onnx.ModelProto:
    from .modularize import selections

    m = model.fresh()
    m.apply_selection(selections(m, concern))
    meta = module_metadata(m, concern, model.metadata.get(keys.SRC_VOCAB_SHA256)
                           or _sha(data.src_vocab), digest)
    meta[keys.LANG_TOKEN] = data.tokens[concern.class_index]
    meta[keys.OUTPUT_VOCAB_SHA256] = model.metadata.get(keys.TGT_VOCAB_SHA256) or _sha(data.tgt_vocab)
    out = m.output
    if out.name != "logits":
        out.name = "logits"
    out.shape = None
    out.dtype = np.float32
    proto = m.export(outputs=[out], metadata=meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _sha(vocab) -> str:
    return hashlib.sha256("\n".join(vocab).encode()).hexdigest() if vocab else ""


TRAINING_PAIRS = "seeded pairs of the training split, kept out of tracing"


def holdout(data: TranslationData, seed: int, rows: int = 600) -> tuple[TranslationData, TranslationData, str]:
    """(pairs to identify concerns on, validation pairs as a test split, where these come from).

    The validation pairs are ``x_val``/``y_val`` (at most ``rows``, seeded) when the data has them:
    pairs the model never trained on. Otherwise a seeded part of the training pairs, kept out of
    tracing: the model has fit those, so BLEU on them is optimistic (on ``et_endeit``, 54.77 on
    training pairs against 2.71 on test); the third value says which."""
    import dataclasses

    if data.x_val is not None:
        n = data.y_val.shape[0]
        val = np.arange(n) if n <= rows else held_out(n, rows, seed, 7901)[1]
        return data, dataclasses.replace(data, x_test=data.x_val[val], y_test=data.y_val[val],
                                         lang_test=data.lang_val[val], ref_test=None), "x_val"
    n = data.y_train.shape[0]
    k = min(rows, n // 5)
    fit, val = held_out(n, k, seed, 7901)
    fitting = dataclasses.replace(data, x_train=data.x_train[fit], y_train=data.y_train[fit],
                                  lang_train=data.lang_train[fit])
    held = dataclasses.replace(data, x_test=data.x_train[val], y_test=data.y_train[val],
                               lang_test=data.lang_train[val], ref_test=None)
    return fitting, held, TRAINING_PAIRS


def mean_bleu(by_language: dict) -> float:
    return float(np.mean(list(by_language.values()))) if by_language else 0.0


def bleu(model_or_proto, data: TranslationData, limit: int | None = None, threads: int | None = 1) -> dict:
    """Corpus BLEU per language on the test split (greedy decoding in onnxruntime)."""
    proto = model_or_proto if isinstance(model_or_proto, onnx.ModelProto) else load_onnx(model_or_proto)
    sess = session(proto, threads=threads)
    n = data.x_test.shape[0] if limit is None else min(limit, data.x_test.shape[0])
    x, y, lang = data.x_test[:n], data.y_test[:n], data.lang_test[:n]
    # references: the stored sentences when the data has them (an <unk> in the output then never
    # matches), else the target ids detokenised
    tokens = np.array(data.tokens)[lang]
    eos = data.tgt_vocab.index(seq2seq.EOS)
    with _progress.bar(n, unit="sentences", desc="decode") as bar:
        out = seq2seq.greedy_decode(sess, x, tokens, data.max_len, eos_id=eos, progress=bar.update)
    hyps = seq2seq.detokenize(out, data.tgt_vocab)
    refs = data.ref_test[:n] if data.ref_test is not None else seq2seq.detokenize(y, data.tgt_vocab)
    return seq2seq.bleu_by_language(hyps, refs, lang, data.languages)


def token_accuracy(proto, data: TranslationData, threads=None) -> float:
    """Teacher-forced next-token accuracy on the test split (non-padding targets)."""
    sess = session(proto, threads=threads)
    (logits,) = run_batched(sess, feeds(sess, data.x_test, data.y_test), [sess.get_outputs()[0].name], 256)
    target = data.y_test[:, 1:]
    valid = target != 0
    return float((logits.argmax(-1)[valid] == target[valid]).mean())
