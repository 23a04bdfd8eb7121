"""The Python API: one function per CLI command (the CLI only parses arguments and prints).

>>> from onnxmod import api
>>> report = api.decompose("fixtures/math_topics/lstm1.onnx", "fixtures/math_topics/data.npz", "out/")  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

from . import evaluate as ev
from . import classes as _classes
from . import ctc as _ctc
from . import labels as _labels
from . import module_files as _module_files
from . import progress as _progress
from . import runtime
from . import report as rep
from . import search
from .ablation import concern_by_effect, unit_effects
from .compose import Stitcher
from .compose import compose as compose_protos
from .compose import module_info
from .compose import replace as replace_in
import dataclasses
import logging

from .concern import ConcernConfig, score_units
from .errors import InputError, UnsupportedModelError, UsageError
from .fuse import fuse, why_not_fusable
from .graph import Model, count_parameters_proto, describe_leniently
from .io import (Dataset, atomic_directory, check_output_dir, check_output_file, input_spec, load_data, load_onnx,
                 save_model_atomic, token_limit, write_bytes_atomic)
from .metrics import StepAccuracy
from .modularize import build_module, model_digest
from .recurrence import verify_forms
from .sampling import (held_out, observations_many_output, observations_one_output, trace_rows_many_output,
                       trace_rows_one_output)
from .trace import final_step, gate_activations, run_trace

MODES = ("auto", "rolled", "unrolled")
_log = logging.getLogger("onnxmod")


def resolve_mode(mode: str, model: Model) -> str:
    """``auto``: rolled for one-output models and translators, unrolled for many-output models
    (measured: rolled mode costs many-output models far more accuracy, as the paper found), unless
    unrolled modules cannot be built for the model (an opset before 13): then rolled, with one
    warning line saying why."""
    if mode != "auto":
        return mode
    if model.one_output or model.shape == "enc-dec":
        return "rolled"
    from .unrolled import why_not_unrolled

    why = why_not_unrolled(model)
    if why:
        warnings.warn(f"{model.source}: --mode auto uses rolled mode: {why}")
        return "rolled"
    return "unrolled"


def _onnx_dtype(model: Model):
    return np.dtype(model.input.dtype) if model.input.dtype is not None else np.dtype(np.int64)


def load_dataset_for(model: Model, data_path, train: bool = True) -> Dataset:
    return load_data(data_path, num_classes=model.num_classes, many_output=not model.one_output,
                     input_dtype=_onnx_dtype(model), input_shape=list(model.input.shape or []) or None,
                     max_token=token_limit(model.original), train=train)


def inspect(path) -> dict:
    """What a file is: a model (its recurrent ops and I/O shape), a module or a composition."""
    proto = load_onnx(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    k = meta.get("onnxmod.kind", "model")
    if k == "model":
        try:
            m = Model(proto, source=str(path))
            from .unrolled import why_not_unrolled

            described = {**m.describe(), "decompose": {"ok": True, "unrolled": why_not_unrolled(m) or True}}
        except (UnsupportedModelError, InputError) as exc:  # readable, but not decomposable: say why
            described = {**describe_leniently(proto, str(path)), "decompose": {"ok": False, "why_not": str(exc)}}
        return {"kind": "model", **described, "metadata": meta}
    out = {"kind": k, "source": str(path), "parameters": count_parameters_proto(proto), "metadata": {}}
    for key, v in meta.items():
        out["metadata"][key] = _json_value(v)
    if k == "module":
        out["modules"] = [_module_summary(meta)]
    elif isinstance(out["metadata"].get("onnxmod.modules"), list):
        out["modules"] = [_module_summary(m) for m in out["metadata"]["onnxmod.modules"] if isinstance(m, dict)]
        # a composition's per-module metadata holds JSON strings: decoded, --json prints no escaped JSON
        out["metadata"]["onnxmod.modules"] = [{key: _json_value(v) for key, v in m.items()} if isinstance(m, dict)
                                              else m for m in out["metadata"]["onnxmod.modules"]]
    return out


def _json_value(v):
    try:
        return json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v
    except ValueError:
        return v


def _module_summary(meta: dict) -> dict:
    """One module's identity for ``inspect``: class, source model, mode, kept/total units per layer."""
    concern = _json_value(meta.get("onnxmod.concern", "{}"))
    layers = concern.get("layers", []) if isinstance(concern, dict) else []
    kept = {}
    for layer in layers:
        k = layer.get("kept")
        kept[layer.get("op")] = round(sum(k) / len(k), 1) if isinstance(k, list) and k else k
    digest = meta.get("onnxmod.source_sha256") or ""
    idx = meta.get("onnxmod.class_index")
    return {"class_index": int(idx) if str(idx).isdigit() else idx, "class_name": meta.get("onnxmod.class_name"),
            "source_model": f"sha256 {digest[:12]}" if digest else None, "mode": meta.get("onnxmod.mode"),
            "kept_units": kept, "units": {layer.get("op"): layer.get("units") for layer in layers},
            "unrolled": any(isinstance(layer.get("kept"), list) for layer in layers),
            "ctc_blank": int(meta["onnxmod.ctc_blank"]) if str(meta.get("onnxmod.ctc_blank", "")).isdigit() else None}


def vocab_fingerprint(model: Model, data: Dataset | None) -> str | None:
    if model.metadata.get("onnxmod.vocab_sha256"):
        return model.metadata["onnxmod.vocab_sha256"]
    if data is not None and data.vocab is not None:
        return hashlib.sha256("\n".join(data.vocab).encode()).hexdigest()
    return None


MAX_NAME = 100  # characters of a class name kept in its module's file name


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._-")[:MAX_NAME].rstrip("._-")
    return s or "class"


def module_file_names(classes) -> list[str]:
    """File names (without ``.onnx``) for ``(class_index, class_name)`` pairs, unique by
    construction: the name made safe (runs of anything but ``A-Za-z0-9_.-`` become ``_``, leading
    and trailing ``._-`` go, at most ``MAX_NAME`` characters, ``class`` if nothing is left) when no
    other class's safe name equals it ignoring case and it does not start with digits and ``_``;
    otherwise ``<class_index>_<safe name>``, whose digits before the first ``_`` are the (unique)
    class index. Checked again here: a repeat is a bug, never a silent overwrite."""
    slugs = [(int(i), _slug(n)) for i, n in classes]
    count: dict = {}
    for _, s in slugs:
        count[s.lower()] = count.get(s.lower(), 0) + 1
    names = [s if count[s.lower()] == 1 and not re.match(r"\d+_", s) else f"{i}_{s}" for i, s in slugs]
    if len({n.lower() for n in names}) != len(names):
        raise RuntimeError(f"module file names repeat: {names}")
    return names


MONITORS = ("hidden", "gates")


def _gates(model: Model, tr, mode: str, one_output: bool) -> list[np.ndarray]:
    gates = gate_activations(model, tr)
    if one_output and mode == "rolled":
        gates = [final_step(g, op.reversed_directions(), n)[:, None]
                 for g, op, n in zip(gates, model.recurrent, tr.lengths)]
    return gates


def identify_concerns(model: Model, data: Dataset, mode: str, config: ConcernConfig, progress=None,
                      threads: int | None = None, monitor: str = "hidden", classes=None):
    """Sample, trace once, and identify every class's concern. Returns (concerns, info).

    ``monitor='gates'`` decides LSTM/GRU units on their gate activations (rebuilt exactly from the
    traced X and Y) instead of on h. ``classes``: the class indices to identify (default: every
    class with training samples); negatives come from every class present either way. The cost
    is linear in the classes present (``sampling``), not in the head's width.
    """
    gates = monitor == "gates"
    C = model.num_classes
    names = model.class_names(data.class_names)
    cfg = config.sampling
    rules = [op.rule for op in model.recurrent]
    t0 = time.perf_counter()
    empty = (np.empty(0, np.int64), np.empty(0, np.int64))
    if model.one_output:
        per_class = trace_rows_one_output(data.y_train, C, cfg)
        wanted = sorted(per_class) if classes is None else [c for c in classes if c in per_class]
        obs_rows = observations_one_output(per_class, cfg, wanted)
        rows = np.unique(np.concatenate([a for pn in obs_rows.values() for a in pn] or [np.empty(0, np.int64)]))
        _log.info("tracing %s training rows (%s classes to identify, %s present)", f"{len(rows):,}",
                  f"{len(wanted):,}", f"{len(per_class):,}")
        tr = run_trace(model, data.x_train[rows], progress=progress, threads=threads, inputs=gates)
        forms = verify_forms(model, data.x_train[rows], threads)
        means = {op.index: (h.mean(axis=(0, 1)).reshape(-1).astype(np.float64),
                            _final(h, op, n).mean(axis=0).astype(np.float64))
                 for op, h, n in zip(model.recurrent, tr.hidden, tr.lengths)}
        if gates:
            hidden = _gates(model, tr, mode, True)
        else:
            hidden = [_final(h, op, n)[:, None] if mode == "rolled" else h.reshape(h.shape[0], h.shape[1], -1)
                      for h, op, n in zip(tr.hidden, model.recurrent, tr.lengths)]
        T = hidden[0].shape[1]
        obs = {c: tuple(np.searchsorted(rows, a).astype(np.int64) for a in pn) for c, pn in obs_rows.items()}

        def observations(c, t):
            p, n = obs.get(c, empty)
            return p * T + (t or 0), n * T + (t or 0)
    else:
        rows = trace_rows_many_output(data.y_train, cfg)
        y = data.y_train[rows]
        present = sorted(np.unique(y[y >= 0]).tolist())
        wanted = present if classes is None else [c for c in classes if c in set(present)]
        _log.info("tracing %s training sequences (%s classes to identify, %s present)", f"{len(rows):,}",
                  f"{len(wanted):,}", f"{len(present):,}")
        tr = run_trace(model, data.x_train[rows], progress=progress, threads=threads, inputs=gates)
        forms = verify_forms(model, data.x_train[rows], threads)
        valid = y >= 0
        means = {op.index: (h.mean(axis=(0, 1)).reshape(-1).astype(np.float64),
                            (h[valid] if valid.any() else h.reshape(-1, *h.shape[2:])).mean(axis=0).reshape(-1)
                            .astype(np.float64)) for op, h in zip(model.recurrent, tr.hidden)}
        hidden = _gates(model, tr, mode, False) if gates else [h.reshape(h.shape[0], h.shape[1], -1) for h in tr.hidden]
        if hidden[0].shape[1] != y.shape[1]:
            raise InputError(f"{data.path}: labels have {y.shape[1]} steps but the model outputs "
                             f"{hidden[0].shape[1]} recurrent steps")
        cache = {}

        def observations(c, t):
            if t not in cache:
                cache[t] = observations_many_output(y, C, cfg, step=t, classes=wanted)
            return cache[t].get(c, empty)
    t1 = time.perf_counter()
    _log.info("scoring %s units of %s recurrent layer%s for %s classes", f"{sum(h.shape[-1] for h in hidden):,}",
              len(hidden), "" if len(hidden) == 1 else "s", f"{len(wanted):,}")
    scores = score_units(hidden, rules, names, config, mode, observations, classes=wanted)
    for sc in scores:
        _log.debug("class %s: %s positive and %s negative observations", sc.class_name, f"{sc.positives:,}",
                   f"{sc.negatives:,}")
    if model.one_output:
        class_rows = {c: np.unique(np.concatenate(pn)) for c, pn in obs.items()}
    else:
        T = y.shape[1]
        class_rows = {c: np.unique(np.concatenate(observations(c, None)) // T) for c in wanted}
    tokens = _token_counts(model, data.x_train[rows], class_rows)
    t2 = time.perf_counter()
    counts = np.bincount(data.y_train[data.y_train >= 0].ravel(), minlength=C)
    return scores, {"traced_rows": int(len(rows)), "trace_s": t1 - t0, "identify_s": t2 - t1,
                    "train_counts": counts.tolist(), "class_names": names, "means": means, "token_counts": tokens,
                    "forms": forms}


def _token_counts(model: Model, x: np.ndarray, class_rows: dict) -> dict | None:
    """Per class identified, ``[V]``: how often each token occurs in the traced sequences of its
    positive and negative observations (what the size search prunes the vocabulary by); None
    without an embedding."""
    V = model.vocabulary_size()
    if V is None or not np.issubdtype(x.dtype, np.integer):
        return None
    out = {}
    for c, r in class_rows.items():
        t = x[r].ravel()
        out[c] = np.bincount(t[(t >= 0) & (t < V)], minlength=V)
    return out


def _final(h: np.ndarray, op, lengths=None) -> np.ndarray:
    """``[N, T, D, H]`` -> ``[N, D*H]``: each direction's state after the whole (real) sequence."""
    return final_step(h.reshape(h.shape[0], h.shape[1], -1), op.reversed_directions(), lengths)


UNIT_STEPS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
VOCAB_STEPS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95)
FEATURE_STEPS = (0.0, 0.25, 0.375, 0.5)  # of the embedding's features (16 -> 12, 10, 8)
LOSS_Z = 1.0  # standard errors added to the paired loss (_loss_bound)
CERTIFY_Z = 1.0  # ... when the half the search never read certifies its result


GUARD_ROWS = 1500
ABLATION_ROWS = 256  # validation rows (of the search half) on which each unit's effect is measured
SEARCH_ROWS = 20000  # the size search reads up to this many validation rows: its certification needs them
GUARD_LABELS = 8000  # the guard reads sequences until this many labelled steps (many-output models)


def _holdout(data: Dataset, seed: int, guard: bool = False, rows: bool = False) -> tuple:
    """The validation split: ``x_val``/``y_val`` when the data has them (at most ``GUARD_ROWS``
    seeded rows for the guard, ``SEARCH_ROWS`` for the size search),
    else a seeded 10 % (200..1500 rows) of the training split, kept out of tracing — optimistic
    when the model has fit its training data. For the guard of a many-output model, only as many
    seeded sequences as hold ``GUARD_LABELS`` labelled steps: it compares the composition with the
    model on the same steps, and each module pass over the split costs a model pass.
    ``rows=True`` also returns which split and rows the validation samples are (a CTC model's
    reference strings follow them)."""
    if data.x_val is not None:
        n = data.y_val.shape[0]
        cap = GUARD_ROWS if guard else SEARCH_ROWS
        picked = np.arange(n) if n <= cap else np.sort(
            np.random.default_rng(np.random.SeedSequence([seed, 7907])).choice(n, cap, replace=False))
        if guard and data.y_val.ndim == 2:
            order = np.random.default_rng(np.random.SeedSequence([seed, 7901])).permutation(picked)
            labelled = np.cumsum((data.y_val[order] >= 0).sum(axis=1))
            picked = np.sort(order[:int(np.searchsorted(labelled, GUARD_LABELS)) + 1])
        return (data, data.x_val[picked], data.y_val[picked]) + ((("val", picked),) if rows else ())
    n = data.y_train.shape[0]
    k = int(min(max(200, 0.1 * n), GUARD_ROWS, n // 2))
    fit, val = held_out(n, k, seed, 7919)
    return (dataclasses.replace(data, x_train=data.x_train[fit], y_train=data.y_train[fit]),
            data.x_train[val], data.y_train[val]) + ((("train", val),) if rows else ())


def _build(model, concerns, vocab, digest, unrolled="output", means=None):
    """Every concern's module and their composition, built one module at a time
    (``compose.Stitcher``): each module is then kept only as a ``module_files.StoredModule`` (its
    bytes when its file will be written, ``model.keep_module_files``), so building K modules of a
    big model holds one module and the composition, not K modules."""
    keep = getattr(model, "keep_module_files", True)
    stitch = Stitcher()
    modules = []
    for c in _progress.each(concerns, "modules"):
        proto = build_module(model, c, vocab, digest, unrolled, means)
        modules.append(_module_files.StoredModule(proto, keep))
        stitch.add(proto, module_info(proto, f"{c.class_name} module"), inplace=True)
        del proto
    _log.info("composing %s modules", f"{len(modules):,}")
    return modules, stitch.finish()


def _vocabulary_mask(counts: np.ndarray, drop: float) -> np.ndarray:
    """Keep all but the ``drop`` fraction of the vocabulary: the rarest tokens in the class's
    traced samples go first (ties: the higher id first); ids 0 and 1 (padding, unknown) stay."""
    V = counts.size
    keep = np.ones(V, dtype=bool)
    n = int(np.floor(drop * V))
    if n == 0:
        return keep
    order = np.lexsort((-np.arange(V), counts))  # ascending count, then descending id
    order = order[~np.isin(order, [0, 1])]
    keep[order[:n]] = False
    return keep


def _loss_bound(label: np.ndarray, reference: np.ndarray, y: np.ndarray, rows: np.ndarray,
                z: float = LOSS_Z, metric=None) -> float:
    """An upper bound (one standard error) on the accuracy a changed composition loses against
    ``reference`` on the labelled entries of ``y`` in ``rows`` (a mask like ``y``): the paired
    difference (answers turned wrong minus answers turned right) plus its standard error over n
    labelled answers. Answers within one sequence are not independent (a tagger that misreads a
    sentence misreads several words), so the error is taken over sequences: sqrt(sum over
    sequences of (lost - won)^2) / n — sqrt(changed answers) / n when each sequence has one
    answer. A step that looks harmless only because gains cancel losses on a few hundred rows is
    refused. ``metric`` says which answers are right (default: label == y; a CTC model: whole
    decoded strings, ``y`` then its reference strings)."""
    metric = metric or StepAccuracy()
    was, now = metric.correct(reference, y) & rows, metric.correct(label, y) & rows
    d = (was & ~now).astype(np.int64) - (~was & now)
    per_sequence = d.reshape(d.shape[0], -1).sum(axis=1)
    n = max(int(rows.sum()), 1)
    return (int(per_sequence.sum()) + z * np.sqrt(float((per_sequence ** 2).sum()))) / n


@_progress.labelled("size search")
def _size_search(model, scores, config, max_loss, x_val, y_val, vocab, digest, threads, means=None,
                 token_counts=None, metric=None, metric_reference=None):
    """Per class, the smallest module the validation split allows (SPEC: size option).

    Each module has three knobs, each a ladder of steps: the fraction of every layer's units
    removed (rolled: least effect on the class's log-odds first, ``ablation.unit_effects``;
    unrolled: lowest score first, all units candidates), the fraction of the vocabulary's embedding
    rows removed (the tokens rarest in the class's traced samples; each then reads the kept row
    nearest to its own) and the fraction of the embedding's features removed (the rest are the
    combinations that lose least of what the first layer sees: ``Model.reduce_embedding``).
    Coordinate ascent: each class in turn takes its next step on a knob while (a) the module's
    validation ROC AUC stays within ``max_loss`` of its keep-everything module's, up to that
    AUC's standard error on the split (Hanley-McNeil: ~0.002 for math_topics' modules, ~0.015
    for Brown genres') and (b) the composition's validation accuracy loss against the
    keep-everything composition, plus one standard error of that paired difference
    (``_loss_bound``), stays within ``max_loss``, and (c) no class's own recall loses more than
    ``max_loss`` beyond its own standard error (``search.class_over_bound``: an overall loss within
    bounds hid Brown POS ``PRT`` losing 15.9 points); a rejected step closes that knob for that
    class. The search reads one seeded half of the validation split; the other half, which no
    choice has seen, then certifies the result: accepted steps are undone, last first, until
    bounds (b) and (c) hold on it too. (Searching and judging on the same rows let the search spend
    gains that were only noise: math_topics ``gru2`` passed at +0.4 on validation and lost 1.6
    points on test.) Each module is evaluated once per step tried (its log-odds cached) and the
    composition's vote is recomputed from the cache exactly as the composed graph computes it
    (argmax of log-odds), so no composed graph is built during the search. ``metric`` and
    ``metric_reference``: what the loss is measured in (``_guard``); the modules' AUCs stay per step."""
    metric = metric or StepAccuracy()
    ref = y_val if metric_reference is None else metric_reference
    cfg = dataclasses.replace(config, rank_all=True)
    ids = np.array([s.class_index for s in scores])
    _log.info("size search: %s classes on %s validation rows (%s)", f"{len(scores):,}", f"{len(y_val):,}",
              metric.name)
    names = {s.class_index: s.class_name for s in scores}
    width = model.embedding_width()
    no_features = model.why_not_reducible_embedding()
    ladders = (UNIT_STEPS, VOCAB_STEPS if token_counts is not None else (0.0,),
               (0.0,) if no_features else FEATURE_STEPS)
    valid = y_val >= 0
    half = np.zeros(len(y_val), dtype=bool)
    half[np.random.default_rng(np.random.SeedSequence([config.sampling.seed, 7933])).permutation(len(y_val))[
        :(len(y_val) + 1) // 2]] = True
    scored = metric.scored(ref)  # the answers the loss counts (steps or samples; a CTC model: strings)
    rows_a = scored & half[(slice(None),) + (None,) * (scored.ndim - 1)]  # searched half, scored
    rows_b = scored & ~rows_a  # the half that certifies
    steps_a = valid & half[(slice(None),) + (None,) * (valid.ndim - 1)]  # per step: modules' AUCs, class recall
    steps_b = valid & ~steps_a
    cache: dict = {}
    effects = None
    if scores[0].mode == "rolled":  # units leave in the order of how little they move the class's log-odds
        probe = np.flatnonzero(half)[:ABLATION_ROWS]
        effects = unit_effects(model, x_val[probe], list(ids), valid[probe], threads)

    def module(j: int, state: tuple):
        if (j, state) not in cache:
            units, rows, features = (ladder[i] for ladder, i in zip(ladders, state))
            c = (concern_by_effect(scores[j], effects, j, units) if effects is not None
                 else scores[j].concern(cfg, units))
            if rows > 0:
                c.vocabulary = _vocabulary_mask(token_counts[c.class_index], rows)
            if features > 0:
                c.embedding_rank = max(1, int(round(width * (1 - features))))
            proto = build_module(model, c, vocab, digest, config.unrolled, means)
            (lg,) = runtime.run_batched(runtime.session(proto, threads=threads), x_val, ["logits"], 512)
            margin = metric.margin(lg)
            truth = y_val[steps_a] == c.class_index
            auc = ev.roc_auc(margin[steps_a], truth)
            se = None if auc is None else ev.auc_standard_error(auc, int(truth.sum()), int((~truth).sum()))
            cache[j, state] = (c, proto, margin, count_parameters_proto(proto), auc, se)
        return cache[j, state]

    def vote(states) -> np.ndarray:
        return metric.vote(ids, np.stack([module(j, st)[2] for j, st in enumerate(states)], axis=-1))

    start = (0,) * len(ladders)
    states = [start] * len(scores)
    reference = final = vote(states)
    base = metric(reference, ref)
    trail = []
    path = [states]  # every accepted state, in order
    open_knobs = {(j, k) for j in range(len(scores)) for k, ladder in enumerate(ladders) if len(ladder) > 1}
    bar = _progress.bar(len(scores) * sum(len(ladder) for ladder in ladders if len(ladder) > 1), unit="steps")
    while open_knobs:
        for j, k in sorted(open_knobs):
            bar.update()
            step = tuple(i + (n == k) for n, i in enumerate(states[j]))
            if step[k] >= len(ladders[k]):
                open_knobs.discard((j, k))
                continue
            b0, cand = module(j, start), module(j, step)
            module_ok = b0[4] is None or cand[4] is None or b0[4] - cand[4] <= max_loss + b0[5]
            trial = states[:j] + [step] + states[j + 1:]
            label = vote(trial) if module_ok else None
            changed = acc = bound = None
            if label is not None:
                changed = float((label[rows_a] != reference[rows_a]).mean())
                acc = metric(label[half], ref[half] if isinstance(ref, np.ndarray) else ref.subset(half))
                bound = _loss_bound(label, reference, ref, rows_a, metric=metric)
            over = None if label is None else search.class_over_bound(label, reference, y_val, steps_a, ids, max_loss,
                                                                       LOSS_Z)
            ok = module_ok and bound <= max_loss and over is None
            trail.append({"class": scores[j].class_name, **_knobs(ladders, step), "module_auc": cand[4],
                          "heldout_changed": changed, "heldout_accuracy": acc, "loss_bound": bound,
                          "class_over_bound": None if over is None else names[over[0]], "accepted": bool(ok)})
            if ok:
                states, final = trial, label
                path.append(states)
            else:
                open_knobs.discard((j, k))
    bar.close()
    certified = []
    for steps in range(len(path) - 1, -1, -1):  # the half the search never saw decides: undo steps until it holds
        states = path[steps]
        final = vote(states)
        bound = _loss_bound(final, reference, ref, rows_b, CERTIFY_Z, metric=metric)
        over = search.class_over_bound(final, reference, y_val, steps_b, ids, max_loss, CERTIFY_Z)
        ok = bound <= max_loss and over is None
        certified.append({"accepted_steps_kept": steps, "loss_bound": bound,
                          "class_over_bound": None if over is None else names[over[0]], "accepted": bool(ok)})
        if ok:
            break
    chosen = [module(j, st) for j, st in enumerate(states)]
    concerns, modules = [c[0] for c in chosen], [c[1] for c in chosen]
    composed = compose_protos(modules, [f"{c.class_name} module" for c in concerns])
    return concerns, modules, composed, {
        "kind": "size search", "heldout_rows": int(len(y_val)), "heldout_keep_all_accuracy": base,
        "heldout_accuracy": metric(final, ref), "metric": metric.name,
        "heldout_changed": float((final[valid] != reference[valid]).mean()), "modules_evaluated": len(cache),
        "chosen": [{"class": s.class_name, **_knobs(ladders, st)} for s, st in zip(scores, states)],
        "search_rows": int(half.sum()), "trail": trail, "certification": certified,
        **({"embedding_features_fixed": no_features} if no_features else {})}


def _knobs(ladders, state) -> dict:
    return dict(zip(("units_removed", "vocabulary_removed", "embedding_features_removed"),
                    (ladder[i] for ladder, i in zip(ladders, state))))


@_progress.labelled("guard")
def _guard(model, scores, config, x_val, y_val, vocab, digest, threads, means=None, metric=None, reference=None):
    """The reference removal cap, backed off (cap, cap/2, 0) while the validation accuracy of the
    composition drops more than ``config.guard`` points below the model's. ``metric(pred,
    reference)`` is what "accuracy" means (``metrics.StepAccuracy`` against ``y_val`` by default;
    a CTC model's ``ctc.StringAccuracy`` against its reference strings)."""
    metric = metric or StepAccuracy()
    reference = y_val if reference is None else reference
    base = metric(ev.predict(model.runnable, x_val, threads=threads), reference)
    trail = []
    caps = [config.removal_cap, config.removal_cap / 2, 0.0]
    _log.info("guard: the model scores %.2f %% (%s) on %s validation rows", 100 * base, metric.name,
              f"{len(x_val):,}")
    for cap in caps:
        concerns = [s.concern(config, cap) for s in scores]
        _log.info("guard: removal cap %g: building %s modules", cap, f"{len(concerns):,}")
        modules, composed = _build(model, concerns, vocab, digest, config.unrolled, means)
        label, _ = ev.predict_composed(composed, x_val, threads=threads)
        acc = metric(label, reference)
        _log.info("guard: removal cap %g: the composition scores %.2f %% (%s)", cap, 100 * acc,
                  "accepted" if base - acc <= config.guard / 100 else "rejected")
        ok = base - acc <= config.guard / 100 or cap == 0.0
        trail.append({"cap": cap, "heldout_accuracy": acc, "accepted": bool(base - acc <= config.guard / 100)})
        if ok:
            break
    return concerns, modules, composed, {"kind": "guard", "tolerance_points": config.guard, "cap": cap,
                                         "heldout_rows": int(len(y_val)), "heldout_model_accuracy": base,
                                         "trail": trail, "metric": metric.name}


def _judges(model, data, blank, x_val, y_val, where, subset):
    """What the guard and the size search judge by, and the test split's CTC reference:
    ``(metric, reference, x_val, y_val, test reference)``. Any head but CTC: step accuracy against
    ``y_val`` (None: the guard's default). A CTC head: string accuracy against the validation
    rows' reference strings (``ctc.reference``); a subset of characters is judged on the strings
    that use only its characters (step accuracy on its steps when there are none)."""
    if blank is None:
        return None, None, x_val, y_val, None
    C = model.num_classes
    test = _ctc.reference(data.path, C, blank, "test", data.y_test)
    if y_val is None:
        return None, None, x_val, y_val, test
    ref = _ctc.reference(data.path, C, blank, where[0], y_val, where[1])
    if subset is not None:
        keep = _ctc.covered(ref, subset, ref.texts.charset if ref.texts else None)
        if not keep.any():
            return None, None, x_val, y_val, test
        ref, x_val, y_val = ref.subset(keep), x_val[keep], y_val[keep]
    return _ctc.StringAccuracy(blank), ref, x_val, y_val, test


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

    ``max_loss`` (accuracy points, e.g. 0.5) turns on the size search (``_size_search``): per class,
    units and embedding rows are removed while the validation split says the module's AUC and the
    composition's accuracy stay within ``max_loss`` points of keeping everything.
    """
    with _files_named(model_path, data_path):
        return _decompose(model_path, data_path, out_dir, mode, seed, config, force, progress, threads, monitor,
                          max_loss, evaluate, {"labels": labels, "classes": classes, "ctc_blank": ctc_blank,
                                               "modules": modules})


@contextlib.contextmanager
def _files_named(model_path, data_path):
    """onnxruntime's refusals (``runtime``) and a few checks do not know which files they ran on:
    name the model (and the data) in front of any InputError that names neither."""
    try:
        yield
    except InputError as exc:
        msg = str(exc)
        if not msg.startswith(tuple({str(p) for f in (model_path, data_path) for p in (f, Path(f))})):
            raise InputError(f"{model_path} (on {data_path}): {msg}") from None
        raise


def _decompose(model_path, data_path, out_dir, mode, seed, config, force, progress, threads, monitor, max_loss,
               evaluate, opts) -> dict:
    """``opts``: issue 21's options (``labels``, ``classes``, ``ctc_blank``, ``modules``)."""
    if mode not in MODES:
        raise UsageError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if monitor not in MONITORS:
        raise UsageError(f"monitor {monitor!r} is not one of {', '.join(MONITORS)}")
    config = config or ConcernConfig()
    config.sampling.seed = seed
    config.validate()
    out = check_output_dir(out_dir, force, inputs=(model_path, data_path))
    t_start = time.perf_counter()
    if max_loss is not None and not 0 <= max_loss <= 100:
        raise UsageError(f"--max-loss {max_loss} is outside 0..100 points")
    _labels.check_source(opts["labels"])
    _module_files.check(opts["modules"])
    _log.info("reading %s (%s MB)", model_path, _mb(model_path))
    model = Model.load(model_path)
    _log.info("model: %s, %s classes, %s, %s parameters", model.shape, f"{model.num_classes:,}",
              ", ".join(f"{op.op_type} {op.name!r} ({op.directions} x {op.hidden_size} units)" for op in model.recurrent),
              f"{model.parameter_count():,}")
    mode = resolve_mode(mode, model)
    if model.shape == "enc-dec" and opts["labels"] == "model":
        _labels.refuse_translator(model_path)
    if model.shape == "enc-dec":
        if max_loss is not None:
            raise UsageError(f"{model_path}: --max-loss (the size search) is not supported for encoder-decoder "
                             f"models yet: it certifies accuracy, and a translator is judged by BLEU")
        return _decompose_translator(model, model_path, data_path, out, mode, seed, config, force, threads, t_start,
                                     evaluate, opts["modules"])
    blank = model.ctc_blank = _ctc.blank_of(opts["ctc_blank"], model, model_path)
    data = _labels.load(model, data_path, opts["labels"], threads=threads, ctc=blank is not None)
    if blank is not None:  # a charset names the characters and fingerprints the output (compose checks it)
        data, model.output_vocab_sha256 = _ctc.named_by_charset(data, model.num_classes, blank)
    names = model.class_names(data.class_names)
    selected = _classes.select(opts["classes"], names, model.num_classes, model_path,
                               exclude=() if blank is None else [blank])
    guarded = max_loss is None and config.guard is not None
    fit, x_val, y_val, where = ((data, None, None, None) if max_loss is None and not guarded
                                else _holdout(data, seed, guarded, rows=True))
    _log.info("identifying concerns (%s mode, monitor %s) on %s training rows", mode, monitor,
              f"{fit.x_train.shape[0]:,}")
    scores, info = identify_concerns(model, fit, mode, config, progress, threads, monitor, classes=selected)
    _log.info("identified %s classes in %.1f s (trace %.1f s)", f"{len(scores):,}",
              info["trace_s"] + info["identify_s"], info["trace_s"])
    asked = range(model.num_classes) if selected is None else selected
    skipped = [names[c] for c in asked if info["train_counts"][c] == 0]
    line = _classes.skipped_line(data.path, skipped, len(asked))
    if line:
        warnings.warn(line)
    scores = [s for s in scores if info["train_counts"][s.class_index] > 0]
    if not scores:
        raise InputError(f"{data.path}: no class has training samples")
    built = [s.class_index for s in scores]
    metric, judged, x_val, y_val, ctc_test = _judges(model, data, blank, x_val, y_val, where,
                                                     built if opts["classes"] is not None else None)
    subset = opts["classes"] is not None  # (a CTC head's blank gets no module, and is no subset)
    if subset:  # a subset is scored on its own classes' samples, as evaluate scores a subset
        y_val = _classes.only(y_val, built)
        data = dataclasses.replace(data, y_test=_classes.only(data.y_test, built))
    t_id = time.perf_counter()
    model.keep_module_files, line = _module_files.decide(
        opts["modules"], _module_files.estimate(model, len(scores)), model.original.ByteSize(), len(scores), out_dir)
    if line:
        warnings.warn(line)
    vocab = vocab_fingerprint(model, data)
    digest = model_digest(model.original)
    size = None
    means = info["means"] if config.compensate else None
    if max_loss is None and guarded:
        concerns, modules, composed, size = _guard(model, scores, config, x_val, y_val, vocab, digest, threads, means,
                                                   metric, judged)
        size["heldout_split"] = "x_val" if data.x_val is not None else "10% of x_train"
    elif max_loss is None:
        concerns = [s.concern(config) for s in scores]
        _log.info("building %s modules (removal cap %g) and their composition", f"{len(concerns):,}",
                  config.removal_cap)
        modules, composed = _build(model, concerns, vocab, digest, config.unrolled, means)
    else:
        concerns, modules, composed, size = _size_search(model, scores, config, max_loss / 100, x_val, y_val,
                                                         vocab, digest, threads, means, info["token_counts"],
                                                         metric, judged)
        size["heldout_split"] = "x_val" if data.x_val is not None else "10% of x_train"
        size["max_loss_points"] = max_loss
        _, reference = _build(model, [s.concern(config) for s in scores], vocab, digest, config.unrolled, means)
        size["reference_cap_params"] = count_parameters_proto(reference)
        if count_parameters_proto(composed) > size["reference_cap_params"] and not search.removes_nothing(concerns):
            warnings.warn(f"--max-loss {max_loss}: the composition ({count_parameters_proto(composed):,} parameters) "
                          f"is bigger than the default removal cap's ({size['reference_cap_params']:,}): the search "
                          f"starts from modules that keep every unit and removes only what the validation split "
                          f"certifies within {max_loss} points")
    nothing = search.nothing_removed(model, concerns, config.removal_cap, size)
    reason = why_not_fusable(model, concerns, compensated=means is not None)
    if reason:
        _log.info("no fused.onnx: %s", reason)
    else:
        _log.info("fusing %s modules into fused.onnx", len(concerns))
    fused = None if reason else fuse(model, concerns, vocab, digest)
    t_build = time.perf_counter()
    if evaluate:
        _log.info("evaluating the model and the composition on %s test rows", f"{data.x_test.shape[0]:,}")
    report = (_evaluate_decomposition if evaluate else _describe_decomposition)(
        model, data, concerns, modules, composed, threads)
    preds = report.pop("_pred_model", None), report.pop("_pred_composed", None)  # a CTC head's answers
    if blank is not None:  # ... decoded into strings (test split), beside the per-step table
        report["ctc"] = {"blank": blank, **(_ctc.report(*preds, ctc_test, built if subset else None)
                                            if evaluate and ctc_test is not None else {})}
    report.update({"model": str(model_path), "data": str(data_path), "labels": opts["labels"], "mode": mode,
                   "seed": seed, "monitor": monitor, "classes": selected if subset else None,
                   "shape": model.shape, "config": config.as_dict(), "traced_rows": info["traced_rows"],
                   "skipped": skipped, "size_search": size, "recurrence_forms": info["forms"],
                   "fused": {"file": "fused.onnx"} if fused is not None else {"file": None, "why_not": reason},
                   **({"nothing_removed": nothing} if nothing else {})})
    if evaluate:
        search.flag_classes(report, max_loss if max_loss is not None else config.guard,
                            f"--max-loss {max_loss} points" if max_loss is not None
                            else f"the guard's {config.guard} points")
    report["timings"] = {"trace": info["trace_s"], "identify": info["identify_s"],
                         "build": t_build - t_id, "evaluate": time.perf_counter() - t_build,
                         "total": time.perf_counter() - t_start}
    _write(out, force, concerns, modules, composed, report, fused, model.keep_module_files)
    search.warn(report)
    return report


def _decompose_translator(model, model_path, data_path, out, mode, seed, config, force, threads, t_start,
                          evaluate: bool = True, module_files: str = "auto") -> dict:
    """Encoder-decoder models: one translator module per target language (see ``encdec``)."""
    from . import encdec

    if mode != "rolled":
        raise UsageError(f"{model_path}: unrolled mode is not supported for encoder-decoder models yet "
                         f"(the decoder's per-step state would need the encoder's bridge at every step); use rolled")
    data = encdec.load_translation_data(data_path, model)
    fit, val, split = encdec.holdout(data, seed) if config.guard is not None else (data, None, None)
    scores = encdec.score_languages(model, fit, config, threads)
    t_id = time.perf_counter()
    digest = model_digest(model.original)
    guard, trail = None, []
    caps = [config.removal_cap] if val is None else [config.removal_cap, config.removal_cap / 2, 0.0]
    base = None if val is None else encdec.mean_bleu(encdec.bleu(model.runnable, val))
    for cap in caps:
        concerns = [s.concern(config, cap) for s in scores]
        modules = [encdec.build_translator(model, c, data, digest) for c in _progress.each(concerns, "modules")]
        composed = compose_protos(modules, [f"{c.class_name} module" for c in concerns])
        if val is None:
            break
        got = encdec.mean_bleu(encdec.bleu(composed, val))
        ok = base - got <= config.guard
        trail.append({"cap": cap, "heldout_bleu": got, "accepted": bool(ok)})
        if ok:
            break
    if val is not None:
        guard = {"kind": "guard", "metric": "mean BLEU over languages", "tolerance_points": config.guard,
                 "cap": cap, "heldout_rows": int(val.y_test.shape[0]), "heldout_model_bleu": base, "trail": trail,
                 "heldout_split": split}
    nothing = search.nothing_removed(model, concerns, config.removal_cap, guard)
    t_build = time.perf_counter()
    mono_bleu = encdec.bleu(model.runnable, data) if evaluate else {}
    comp_bleu = encdec.bleu(composed, data) if evaluate else {}
    mono_acc = encdec.token_accuracy(model.runnable, data, threads) if evaluate else None
    comp_acc = encdec.token_accuracy(composed, data, threads) if evaluate else None
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
                        **_unit_counts(model, c)})
    report = {"model": str(model_path), "data": str(data_path), "mode": mode, "seed": seed, "shape": "enc-dec",
              "monitor": "hidden", "config": config.as_dict(), "languages": data.languages,
              "monolithic_accuracy": mono_acc, "composed_accuracy": comp_acc,
              "delta": None if mono_acc is None else comp_acc - mono_acc,
              "monolithic_bleu": mono_bleu, "composed_bleu": comp_bleu,
              "delta_bleu": {k: comp_bleu[k] - mono_bleu[k] for k in mono_bleu},
              "num_classes": len(data.languages), "model_params": model_params,
              "composed_params": count_parameters_proto(composed), "modules": entries, "skipped": [],
              "traced_rows": None, "size_search": guard, **({"nothing_removed": nothing} if nothing else {})}
    report["timings"] = {"identify": t_id - t_start, "build": t_build - t_id,
                         "evaluate": time.perf_counter() - t_build, "total": time.perf_counter() - t_start}
    standalone, line = _module_files.decide(module_files, sum(m.ByteSize() for m in modules),
                                            model.original.ByteSize(), len(modules), out)
    if line:
        warnings.warn(line)
    _write(out, force, concerns, modules, composed, report, standalone=standalone)
    search.warn(report)
    return report


def _write(out, force, concerns, modules, composed, report, fused=None, standalone: bool = True) -> None:
    """Write the decomposition atomically; ``standalone=False`` (``--modules none``) writes no
    module files (``report.json`` then says ``file: null`` and how to split one out)."""
    names = module_file_names([(c.class_index, c.class_name) for c in concerns])
    report["module_files"] = "standalone" if standalone else "none"
    _log.info("writing %s: %s composed.onnx%s and the reports", out,
              f"{len(modules):,} module files," if standalone else "no module files (--modules none),",
              ", fused.onnx" if fused is not None else "")
    with atomic_directory(out, force=force, inputs=(report["model"], report["data"])) as tmp:
        if standalone:
            (tmp / "modules").mkdir()
        for name, proto, entry in _progress.each(list(zip(names, modules, report["modules"])), "files"):
            entry["file"] = f"modules/{name}.onnx" if standalone else None
            if standalone:
                save_model_atomic(proto, tmp / "modules" / f"{name}.onnx")
        save_model_atomic(composed, tmp / "composed.onnx")
        if fused is not None:
            save_model_atomic(fused, tmp / "fused.onnx")
        write_bytes_atomic(tmp / "report.json", rep.dumps(_stable(report)).encode())
        write_bytes_atomic(tmp / "report.md", rep.markdown(report).encode())
        _log.info("drawing report.html (%s classes)", f"{len(report['modules']):,}")
        from . import report_html

        write_bytes_atomic(tmp / "report.html", report_html.decomposition(report).encode())


def _mb(path) -> str:
    try:
        return f"{Path(path).stat().st_size / 2**20:,.1f}"
    except OSError:
        return "?"


def _stable(report: dict) -> dict:
    """report.json without wall-clock timings would be byte-identical across runs; keep timings
    but round them so the file stays readable."""
    r = dict(report)
    r["timings"] = {k: round(v, 3) for k, v in report["timings"].items()}
    return r


def _describe_decomposition(model: Model, data: Dataset, concerns, modules, composed, threads) -> dict:
    """The report without the test-split evaluation: sizes and kept units only."""
    model_params = model.parameter_count()
    entries = []
    for c, proto in zip(concerns, modules):
        params = getattr(proto, "params", None) or _module_files.parameter_count(proto)
        _log.debug("module %s: %s parameters, kept units %s", c.class_name, f"{params:,}", _kept_units(model, c))
        entries.append({"class": c.class_index, "name": c.class_name, "monolithic_accuracy": None,
                        "composed_accuracy": None, "delta": None, "params": params,
                        "params_ratio": params / model_params, "jaccard": ev.jaccard(c),
                        "binary_accuracy": None, "auc": None, "kept_units": _kept_units(model, c),
                        **_unit_counts(model, c)})
    return {"monolithic_accuracy": None, "composed_accuracy": None, "delta": None,
            "num_classes": model.num_classes, "model_params": model_params,
            "composed_params": _module_files.parameter_count(composed), "modules": entries}


def _kept_units(model: Model, c) -> dict:
    return {op.name: (int(c.keep[op.index].sum()) if c.keep[op.index].ndim == 1 else
                      float(c.keep[op.index].sum(axis=1).mean())) for op in model.recurrent}


def _unit_counts(model: Model, c) -> dict:
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
def _evaluate_decomposition(model: Model, data: Dataset, concerns, modules, composed, threads) -> dict:
    """``_describe_decomposition`` plus the test split's accuracies, δ, and each module's answers."""
    report = _describe_decomposition(model, data, concerns, modules, composed, threads)
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
    from .compose import module_position, split as split_protos

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


def _is_translator(proto: onnx.ModelProto) -> bool:
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("onnxmod.shape") == "enc-dec":
        return True
    return meta.get("onnxmod.kind", "model") == "model" and len(proto.graph.input) == 2


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
    there are per-step labels (``_evaluate_ctc``)."""
    if report is not None:
        if Path(report).suffix.lower() not in (".html", ".htm", ".md"):
            raise UsageError(f"{report}: --report writes .html or .md files")
        check_output_file(report, force, inputs=[model_path, data_path])
    proto = load_onnx(model_path)
    k = ev.kind(proto)
    reference = _labels.reference_model(labels, k, model_path)
    if _is_translator(proto) and labels != "data":
        _labels.refuse_translator(model_path)
    if _is_translator(proto):
        from . import encdec

        model = Model(proto, source=str(model_path)) if k == "model" else None
        data = encdec.load_translation_data(data_path, model)
        with _progress.step("evaluate"):
            b = encdec.bleu(proto, data)
            acc = encdec.token_accuracy(proto, data, threads)
        r = {"model": str(model_path), "kind": k, "metric": "BLEU", "accuracy": acc,
             "samples": int(data.y_test.shape[0]), "bleu": b,
             "per_class": [{"class": i, "name": lang, "accuracy": None, "bleu": b.get(lang),
                            "support": int((data.lang_test == i).sum())} for i, lang in enumerate(data.languages)]}
        return _evaluation_report(r, report)
    covered = None
    if k == "model":
        model = Model(proto, source=str(model_path))
        blank = _ctc.blank_of(ctc_blank, model, model_path)
        data = _labels.load(model, data_path, "data" if reference is None else "model", train=False,
                            threads=threads, runnable=None if reference is True else reference,
                            ctc=blank is not None, optional=blank is not None)
        C = model.num_classes
        names = model.class_names(data.class_names)
    else:
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
    if blank is not None and k != "module":
        return _evaluate_ctc(proto, k, model_path, data, blank, C, names, covered, classes, threads, reference, report)
    y = data.y_test
    if y is None:  # a CTC module without per-step labels
        raise InputError(f"{data.path}: a module is scored per step: the data needs y_test, or give the model it came "
                         f"from (--labels MODEL.onnx)")
    metric = _labels.metric_words("token accuracy" if y.ndim == 2 else "accuracy",
                                  "data" if reference is None else "model")
    with _files_named(model_path, data_path), _progress.step("evaluate"):
        if k == "module":
            score = ev.module_scores(proto, data.x_test, threads=threads)
            pred = (score > 0.5).astype(np.int64)
        else:
            pred = ev.predict(proto, data.x_test, threads=threads)
    note, selected = None, None
    if k != "module":
        if isinstance(classes, (list, tuple)):
            selected = [_class_id(c, names, C, model_path) for c in classes]
        elif classes is None and covered is not None and len(covered) < C:
            selected = covered
            shown = ", ".join(names[c] if c < len(names) else str(c) for c in covered)
            note = (f"scored on the test samples of the {len(covered)} of {C} classes this composition covers "
                    f"({shown}); --all-classes scores every class")
    if selected is not None:
        y = np.where(np.isin(y, selected), y, -1)
    extra = {}
    if k == "module":
        ci = module_info(proto, str(model_path))["class_index"]
        y = np.where(y >= 0, (y == ci).astype(np.int64), -1)
        C, names = 2, ["rest", names[ci] if ci < len(names) else str(ci)]
        metric = _labels.metric_words("binary accuracy", "data" if reference is None else "model")
        extra["auc"] = ev.roc_auc(score[y >= 0], y[y >= 0] == 1)
    pc = ev.per_class_accuracy(pred, y, C)
    support = np.bincount(y[(y >= 0) & (y < C)].ravel(), minlength=C)
    shown_classes = range(C) if selected is None else sorted(set(selected))
    if selected is None and C > _classes.LIST_ALL:  # a wide head (an OCR model's characters): the classes seen
        shown_classes = np.flatnonzero(support).tolist()
    scored = (y >= 0) if y.ndim == 1 else (y >= 0).any(axis=tuple(range(1, y.ndim)))
    r = {"model": str(model_path), "kind": k, "metric": metric, "accuracy": ev.accuracy(pred, y),
         "samples": int(scored.sum()), **extra,
         "per_class": [{"class": i, "name": names[i] if i < len(names) else str(i), "accuracy": pc[i],
                        "support": int(support[i])} for i in shown_classes]}
    if selected is not None:
        r["classes"] = [int(c) for c in sorted(set(selected))]
    if reference is not None:
        r["labels"] = "model" if reference is True else str(labels)
    if note:
        r["classes_note"] = note
    return _evaluation_report(r, report)


def _evaluate_ctc(proto, k, model_path, data, blank, C, names, covered, classes, threads, reference, report_path):
    """``evaluate`` for a CTC model or composition: strings first (string accuracy, CER), then
    per-step scores where the data (or ``--labels``) gives per-step labels. A composition of some
    characters is scored on the test strings that use only them (``--all-classes``: every string)."""
    with _files_named(model_path, data.path), _progress.step("evaluate"):
        pred = ev.predict(proto, data.x_test, threads=threads)
    y = data.y_test
    texts = _ctc.Texts(data.path)
    C = max(C, len(texts.charset or []), len(data.class_names or []))  # the head's width, which a composition lacks
    names = data.class_names if data.class_names and len(data.class_names) == C else names
    if not texts.has("test") and y is None:
        raise InputError(f"{data.path}: a CTC {k} is scored on decoded strings: the data needs text_test (and "
                         f"charset), or per-step labels (y_test, or --labels)")
    ref = _ctc.reference(data.path, C if texts.charset is None else len(texts.charset), blank, "test", y)
    note, keep = None, None
    if isinstance(classes, (list, tuple)):
        chosen = sorted({_class_id(c, names, C, model_path) for c in classes} | {blank})
        keep = _ctc.covered(ref, chosen, texts.charset)
        note = f"scored on the {int(keep.sum()):,} test strings that use only the characters asked for (--classes)"
    elif classes is None and covered is not None and len(covered) < C:
        keep = _ctc.covered(ref, covered, texts.charset)
        note = (f"scored on the {int(keep.sum()):,} of {len(ref):,} test strings that use only the {len(covered) - 1} "
                f"characters this composition covers; --all-classes scores every string")
    if keep is not None:
        ref, pred = ref.subset(keep), pred[keep]
        y = None if y is None else y[keep]
    got = _ctc.scores(pred, ref)
    r = {"model": str(model_path), "kind": k, "metric": "string accuracy", "accuracy": got["string_accuracy"],
         "samples": got["strings"], "cer": got["cer"], "ctc_blank": blank, "reference": ref.describe(),
         "per_class": []}
    if y is not None:
        words = _labels.metric_words("token accuracy", "data" if reference is None else "model")
        pc = ev.per_class_accuracy(pred, y, C)
        support = np.bincount(y[(y >= 0) & (y < C)].ravel(), minlength=C)
        shown = [c for c in range(C) if support[c]] if C > _classes.LIST_ALL else range(C)
        r.update({"metric": words, "accuracy": ev.accuracy(pred, y), "string_accuracy": got["string_accuracy"],
                  "strings": got["strings"], "samples": got["strings"],
                  "per_class": [{"class": i, "name": names[i] if i < len(names) else str(i), "accuracy": pc[i],
                                 "support": int(support[i])} for i in shown]})
    if reference is not None:
        r["labels"] = "model" if reference is True else "reference model"
    if note:
        r["classes_note"] = note
    return _evaluation_report(r, report_path)


def _class_id(c, names, C, where) -> int:
    if str(c) in names:
        return names.index(str(c))
    if str(c).isdigit() and int(c) < C:
        return int(c)
    raise UsageError(f"{where}: --classes: no class {c!r} (classes: {', '.join(names[:C])})")


def _evaluation_report(result: dict, path) -> dict:
    if path is not None:
        from . import report_html

        text = (rep.evaluation_markdown(result) if Path(path).suffix.lower() == ".md"
                else report_html.evaluation(result))
        write_bytes_atomic(path, text.encode())
        result["report"] = str(path)
    return result


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
