"""Greedy decoding and BLEU scoring for encoder-decoder translation models stored as ONNX.

A translation model here is any ONNX graph with two int64 inputs and one float output:

* input 0, ``src``    ``[batch, S]``: source token ids (the fixtures pre-pad with 0, so the
  encoder's last step is a real token);
* input 1, ``tgt_in`` ``[batch, T]``: the target prefix; its first token is the target-language
  token (``<2fr>``, ``<2de>``, ...), then the tokens produced so far;
* output 0, ``logits`` ``[batch, T, V_tgt]``: scores of the next token at every prefix position.

The model has no state outputs, so :func:`greedy_decode` re-runs the growing prefix at each step
(``max_len`` runs, each batched over sentences). This needs only onnxruntime and numpy, and works
unchanged for a model rebuilt from modules, as long as it keeps those inputs and output.

Public API:

* :func:`greedy_decode` -- token ids ``[N, max_len]`` (no language token; ``<eos>`` then 0s);
* :func:`detokenize` -- ids to text (stops at ``<eos>``, joins tokens back into a sentence);
* :func:`tokenize` -- the word/punctuation split the fixtures were built with (its inverse);
* :func:`corpus_bleu` -- sacrebleu corpus BLEU (13a tokenisation) of hypotheses vs references;
* :func:`bleu_by_language` -- corpus BLEU per target language.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

__all__ = [
    "PAD",
    "UNK",
    "EOS",
    "tokenize",
    "greedy_decode",
    "detokenize",
    "corpus_bleu",
    "bleu_by_language",
]

PAD = "<pad>"  # id 0 in every vocabulary
UNK = "<unk>"  # id 1 in every vocabulary
EOS = "<eos>"  # ends a target sentence

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u00ad\ufeff"))

# Spacing rules of detokenize(). sacrebleu's 13a tokeniser splits ASCII punctuation other than
# apostrophes, hyphens and digit-internal '.'/',', so only those (and non-ASCII marks) need care.
_JOIN_BOTH = frozenset({"'", "\u2019", "-", "/"})  # don't, l'homme, peut-être, 24/7
_NO_SPACE_BEFORE = frozenset(
    {".", ",", "!", "?", ";", ":", ")", "]", "}", "%", "\u2026", "\u201c", "\u201d"}
)
_NO_SPACE_AFTER = frozenset({"(", "[", "{", "\u201e", "\u00bf", "\u00a1"})
_ENDS_IN_APOSTROPHE = frozenset({"po"})  # Italian "un po' di": the apostrophe ends the word


def normalize(text: str) -> str:
    """Lowercase, drop invisible characters (zero-width space, soft hyphen, BOM) and make every
    run of whitespace (also no-break and thin spaces) one plain space."""
    return " ".join(text.translate(_INVISIBLE).lower().split())


def tokenize(text: str) -> list[str]:
    """Split :func:`normalize`-d text into words (``\\w+``) and single punctuation marks."""
    return _TOKEN_RE.findall(normalize(text))


def _join(tokens: Sequence[str]) -> str:
    out = ""
    prev = before = None
    for tok in tokens:
        if prev is None:
            out = tok
        else:
            space = not (
                tok in _JOIN_BOTH
                or (prev in _JOIN_BOTH and not (prev == "'" and before in _ENDS_IN_APOSTROPHE))
                or tok in _NO_SPACE_BEFORE
                or prev in _NO_SPACE_AFTER
                or unicodedata.category(tok[0]).startswith("M")
            )
            # 3.5, 1,000: no space after a digit-internal point or comma either
            if (
                prev in {".", ","}
                and tok[0].isdigit()
                and len(out) >= 2
                and out[-2].isdigit()
            ):
                space = False
            out += (" " if space else "") + tok
        before, prev = prev, tok
    return out


def detokenize(ids: np.ndarray, vocab: Sequence[str]) -> list[str]:
    """Turn token ids ``[N, L]`` back into N sentences.

    Reading stops at ``<eos>``; ``<pad>`` and language tokens (``<2xx>``) are skipped, so both
    :func:`greedy_decode` output and stored targets (language token first) can be passed.
    ``<unk>`` is written as ``<unk>``. Tokens are joined with spaces except around apostrophes,
    hyphens and slashes, before closing punctuation and after opening brackets/quotes.
    """
    ids = np.asarray(ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    vocab = list(vocab)
    eos = vocab.index(EOS) if EOS in vocab else -1
    skip = {i for i, w in enumerate(vocab) if w == PAD or (w.startswith("<2") and w.endswith(">"))}
    sentences = []
    for row in ids.tolist():
        toks = []
        for i in row:
            if i == eos:
                break
            if i in skip:
                continue
            toks.append(vocab[i])
        sentences.append(_join(toks))
    return sentences


def _session(session_or_path):
    import onnxruntime as ort

    if isinstance(session_or_path, ort.InferenceSession):
        return session_or_path
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(session_or_path), opts, providers=["CPUExecutionProvider"])


def greedy_decode(
    session_or_path,
    src_ids: np.ndarray,
    lang_token_ids,
    max_len: int,
    *,
    eos_id: int = 2,
    batch_size: int = 256,
    progress=None,
) -> np.ndarray:
    """Greedy translation of ``src_ids`` ``[N, S]`` with an ONNX encoder-decoder model.

    ``session_or_path``: an ``onnxruntime.InferenceSession`` or a path to the ``.onnx`` file
    (opened with one thread). ``lang_token_ids``: the target-language token id, one int for all
    sentences or an array ``[N]``. ``max_len``: the number of tokens generated at most
    (including ``<eos>``). ``eos_id``: id of ``<eos>`` in the target vocabulary (2 in the
    fixtures). Sentences are decoded ``batch_size`` at a time; the result does not depend on it.

    Returns int64 ``[N, max_len]``: the generated tokens without the language token; after a
    sentence's ``<eos>`` every position is 0 (``<pad>``). ``progress``: an optional callable
    receiving the number of sentences just decoded.
    """
    sess = _session(session_or_path)
    in_src, in_tgt = (i.name for i in sess.get_inputs()[:2])
    out_name = sess.get_outputs()[0].name
    src_ids = np.ascontiguousarray(src_ids, dtype=np.int64)
    n = src_ids.shape[0]
    langs = np.broadcast_to(np.asarray(lang_token_ids, dtype=np.int64), (n,))
    result = np.zeros((n, max_len), dtype=np.int64)
    for start in range(0, n, batch_size):
        src = src_ids[start : start + batch_size]
        b = src.shape[0]
        prefix = langs[start : start + batch_size].reshape(b, 1).copy()
        done = np.zeros(b, dtype=bool)
        for t in range(max_len):
            logits = sess.run([out_name], {in_src: src, in_tgt: prefix})[0]
            nxt = logits[:, -1, :].argmax(axis=-1).astype(np.int64)
            nxt[done] = 0
            result[start : start + b, t] = nxt
            done |= nxt == eos_id
            if done.all():
                break
            prefix = np.concatenate([prefix, nxt[:, None]], axis=1)
        if progress is not None:
            progress(b)
    return result


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exp smoothing), 0-100.

    One reference per hypothesis. Both sides are compared as given: the fixtures pass lowercase
    detokenised hypotheses and lowercase references.
    """
    import sacrebleu

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)


def bleu_by_language(
    hyps: Sequence[str],
    refs: Sequence[str],
    lang_index: np.ndarray,
    languages: Sequence[str],
) -> dict[str, float]:
    """Corpus BLEU per target language: ``{language: bleu}`` over the pairs whose
    ``lang_index`` points to it (languages without pairs are left out)."""
    lang_index = np.asarray(lang_index)
    if len(hyps) != len(refs) or len(hyps) != len(lang_index):
        raise ValueError("hyps, refs and lang_index must have the same length")
    out = {}
    for k, lang in enumerate(languages):
        sel = np.flatnonzero(lang_index == k)
        if sel.size:
            out[str(lang)] = corpus_bleu([hyps[i] for i in sel], [refs[i] for i in sel])
    return out
