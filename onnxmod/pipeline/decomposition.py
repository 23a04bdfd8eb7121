"""``decompose``, step by step: options and inputs (``load``), the validation split (``holdout``),
concerns (``identify``), modules (``build``), the report (``describe``), the files (``write``);
encoder-decoder models go to ``translator``."""
from __future__ import annotations

import dataclasses
import logging
import time
import warnings

from .. import classes as _classes
from .. import module_files as _module_files
from .. import search
from ..errors import InputError
from ..io import check_output_dir
from ..modularize import model_digest
from . import build, describe, load
from .holdout import holdout
from .identify import Identified, identify_concerns
from .translator import decompose_translator
from .write import write

_log = logging.getLogger("onnxmod")


def decompose(model_path, data_path, out_dir, o: load.Options) -> dict:
    """Decompose ``model_path`` on ``data_path`` into ``out_dir`` (``api.decompose`` says how);
    returns the report."""
    with load.files_named(model_path, data_path):
        o = load.checked(o)
        out = check_output_dir(out_dir, o.force, inputs=(model_path, data_path))
        t_start = time.perf_counter()
        load.check_limits(o)
        model = load.load_model(model_path)
        o = dataclasses.replace(o, mode=load.resolve_mode(o.mode, model))
        if model.shape == "enc-dec":
            return decompose_translator(model, model_path, data_path, out, o, t_start)
        return _decompose(model, model_path, data_path, out_dir, out, o, t_start)


def _decompose(model, model_path, data_path, out_dir, out, o: load.Options, t_start: float) -> dict:
    """A classifier's or tagger's decomposition, once its options are checked and its model read."""
    run = identify(model, model_path, data_path, o)
    t_id = time.perf_counter()
    model.keep_module_files, line = _module_files.decide(
        o.modules, _module_files.estimate(model, len(run.scores)), model.original.ByteSize(), len(run.scores),
        out_dir)
    if line:
        warnings.warn(line, stacklevel=1)
    vocab = load.vocab_fingerprint(model, run.data)
    digest = model_digest(model.original)
    concerns, modules, composed, size = build.modules_for(model, run, o, vocab, digest)
    nothing = search.nothing_removed(model, concerns, o.config.removal_cap, size)
    fused, reason = build.fused(model, concerns, vocab, digest, compensated=run.means(o.config) is not None)
    t_build = time.perf_counter()
    report = describe.scored(model, run, o, concerns, modules, composed)
    report.update(describe.settings(model_path, data_path, model, run, o, size,
                                    {"file": "fused.onnx"} if fused is not None else {"file": None, "why_not": reason},
                                    nothing))
    describe.flag(report, o)
    report["timings"] = {"trace": run.info["trace_s"], "identify": run.info["identify_s"],
                         "build": t_build - t_id, "evaluate": time.perf_counter() - t_build,
                         "total": time.perf_counter() - t_start}
    write(out, o.force, concerns, modules, composed, report, fused, model.keep_module_files)
    search.warn(report)
    return report


def identify(model, model_path, data_path, o: load.Options) -> Identified:
    """Read the data, hold the validation rows out (guard, size search), identify the concerns of
    the classes asked for, and set what the guard and the size search judge by."""
    data, blank, names, selected = load.load_labelled(model, model_path, data_path, o)
    fit, x_val, y_val, where = ((data, None, None, None) if o.max_loss is None and not o.guarded
                                else holdout(data, o.seed, o.guarded, rows=True))
    _log.info("identifying concerns (%s mode, monitor %s) on %s training rows", o.mode, o.monitor,
              f"{fit.x_train.shape[0]:,}")
    scores, info = identify_concerns(model, fit, o.mode, o.config, o.progress, o.threads, o.monitor,
                                     classes=selected)
    _log.info("identified %s classes in %.1f s (trace %.1f s)", f"{len(scores):,}",
              info["trace_s"] + info["identify_s"], info["trace_s"])
    asked = range(model.num_classes) if selected is None else selected
    skipped = [names[c] for c in asked if info["train_counts"][c] == 0]
    line = _classes.skipped_line(data.path, skipped, len(asked))
    if line:
        warnings.warn(line, stacklevel=1)
    scores = [s for s in scores if info["train_counts"][s.class_index] > 0]
    if not scores:
        raise InputError(f"{data.path}: no class has training samples")
    run = Identified(data, blank, selected, scores, info, skipped)
    subset = o.classes is not None  # (a CTC head's blank gets no module, and is no subset)
    run.metric, run.judged, x_val, y_val, run.ctc_test = search.judges(model, data, blank, x_val, y_val, where,
                                                                       run.built if subset else None)
    if subset:  # a subset is scored on its own classes' samples, as evaluate scores a subset
        y_val = _classes.only(y_val, run.built)
        run.data = dataclasses.replace(data, y_test=_classes.only(data.y_test, run.built))
    run.x_val, run.y_val = x_val, y_val
    run.heldout_split = "x_val" if data.x_val is not None else "10% of x_train"
    return run
