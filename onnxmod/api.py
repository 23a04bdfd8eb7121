"""The Python API: one function per CLI command (the CLI only parses arguments and prints).

A façade: each function takes a command's arguments and returns its result; the work is done by
the modules named for it — ``pipeline`` (decompose), ``compose``, ``evaluate_file``,
``inspect_file``, ``fingerprint``, ``zoo``. Nothing in ``onnxmod`` but the CLI imports this module.

>>> from onnxmod import api
>>> report = api.decompose("fixtures/math_topics/lstm1.onnx", "fixtures/math_topics/data.npz", "out/")  # doctest: +SKIP
"""
from __future__ import annotations

import onnx

from . import evaluate as ev
from . import evaluate_file as _evaluate_file
from . import inspect_file as _inspect_file
from . import pipeline
from .compose import compose as compose_protos
from .compose import module_info
from .compose import replace as replace_in
from .concern import ConcernConfig
from .errors import InputError, UsageError
from .graph import count_parameters_proto
from .io import check_output_file, load_onnx, save_model_atomic, write_bytes_atomic
from .pipeline import (
    MAX_NAME,
    MODES,
    MONITORS,
    identify_concerns,
    load_dataset_for,
    module_file_names,
    resolve_mode,
    vocab_fingerprint,
)

__all__ = ["MAX_NAME", "MODES", "MONITORS", "compose", "decompose", "evaluate", "fingerprint", "identify_concerns",
           "inspect", "load_dataset_for", "module_file_names", "replace", "resolve_mode", "split", "vocab_fingerprint",
           "zoo_find", "zoo_index"]


def inspect(path) -> dict:
    """What a file is: a model (its recurrent ops and I/O shape), a module or a composition."""
    return _inspect_file.inspect(path)


def decompose(model_path, data_path, out_dir, mode: str = "auto", seed: int = 0,
              config: ConcernConfig | None = None, force: bool = False, progress: bool | None = None,
              threads: int | None = None, monitor: str = "hidden", max_loss: float | None = None,
              evaluate: bool = True, labels: str = "data", classes=None, ctc_blank: int | None = None,
              modules: str = "auto") -> dict:
    """Decompose ``model_path`` into one module per class; write modules, composition and reports.

    ``labels="model"`` takes ``y_*`` from the model's own answers on ``x_*`` (``onnxmod.labels``;
    the data then needs only ``x_train``/``x_test``): reports give agreement with the model.
    ``classes`` (names or indices, a list or ``"a,b"``) builds modules for those classes only
    (negatives still come from every class present); they are scored on their own test samples.
    ``ctc_blank`` (default: the model's ``onnxmod.ctc_blank`` metadata): the model's head is a CTC
    head with this blank (``onnxmod.ctc``): every module keeps the blank's logit, compositions vote
    over it, and the guard, ``max_loss`` and the report judge greedy-decoded strings.
    ``modules``: ``standalone`` writes every module's file, ``none`` only the composition
    (``split`` writes a module on request), ``auto`` standalone unless they would be big
    (``onnxmod.module_files``).

    ``evaluate=False`` skips scoring the model and the composition on the test split (the report's
    accuracies and δ are then None; ``evaluate`` scores the written files later).

    Writes ``out_dir/modules/<class>.onnx``, ``out_dir/composed.onnx``, ``out_dir/report.json`` and
    ``out_dir/report.md`` — all or nothing (the directory appears only when complete).

    ``max_loss`` (accuracy points, e.g. 0.5) turns on the size search (``search.size_search``): per
    class, units and embedding rows are removed while the validation split says the module's AUC
    and the composition's accuracy stay within ``max_loss`` points of keeping everything.

    ``config`` (default ``ConcernConfig()``) is copied with ``seed`` as its sampling seed: the
    caller's object is left as it was. The steps are ``onnxmod.pipeline``'s.
    """
    return pipeline.decompose(model_path, data_path, out_dir, pipeline.Options(
        mode=mode, seed=seed, config=config, force=force, progress=progress, threads=threads, monitor=monitor,
        max_loss=max_loss, evaluate=evaluate, labels=labels, classes=classes, ctc_blank=ctc_blank, modules=modules))


def compose(module_paths, out_path, force: bool = False, allow_mismatch: bool = False, prefer=()) -> dict:
    """Stitch module files into one voting ONNX graph at ``out_path``.

    Modules must share the input signature and vocabulary fingerprint (``allow_mismatch`` skips
    that check); two modules of one class are refused unless ``prefer`` names the winner's path.
    """
    if not module_paths:
        raise UsageError("compose needs at least one module file")
    check_output_file(out_path, force, inputs=module_paths)
    protos = [load_onnx(p) for p in module_paths]
    composed = compose_protos(protos, [str(p) for p in module_paths], allow_mismatch=allow_mismatch,
                              prefer=[str(p) for p in prefer])
    save_model_atomic(composed, out_path)
    kept = ev.describe_classes(composed)
    return {"output": str(out_path), "modules": kept, "parameters": count_parameters_proto(composed)}


def replace(composed_path, module_path, out_path, class_name: str | None = None, force: bool = False,
            allow_mismatch: bool = False) -> dict:
    """Swap one class's module in a composition for ``module_path`` (e.g. from a better model)."""
    check_output_file(out_path, force, inputs=[composed_path, module_path])
    composed = load_onnx(composed_path)
    new = load_onnx(module_path)
    out = replace_in(composed, new, class_name, where=str(composed_path), module_where=str(module_path),
                     allow_mismatch=allow_mismatch)
    save_model_atomic(out, out_path)
    return {"output": str(out_path), "replaced": class_name or module_info(new, str(module_path))["class_name"],
            "modules": ev.describe_classes(out), "parameters": count_parameters_proto(out)}


def split(composed_path, out_path, class_name, force: bool = False) -> dict:
    """Write the module of ``class_name`` (name or index) held in the composition ``composed_path``
    as a standalone module file (what ``decompose --modules standalone`` would have written for it:
    the same outputs)."""
    from .compose import module_position
    from .compose import split as split_protos

    check_output_file(out_path, force, inputs=[composed_path])
    composed = load_onnx(composed_path)
    if ev.kind(composed) not in ("composition", "fused"):
        raise InputError(f"{composed_path}: not an onnxmod composition (it is a {ev.kind(composed)}); split reads "
                         f"the composed.onnx a decomposition writes")
    k = module_position(composed, class_name, str(composed_path)) if ev.kind(composed) == "composition" else 0
    (proto,) = split_protos(composed, str(composed_path), only={k})
    onnx.checker.check_model(proto, full_check=True)
    save_model_atomic(proto, out_path)
    info = module_info(proto, str(out_path))
    return {"output": str(out_path), "class_index": info["class_index"], "class_name": info["class_name"],
            "parameters": count_parameters_proto(proto)}


def evaluate(model_path, data_path, threads: int | None = None, classes=None, report=None,
             force: bool = False, labels: str = "data", ctc_blank: int | None = None) -> dict:
    """Test-split scores of a model, a composition or a module (overall and per class).

    Classifiers report accuracy, taggers token accuracy (``metric``). A module reports its binary
    accuracy and the ROC AUC of its dominant score (``auc``). Translators (encoder-decoder models,
    their modules and compositions) report BLEU per target language from greedy decoding, and
    teacher-forced next-token accuracy.

    ``classes``: None (a composition that covers only some classes is scored on those classes'
    test samples, said in ``classes_note``; anything else on every class), ``"all"`` (every
    class), or a list of class names/indices (only their samples). ``report``: also write the
    result to this file, self-contained HTML (``.html``) or Markdown (``.md``). ``labels``:
    ``"data"`` (``y_test``), ``"model"`` (a model's own answers: it agrees with itself) or the path
    of the model whose answers are the labels (a composition or module against its source model):
    the metric is then agreement with that model. A CTC head (``ctc_blank``, or the file's
    ``onnxmod.ctc_blank``): string accuracy and character error rate of the greedy decoding
    against ``text_test`` (else against the labels' decoding), beside per-step agreement when
    there are per-step labels (``evaluate_file.evaluate_ctc``)."""
    return _evaluate_file.evaluate(model_path, data_path, threads=threads, classes=classes, report=report,
                                   force=force, labels=labels, ctc_blank=ctc_blank)


def fingerprint(paths, out, kind: str = "functional", probes: int = 256, probe_data=None, seed: int = 0,
                chains: int = 8, force: bool = False, ray: bool = False, address: str | None = None,
                progress: bool = False) -> dict:
    """One fingerprint row per file of ``paths`` (in order) written to the ``.npz`` ``out``
    (``fingerprints`` [files, width] float32 NaN-padded, ``widths``, ``files``, ``sha256``, ``kind``,
    ``seed``, ``probes``, ``signature``); see ``onnxmod.fingerprint`` for the kinds. Same files and
    seed give the same bytes; ``ray``/``address`` compute rows as Ray tasks (same result)."""
    from . import fingerprint as _fp

    paths = [str(p) for p in paths]
    extra = list(probe_data) if isinstance(probe_data, (list, tuple)) else ([probe_data] if probe_data else [])
    check_output_file(out, force, inputs=paths + [str(p) for p in extra])
    res = _fp.fingerprint_rows(paths, kind, probes=probes, probe_data=probe_data, seed=seed, chains=chains,
                               progress=progress, ray=ray, address=address)
    write_bytes_atomic(out, _fp.to_npz(res))
    return {"output": str(out), "kind": kind, "files": res["files"], "width": int(res["fingerprints"].shape[1]),
            "probes": None if res["probes"] is None else int(res["probes"].shape[0]), "seed": seed}


def zoo_index(zoo_dir, out, probes: int = 256, seed: int = 0, probe_data=None, force: bool = False,
              ray: bool = False, address: str | None = None, progress: bool = False) -> dict:
    """Decompose every member of ``zoo_dir`` into modules and fingerprint them into the index
    directory ``out`` (``index.json``, ``fingerprints.npz``, ``modules/``); bad members are skipped
    with one warning each and counted (``skipped``)."""
    from . import zoo as _zoo

    return _zoo.build_index(zoo_dir, out, probes=probes, seed=seed, probe_data=probe_data, force=force, ray=ray,
                            address=address, progress=progress)


def zoo_find(index, class_name, signature_of, top: int = 5, task: str | None = None) -> dict:
    """The index's modules of ``class_name`` compatible with ``signature_of`` (same input signature
    and vocabulary; of members trained on ``task`` if given), best first by a label-free quality
    estimate (``onnxmod.zoo``)."""
    from . import zoo as _zoo

    if top < 1:
        raise UsageError(f"--top must be at least 1 (got {top})")
    return _zoo.find(index, str(class_name), signature_of, top=top, task=task)
