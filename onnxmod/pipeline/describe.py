"""A decomposition's report: what each module kept, and (unless ``evaluate=False``) how the model
and the composition score on the test split, per class; a CTC head's strings besides."""
from __future__ import annotations

import logging

import numpy as np

from .. import ctc as _ctc
from .. import evaluate as ev
from .. import module_files as _module_files
from .. import progress as _progress
from .. import search
from ..graph import Model
from ..io import Dataset

_log = logging.getLogger("onnxmod")


def describe_decomposition(model: Model, data: Dataset, concerns, modules, composed, threads) -> dict:
    """The report without the test-split evaluation: sizes and kept units only."""
    model_params = model.parameter_count()
    entries = []
    for c, proto in zip(concerns, modules):
        params = getattr(proto, "params", None) or _module_files.parameter_count(proto)
        _log.debug("module %s: %s parameters, kept units %s", c.class_name, f"{params:,}", kept_units(model, c))
        entries.append({"class": c.class_index, "name": c.class_name, "monolithic_accuracy": None,
                        "composed_accuracy": None, "delta": None, "params": params,
                        "params_ratio": params / model_params, "jaccard": ev.jaccard(c),
                        "binary_accuracy": None, "auc": None, "kept_units": kept_units(model, c),
                        **unit_counts(model, c)})
    return {"monolithic_accuracy": None, "composed_accuracy": None, "delta": None,
            "num_classes": model.num_classes, "model_params": model_params,
            "composed_params": _module_files.parameter_count(composed), "modules": entries}


def kept_units(model: Model, c) -> dict:
    """Per layer: the units the concern keeps (unrolled: the mean over steps)."""
    return {op.name: (int(c.keep[op.index].sum()) if c.keep[op.index].ndim == 1 else
                      float(c.keep[op.index].sum(axis=1).mean())) for op in model.recurrent}


def unit_counts(model: Model, c) -> dict:
    """What the reports draw: every layer's unit count; which units the class drops (ids, per
    layer: the units × classes map) and, unrolled, at how many steps it drops each of them and the
    units kept at each step."""
    out = {"units": {op.name: int(c.keep[op.index].shape[-1]) for op in model.recurrent}}
    dropped = {op.name: (~np.atleast_2d(c.keep[op.index])).sum(axis=0) for op in model.recurrent}
    out["dropped_units"] = {name: [int(u) for u in np.flatnonzero(d)] for name, d in dropped.items()}
    if any(c.keep[op.index].ndim == 2 for op in model.recurrent):
        out["dropped_unit_steps"] = {name: [int(v) for v in d[d > 0]] for name, d in dropped.items()}
        out["kept_units_per_step"] = {op.name: [int(v) for v in np.atleast_2d(c.keep[op.index]).sum(axis=1)]
                                      for op in model.recurrent}
    return out


@_progress.labelled("evaluate")
def evaluate_decomposition(model: Model, data: Dataset, concerns, modules, composed, threads) -> dict:
    """``describe_decomposition`` plus the test split's accuracies, δ, and each module's answers."""
    report = describe_decomposition(model, data, concerns, modules, composed, threads)
    x, y = data.x_test, data.y_test
    mono = ev.predict(model.runnable, x, threads=threads)
    comp, scores = ev.predict_composed(composed, x, threads=threads)
    mono_pc = ev.per_class_accuracy(mono, y, model.num_classes)
    comp_pc = ev.per_class_accuracy(comp, y, model.num_classes)
    errors = search.class_losses(comp, mono, y, y >= 0, [c.class_index for c in concerns])  # each δ's error
    for j, (c, entry) in enumerate(zip(concerns, report["modules"])):
        k = c.class_index
        # a module says "dominant" exactly when its 2-way softmax gives the dominant side > 0.5:
        # the composition's scores already hold every module's answer (no extra pass per module)
        binary = (scores[..., j] > 0.5).astype(np.int64)
        truth = np.where(y >= 0, (y == k).astype(np.int64), -1)
        entry.update({"monolithic_accuracy": mono_pc[k], "composed_accuracy": comp_pc[k],
                      "delta": None if mono_pc[k] is None else comp_pc[k] - mono_pc[k],
                      "delta_se": errors[k][1] if k in errors else None,
                      "binary_accuracy": ev.accuracy(binary, truth),
                      "auc": ev.roc_auc(scores[..., j][y >= 0], y[y >= 0] == k)})
    ma, ca = ev.accuracy(mono, y), ev.accuracy(comp, y)
    report.update({"monolithic_accuracy": ma, "composed_accuracy": ca, "delta": ca - ma})
    if getattr(model, "ctc_blank", None) is not None:  # the strings are scored from the same answers
        report.update({"_pred_model": mono, "_pred_composed": comp})
    return report


def scored(model: Model, run, o, concerns, modules, composed) -> dict:
    """The report's modules and scores (``evaluate_decomposition``, or ``describe_decomposition``
    when ``o.evaluate`` is off); a CTC head's decoded strings on the test split beside them."""
    data = run.data
    if o.evaluate:
        _log.info("evaluating the model and the composition on %s test rows", f"{data.x_test.shape[0]:,}")
    report = (evaluate_decomposition if o.evaluate else describe_decomposition)(
        model, data, concerns, modules, composed, o.threads)
    preds = report.pop("_pred_model", None), report.pop("_pred_composed", None)  # a CTC head's answers
    if run.blank is not None:  # ... decoded into strings (test split), beside the per-step table
        subset = o.classes is not None
        report["ctc"] = {"blank": run.blank, **(_ctc.report(*preds, run.ctc_test, run.built if subset else None)
                                                if o.evaluate and run.ctc_test is not None else {})}
    return report


def settings(model_path, data_path, model: Model, run, o, size, fused, nothing) -> dict:
    """What the report says about the run: its inputs and options, the size search's or guard's
    entry (``size``), the fused file (``fused``: its entry) and why nothing was removed."""
    return {"model": str(model_path), "data": str(data_path), "labels": o.labels, "mode": o.mode,
            "seed": o.seed, "monitor": o.monitor, "classes": run.selected if o.classes is not None else None,
            "shape": model.shape, "config": o.config.as_dict(), "traced_rows": run.info["traced_rows"],
            "skipped": run.skipped, "size_search": size, "recurrence_forms": run.info["forms"],
            "fused": fused, **({"nothing_removed": nothing} if nothing else {})}


def flag(report: dict, o) -> None:
    """Classes whose test loss lies far beyond the size search's or the guard's bound
    (``search.flag_classes``), when the report has test scores."""
    if not o.evaluate:
        return
    search.flag_classes(report, o.max_loss if o.max_loss is not None else o.config.guard,
                        f"--max-loss {o.max_loss} points" if o.max_loss is not None
                        else f"the guard's {o.config.guard} points")
