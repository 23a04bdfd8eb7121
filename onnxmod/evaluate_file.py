"""``evaluate``: the test-split scores of one file — a model, a composition, a module or a
translator — overall and per class, optionally written as a report (HTML or Markdown).

The file's kind decides what is scored: classifiers accuracy, taggers token accuracy, a module its
binary accuracy and AUC, a CTC model or composition its decoded strings (``evaluate_ctc``), a
translator BLEU per target language."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from . import classes as _classes
from . import ctc as _ctc
from . import evaluate as ev
from . import labels as _labels
from . import progress as _progress
from . import report as rep
from .compose import module_info
from .errors import InputError, UsageError
from .graph import Model
from .io import check_output_file, input_spec, keys, load_data, load_onnx, write_bytes_atomic
from .pipeline.load import files_named


def is_translator(proto: onnx.ModelProto) -> bool:
    """An encoder-decoder model, or a module or composition of one."""
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(keys.SHAPE) == "enc-dec":
        return True
    return meta.get(keys.KIND, "model") == "model" and len(proto.graph.input) == 2


def evaluate(model_path, data_path, threads: int | None = None, classes=None, report=None,
             force: bool = False, labels: str = "data", ctc_blank: int | None = None) -> dict:
    """The test-split scores of ``model_path`` (``api.evaluate`` says what each option does)."""
    if report is not None:
        if Path(report).suffix.lower() not in (".html", ".htm", ".md"):
            raise UsageError(f"{report}: --report writes .html or .md files")
        check_output_file(report, force, inputs=[model_path, data_path])
    proto = load_onnx(model_path)
    k = ev.kind(proto)
    reference = _labels.reference_model(labels, k, model_path)
    if is_translator(proto) and labels != "data":
        _labels.refuse_translator(model_path)
    if is_translator(proto):
        return evaluation_report(_translator(proto, k, model_path, data_path, threads), report)
    data, blank, C, names, covered = _load(proto, k, model_path, data_path, reference, ctc_blank, threads)
    if blank is not None and k != "module":
        return evaluate_ctc(proto, k, model_path, data, blank, C, names, covered, classes, threads, reference,
                            report)
    return evaluation_report(_per_step(proto, k, model_path, data_path, data, C, names, covered, classes, threads,
                                       reference, labels), report)


def _translator(proto, k, model_path, data_path, threads) -> dict:
    """A translator (model, module or composition): BLEU per target language from greedy
    decoding, and teacher-forced next-token accuracy."""
    from . import encdec

    model = Model(proto, source=str(model_path)) if k == "model" else None
    data = encdec.load_translation_data(data_path, model)
    with _progress.step("evaluate"):
        b = encdec.bleu(proto, data)
        acc = encdec.token_accuracy(proto, data, threads)
    return {"model": str(model_path), "kind": k, "metric": "BLEU", "accuracy": acc,
            "samples": int(data.y_test.shape[0]), "bleu": b,
            "per_class": [{"class": i, "name": lang, "accuracy": None, "bleu": b.get(lang),
                           "support": int((data.lang_test == i).sum())} for i, lang in enumerate(data.languages)]}


def _load(proto, k, model_path, data_path, reference, ctc_blank, threads) -> tuple:
    """The test split and what the file's head is: ``(data, CTC blank or None, classes C, class
    names, the classes a composition covers or None)``. Labels come from the data, or from the
    reference model's answers (``labels.from_model``)."""
    covered = None
    if k == "model":
        model = Model(proto, source=str(model_path))
        blank = _ctc.blank_of(ctc_blank, model, model_path)
        data = _labels.load(model, data_path, "data" if reference is None else "model", train=False,
                            threads=threads, runnable=None if reference is True else reference,
                            ctc=blank is not None, optional=blank is not None)
        return data, blank, model.num_classes, model.class_names(data.class_names), covered
    blank = _ctc.blank_of_file(proto, k, ctc_blank, model_path)
    data = load_data(data_path, train=False, labels=reference is None and blank is None,
                     **input_spec(proto))  # float-input modules too
    if reference is not None:
        data = _labels.from_model(reference, data, threads, ctc=blank is not None)
    described = ev.describe_classes(proto) if k in ("composition", "fused") else [module_info(proto, str(model_path))]
    C = int(max([c["class_index"] for c in described] + [int(data.y_test.max()) if data.y_test is not None else 0]
                + [blank or 0]) + 1)
    names = data.class_names or [str(i) for i in range(C)]
    if k != "module":
        covered = sorted({int(c["class_index"]) for c in described} | ({blank} if blank is not None else set()))
    return data, blank, C, names, covered


def _selection(classes, covered, names, C, model_path) -> tuple:
    """The classes a model or composition is scored on (None: every class) and the note saying so
    when a composition covers only some: ``(selected, note)``."""
    if isinstance(classes, (list, tuple)):
        return [class_id(c, names, C, model_path) for c in classes], None
    if classes is None and covered is not None and len(covered) < C:
        shown = ", ".join(names[c] if c < len(names) else str(c) for c in covered)
        return covered, (f"scored on the test samples of the {len(covered)} of {C} classes this composition covers "
                         f"({shown}); --all-classes scores every class")
    return None, None


def _per_step(proto, k, model_path, data_path, data, C, names, covered, classes, threads, reference, labels) -> dict:
    """Per-sample (or per-step) scores of a model, composition or module: accuracy overall and per
    class; a module's binary accuracy and AUC."""
    y = data.y_test
    if y is None:  # a CTC module without per-step labels
        raise InputError(f"{data.path}: a module is scored per step: the data needs y_test, or give the model it came "
                         f"from (--labels MODEL.onnx)")
    source = "data" if reference is None else "model"
    metric = _labels.metric_words("token accuracy" if y.ndim == 2 else "accuracy", source)
    with files_named(model_path, data_path), _progress.step("evaluate"):
        if k == "module":
            score = ev.module_scores(proto, data.x_test, threads=threads)
            pred = (score > 0.5).astype(np.int64)
        else:
            pred = ev.predict(proto, data.x_test, threads=threads)
    selected, note = (None, None) if k == "module" else _selection(classes, covered, names, C, model_path)
    if selected is not None:
        y = np.where(np.isin(y, selected), y, -1)
    extra = {}
    if k == "module":
        ci = module_info(proto, str(model_path))["class_index"]
        y = np.where(y >= 0, (y == ci).astype(np.int64), -1)
        C, names = 2, ["rest", names[ci] if ci < len(names) else str(ci)]
        metric = _labels.metric_words("binary accuracy", source)
        extra["auc"] = ev.roc_auc(score[y >= 0], y[y >= 0] == 1)
    shown = None if selected is None else sorted(set(selected))
    scored = (y >= 0) if y.ndim == 1 else (y >= 0).any(axis=tuple(range(1, y.ndim)))
    r = {"model": str(model_path), "kind": k, "metric": metric, "accuracy": ev.accuracy(pred, y),
         "samples": int(scored.sum()), **extra, "per_class": per_class(pred, y, C, names, shown)}
    if selected is not None:
        r["classes"] = [int(c) for c in sorted(set(selected))]
    if reference is not None:
        r["labels"] = "model" if reference is True else str(labels)
    if note:
        r["classes_note"] = note
    return r


def per_class(pred, y, C: int, names, shown=None) -> list[dict]:
    """Accuracy and support of each class of ``shown`` (default: every class, or the classes seen
    when the head is wider than ``classes.LIST_ALL``, an OCR model's characters)."""
    pc = ev.per_class_accuracy(pred, y, C)
    support = np.bincount(y[(y >= 0) & (y < C)].ravel(), minlength=C)
    if shown is None:
        shown = np.flatnonzero(support).tolist() if C > _classes.LIST_ALL else range(C)
    return [{"class": i, "name": names[i] if i < len(names) else str(i), "accuracy": pc[i],
             "support": int(support[i])} for i in shown]


def evaluate_ctc(proto, k, model_path, data, blank, C, names, covered, classes, threads, reference, report_path):
    """``evaluate`` for a CTC model or composition: strings first (string accuracy, CER), then
    per-step scores where the data (or ``--labels``) gives per-step labels. A composition of some
    characters is scored on the test strings that use only them (``--all-classes``: every string)."""
    with files_named(model_path, data.path), _progress.step("evaluate"):
        pred = ev.predict(proto, data.x_test, threads=threads)
    y = data.y_test
    texts = _ctc.Texts(data.path)
    C = max(C, len(texts.charset or []), len(data.class_names or []))  # the head's width, which a composition lacks
    names = data.class_names if data.class_names and len(data.class_names) == C else names
    if not texts.has("test") and y is None:
        raise InputError(f"{data.path}: a CTC {k} is scored on decoded strings: the data needs text_test (and "
                         f"charset), or per-step labels (y_test, or --labels)")
    ref = _ctc.reference(data.path, C if texts.charset is None else len(texts.charset), blank, "test", y)
    keep, note = _strings_kept(ref, texts, classes, covered, names, C, blank, model_path)
    if keep is not None:
        ref, pred = ref.subset(keep), pred[keep]
        y = None if y is None else y[keep]
    got = _ctc.scores(pred, ref)
    r = {"model": str(model_path), "kind": k, "metric": "string accuracy", "accuracy": got["string_accuracy"],
         "samples": got["strings"], "cer": got["cer"], "ctc_blank": blank, "reference": ref.describe(),
         "per_class": []}
    if y is not None:
        words = _labels.metric_words("token accuracy", "data" if reference is None else "model")
        r.update({"metric": words, "accuracy": ev.accuracy(pred, y), "string_accuracy": got["string_accuracy"],
                  "strings": got["strings"], "samples": got["strings"], "per_class": per_class(pred, y, C, names)})
    if reference is not None:
        r["labels"] = "model" if reference is True else "reference model"
    if note:
        r["classes_note"] = note
    return evaluation_report(r, report_path)


def _strings_kept(ref, texts, classes, covered, names, C, blank, model_path) -> tuple:
    """Which test strings a CTC file is scored on (None: every one) and the note saying so:
    those that use only the characters asked for, or only those a composition covers."""
    if isinstance(classes, (list, tuple)):
        chosen = sorted({class_id(c, names, C, model_path) for c in classes} | {blank})
        keep = _ctc.covered(ref, chosen, texts.charset)
        return keep, (f"scored on the {int(keep.sum()):,} test strings that use only the characters asked for "
                      f"(--classes)")
    if classes is None and covered is not None and len(covered) < C:
        keep = _ctc.covered(ref, covered, texts.charset)
        return keep, (f"scored on the {int(keep.sum()):,} of {len(ref):,} test strings that use only the "
                      f"{len(covered) - 1} characters this composition covers; --all-classes scores every string")
    return None, None


def class_id(c, names, C, where) -> int:
    """A class given by name or index, as its index; one UsageError line naming the classes when
    there is no such class."""
    if str(c) in names:
        return names.index(str(c))
    if str(c).isdigit() and int(c) < C:
        return int(c)
    raise UsageError(f"{where}: --classes: no class {c!r} (classes: {', '.join(names[:C])})")


def evaluation_report(result: dict, path) -> dict:
    """``result``, written to ``path`` too (``.md``: Markdown, else self-contained HTML) when given."""
    if path is not None:
        from . import report_html

        text = (rep.evaluation_markdown(result) if Path(path).suffix.lower() == ".md"
                else report_html.evaluation(result))
        write_bytes_atomic(path, text.encode())
        result["report"] = str(path)
    return result
