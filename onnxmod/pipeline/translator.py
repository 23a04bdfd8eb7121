"""Decomposing an encoder-decoder model (a translator): one translator module per target language
(``encdec``), guarded by mean BLEU on held-out pairs, judged by BLEU and next-token accuracy."""
from __future__ import annotations

import time
import warnings

from .. import encdec, search
from .. import evaluate as ev
from .. import labels as _labels
from .. import module_files as _module_files
from .. import progress as _progress
from ..compose import compose as compose_protos
from ..errors import UsageError
from ..graph import count_parameters_proto
from ..modularize import model_digest
from .describe import unit_counts
from .write import write


def decompose_translator(model, model_path, data_path, out, o, t_start: float) -> dict:
    """Encoder-decoder models: one translator module per target language (see ``encdec``).
    ``o``: the checked options (``load.Options``, mode resolved); ``out``: the checked output
    directory; ``t_start``: when the run started (the report's timings)."""
    if o.labels == "model":
        _labels.refuse_translator(model_path)
    if o.max_loss is not None:
        raise UsageError(f"{model_path}: --max-loss (the size search) is not supported for encoder-decoder "
                         f"models yet: it certifies accuracy, and a translator is judged by BLEU")
    if o.mode != "rolled":
        raise UsageError(f"{model_path}: unrolled mode is not supported for encoder-decoder models yet "
                         f"(the decoder's per-step state would need the encoder's bridge at every step); use rolled")
    config = o.config
    data = encdec.load_translation_data(data_path, model)
    fit, val, split = encdec.holdout(data, o.seed) if config.guard is not None else (data, None, None)
    scores = encdec.score_languages(model, fit, config, o.threads)
    t_id = time.perf_counter()
    concerns, modules, composed, guard = _guarded(model, scores, config, data, model_digest(model.original), val,
                                                  split)
    nothing = search.nothing_removed(model, concerns, config.removal_cap, guard)
    t_build = time.perf_counter()
    report = _report(model, model_path, data_path, o, data, concerns, modules, composed)
    report.update({"size_search": guard, **({"nothing_removed": nothing} if nothing else {})})
    report["timings"] = {"identify": t_id - t_start, "build": t_build - t_id,
                         "evaluate": time.perf_counter() - t_build, "total": time.perf_counter() - t_start}
    standalone, line = _module_files.decide(o.modules, sum(m.ByteSize() for m in modules),
                                            model.original.ByteSize(), len(modules), out)
    if line:
        warnings.warn(line, stacklevel=1)
    write(out, o.force, concerns, modules, composed, report, standalone=standalone)
    search.warn(report)
    return report


def _guarded(model, scores, config, data, digest, val, split) -> tuple:
    """Every language's translator module and their composition at the removal cap, backed off by
    ``search.guard`` on mean BLEU over the held-out pairs ``val`` (no guard without them):
    ``(concerns, modules, composition, the guard's report entry or None)``."""
    def build(cap):
        concerns = [s.concern(config, cap) for s in scores]
        modules = [encdec.build_translator(model, c, data, digest) for c in _progress.each(concerns, "modules")]
        return concerns, modules, compose_protos(modules, [f"{c.class_name} module" for c in concerns])

    if val is None:
        return (*build(config.removal_cap), None)
    base = encdec.mean_bleu(encdec.bleu(model.runnable, val))
    built, cap, trail = search.guard(search.caps_of(config.removal_cap), build,
                                     lambda cap, b: encdec.mean_bleu(encdec.bleu(b[2], val)), base, config.guard,
                                     "heldout_bleu")
    return (*built, {"kind": "guard", "metric": "mean BLEU over languages", "tolerance_points": config.guard,
                     "cap": cap, "heldout_rows": int(val.y_test.shape[0]), "heldout_model_bleu": base,
                     "trail": trail, "heldout_split": split})


def _report(model, model_path, data_path, o, data, concerns, modules, composed) -> dict:
    """The report (without the guard and the timings): BLEU and next-token accuracy of the model
    and the composition on the test pairs (None, ``{}`` when ``o.evaluate`` is off), per language."""
    mono_bleu = encdec.bleu(model.runnable, data) if o.evaluate else {}
    comp_bleu = encdec.bleu(composed, data) if o.evaluate else {}
    mono_acc = encdec.token_accuracy(model.runnable, data, o.threads) if o.evaluate else None
    comp_acc = encdec.token_accuracy(composed, data, o.threads) if o.evaluate else None
    model_params = model.parameter_count()
    entries = []
    for c, proto in zip(concerns, modules):
        lang = c.class_name
        params = count_parameters_proto(proto)
        # routing sends every sentence into `lang` to this module alone, so the module's own BLEU
        # is the composition's BLEU for its language (no separate decoding needed)
        entries.append({"class": c.class_index, "name": lang, "monolithic_bleu": mono_bleu.get(lang),
                        "composed_bleu": comp_bleu.get(lang), "module_bleu": comp_bleu.get(lang),
                        "delta_bleu": None if lang not in mono_bleu else comp_bleu[lang] - mono_bleu[lang],
                        "params": params, "params_ratio": params / model_params, "jaccard": ev.jaccard(c),
                        "monolithic_accuracy": None, "composed_accuracy": None, "delta": None,
                        "binary_accuracy": None, "auc": None,
                        "kept_units": {op.name: int(c.keep[op.index].sum()) for op in model.recurrent},
                        **unit_counts(model, c)})
    return {"model": str(model_path), "data": str(data_path), "mode": o.mode, "seed": o.seed, "shape": "enc-dec",
            "monitor": "hidden", "config": o.config.as_dict(), "languages": data.languages,
            "monolithic_accuracy": mono_acc, "composed_accuracy": comp_acc,
            "delta": None if mono_acc is None else comp_acc - mono_acc,
            "monolithic_bleu": mono_bleu, "composed_bleu": comp_bleu,
            "delta_bleu": {k: comp_bleu[k] - mono_bleu[k] for k in mono_bleu},
            "num_classes": len(data.languages), "model_params": model_params,
            "composed_params": count_parameters_proto(composed), "modules": entries, "skipped": [],
            "traced_rows": None}
