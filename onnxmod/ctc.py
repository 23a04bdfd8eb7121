"""CTC heads: greedy decoding, string accuracy, character error rate, and the CTC vote.

A CTC model (a text recognizer: ``--ctc-blank INDEX``, or the model's ``onnxmod.ctc_blank``
metadata) scores every class per step, one of them the *blank*. Its answer is a string: the
per-step argmax with repeats collapsed and blanks dropped (*greedy decoding*). onnxmod judges
such models by that string:

* **string accuracy**: the share of samples whose decoded string equals the reference;
* **character error rate (CER)**: the edit distance (Levenshtein: insertions, deletions,
  substitutions) between decoded and reference strings, summed over samples, divided by the
  references' total length.

The reference is the true text when the data holds it (``text_train``/``text_val``/``text_test``
arrays of str, with ``charset``: the character of each class, the blank's empty), else the
model's own decoding (string accuracy is then agreement with the model).

**Modules of a CTC head.** The blank is every module's background: a module's ``logits`` are
``[..., 3]`` = (rest, dominant, blank) — rest the mean of the classes other than the module's and
the blank, dominant its class, blank the blank's own logit — and ``score`` their softmax. The
blank gets no module. **The CTC vote** (``vote``, and compositions in ONNX): a step is blank
unless some module's dominant logit exceeds its blank logit; then the class of the module with
the largest dominant - blank log-odds wins (ties: blank). With every unit kept this is exactly
the model's argmax, since every module's blank logit is then the model's.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .io import NpzArrays, _input_path, keys

LAYOUT = ("rest", "dominant", "blank")  # a CTC module's logits, last axis


def decode(labels: np.ndarray, blank: int) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of per-step class ids ``[N, T]`` (``-1`` steps are skipped): per row,
    the ids with repeats collapsed and blanks dropped."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"CTC decoding needs per-step labels [N, T], got shape {list(labels.shape)}")
    prev = np.concatenate([np.full((labels.shape[0], 1), -2, labels.dtype), labels[:, :-1]], axis=1)
    keep = (labels != prev) & (labels != blank) & (labels >= 0)
    return [tuple(row[k].tolist()) for row, k in zip(labels, keep)]


def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences (insertions, deletions, substitutions cost 1)."""
    a, b = list(a), list(b)
    if len(a) < len(b):
        a, b = b, a
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def string_accuracy(pred: list, reference: list) -> float:
    """Share of samples whose decoded sequence equals its reference (nan for none)."""
    if not reference:
        return float("nan")
    return float(np.mean([tuple(p) == tuple(r) for p, r in zip(pred, reference)]))


def cer(pred: list, reference: list) -> float:
    """Character error rate: summed edit distances over the references' total length."""
    total = sum(len(r) for r in reference)
    if not reference:
        return float("nan")
    return sum(edit_distance(p, r) for p, r in zip(pred, reference)) / max(total, 1)


def vote(class_ids: np.ndarray, margins: np.ndarray, blank: int) -> np.ndarray:
    """The CTC vote from each module's dominant - blank log-odds ``margins`` ``[..., K]``: blank
    where no margin is positive, else the class of the largest (what compositions compute)."""
    margins = np.asarray(margins)
    best = margins.argmax(axis=-1)
    won = np.take_along_axis(margins, best[..., None], axis=-1)[..., 0] > 0
    return np.where(won, np.asarray(class_ids)[best], blank)


class Texts:
    """The reference strings a CTC data file may carry: ``text_<split>`` (str ``[N]``) and
    ``charset`` (str ``[C]``, one character or string per class; the blank's empty)."""

    def __init__(self, path, num_classes: int | None = None):
        self.path = str(path)
        self.arrays = NpzArrays(_input_path(path, "an .npz data file"))
        self.charset = None
        if "charset" in self.arrays:
            cs = self.arrays["charset"]
            if cs.ndim != 1 or cs.dtype.kind not in "US":
                raise InputError(f"{path}: charset must be a 1-D array of strings (got {cs.dtype}, "
                                 f"shape {list(cs.shape)})")
            self.charset = [str(c) for c in cs]
            if num_classes is not None and len(self.charset) != num_classes:
                raise InputError(f"{path}: charset has {len(self.charset)} entries but the model has "
                                 f"{num_classes} classes")

    def has(self, split: str) -> bool:
        return f"text_{split}" in self.arrays

    def strings(self, split: str, rows=None) -> list[str] | None:
        """The split's true strings (``rows`` of them), or None when the data has none."""
        key = f"text_{split}"
        if key not in self.arrays:
            return None
        if self.charset is None:
            raise InputError(f"{self.path}: has {key} but no charset (the character of each class) to compare "
                             f"decoded strings with")
        t = self.arrays[key]
        if t.ndim != 1 or t.dtype.kind not in "US":
            raise InputError(f"{self.path}: {key} must be a 1-D array of strings (got {t.dtype}, shape "
                             f"{list(t.shape)})")
        t = [str(s) for s in t]
        return t if rows is None else [t[int(r)] for r in rows]

    def spell(self, seqs: list[tuple[int, ...]]) -> list[str]:
        """Decoded class-id sequences as strings (each class's ``charset`` entry)."""
        return ["".join(self.charset[i] if 0 <= i < len(self.charset) else "?" for i in s) for s in seqs]


class Reference:
    """What a CTC model's strings are judged against, for some rows of a split: the true strings
    (``strings``, from ``Texts``) or, without them, the per-step labels' own decoding (the
    model's, with ``--labels model``)."""

    def __init__(self, y: np.ndarray, blank: int, strings: list[str] | None = None, texts: Texts | None = None):
        self.blank, self.texts = blank, texts
        self.truth = strings is not None
        self.seqs = [tuple(s) for s in strings] if strings is not None else decode(y, blank)
        if strings is not None and y is not None and len(strings) != len(y):
            raise InputError(f"{texts.path if texts else 'data'}: {len(strings)} reference strings for "
                             f"{len(y)} samples")
        self.shape = (len(self.seqs),)
        self.ndim = 1

    def __len__(self) -> int:
        return len(self.seqs)

    def decoded(self, labels: np.ndarray) -> list[tuple]:
        """``labels``' decoding, comparable with ``seqs`` (characters when the truth is text)."""
        d = decode(labels, self.blank)
        return [tuple(s) for s in self.texts.spell(d)] if self.truth else d

    def describe(self) -> str:
        return "the true text" if self.truth else "the reference labels' own decoding"

    def subset(self, rows) -> Reference:
        r = Reference.__new__(Reference)
        r.blank, r.texts, r.truth = self.blank, self.texts, self.truth
        r.seqs = [self.seqs[int(i)] for i in np.flatnonzero(rows)] if np.asarray(rows).dtype == bool else \
            [self.seqs[int(i)] for i in rows]
        r.shape, r.ndim = (len(r.seqs),), 1
        return r


class StringAccuracy:
    """The metric the guard and the size search call for a CTC model (``metrics.StepAccuracy``
    for every other head): string accuracy of the greedy decoding against a ``Reference``."""

    name = "string accuracy"

    def __init__(self, blank: int):
        self.blank = blank

    def correct(self, pred: np.ndarray, ref: Reference) -> np.ndarray:
        """Per sample: is its decoded string the reference's?"""
        return np.array([p == r for p, r in zip(ref.decoded(pred), ref.seqs)], dtype=bool)

    def scored(self, ref: Reference) -> np.ndarray:
        return np.ones(len(ref), dtype=bool)

    def __call__(self, pred: np.ndarray, ref: Reference) -> float:
        c = self.correct(pred, ref)
        return float(c.mean()) if c.size else float("nan")

    def margin(self, logits: np.ndarray) -> np.ndarray:
        """A CTC module's log-odds of its class over the blank."""
        return logits[..., 1] - logits[..., 2]

    def vote(self, class_ids: np.ndarray, margins: np.ndarray) -> np.ndarray:
        return vote(class_ids, margins, self.blank)


def scores(pred: np.ndarray, ref: Reference) -> dict:
    """String accuracy and CER of per-step predictions ``pred`` against ``ref``."""
    got = ref.decoded(pred)
    return {"string_accuracy": string_accuracy(got, ref.seqs), "cer": cer(got, ref.seqs), "strings": len(ref)}


def covered(ref: Reference, class_ids, charset: list[str] | None) -> np.ndarray:
    """Per sample: does its reference use only the characters (classes) in ``class_ids``?"""
    ids = set(int(c) for c in class_ids)
    if ref.truth:
        chars = {charset[c] for c in ids if charset is not None and c < len(charset)}
        return np.array([all(ch in chars for ch in s) for s in ref.seqs], dtype=bool)
    return np.array([all(c in ids for c in s) for s in ref.seqs], dtype=bool)


def blank_of(option, model, where) -> int | None:
    """The CTC blank: ``option`` (``--ctc-blank``), else the model's ``onnxmod.ctc_blank``
    metadata, else None (not a CTC head). It must index the head's classes of a per-step output."""
    from .errors import UsageError
    from .io import parse_index

    if option is None:
        raw = model.metadata.get(keys.CTC_BLANK)
        if raw is None:
            return None
        option = parse_index(raw)
        if option is None:
            raise InputError(f"{where}: metadata {keys.CTC_BLANK!r} is {raw[:40]!r}, expected a class index")
    if isinstance(option, bool) or not isinstance(option, (int, np.integer)) or not 0 <= option < model.num_classes:
        raise UsageError(f"{where}: --ctc-blank {option!r} is not a class of the model's head "
                         f"(0..{model.num_classes - 1})")
    if model.one_output:
        raise UsageError(f"{where}: --ctc-blank applies to per-step outputs (a CTC head scores every step); this "
                         f"model has one output per sample")
    return int(option)


def reference(path, num_classes: int, blank: int, split: str, y: np.ndarray, rows=None) -> Reference:
    """The reference of ``split`` (its ``rows``): the data's ``text_<split>`` when present, else
    the decoding of the per-step labels ``y`` (the same rows)."""
    texts = Texts(path, num_classes)
    strings = texts.strings(split, rows) if texts.has(split) else None
    return Reference(y, blank, strings, texts if strings is not None else None)


def report(pred_model: np.ndarray, pred_composed: np.ndarray, ref: Reference, class_ids=None) -> dict:
    """The string scores of the model and a composition on the test split, side by side; with
    ``class_ids`` (a composition of some characters), on the samples whose reference uses only
    them."""
    keep = None if class_ids is None else covered(ref, class_ids, ref.texts.charset if ref.texts else None)
    if keep is not None:
        ref, pred_model, pred_composed = ref.subset(keep), pred_model[keep], pred_composed[keep]
    m, c = scores(pred_model, ref), scores(pred_composed, ref)
    out = {"reference": ref.describe(), "strings": len(ref),
           "monolithic_string_accuracy": m["string_accuracy"], "composed_string_accuracy": c["string_accuracy"],
           "delta_string_accuracy": c["string_accuracy"] - m["string_accuracy"],
           "monolithic_cer": m["cer"], "composed_cer": c["cer"]}
    if keep is not None:
        out["covered_only"] = True
    return out


def blank_of_file(proto, kind: str, option, where) -> int | None:
    """A module's or composition's CTC blank (its ``onnxmod.ctc_blank``), or ``option`` for a file
    that does not say; a file that says another blank than ``option`` is refused."""
    from .errors import UsageError
    from .io import parse_index

    meta = {p.key: p.value for p in proto.metadata_props}
    mine = parse_index(meta[keys.CTC_BLANK]) if meta.get(keys.CTC_BLANK) else None
    if mine is not None and option is not None and int(option) != mine:
        raise UsageError(f"{where}: this {kind} was built with CTC blank {mine}, not {option}")
    return mine if mine is not None else (None if option is None else int(option))


def named_by_charset(data, num_classes: int, blank: int):
    """``(data, charset sha256 or None)``: the data's ``charset`` (when it has one) names classes
    the data leaves unnamed (the blank: ``blank``) and fingerprints the model's output, so that
    ``compose`` and ``replace`` refuse modules of models whose class indices mean other
    characters (ddddocr's ``common.onnx`` and ``common_old.onnx`` share 8,210 characters in
    different orders)."""
    import dataclasses
    import hashlib

    charset = Texts(data.path, num_classes).charset
    if charset is None:
        return data, None
    if data.class_names is None:
        names = [c if c else "blank" for c in charset]
        if len(set(names)) == len(names):
            data = dataclasses.replace(data, class_names=names)
    return data, hashlib.sha256("\n".join(charset).encode()).hexdigest()
