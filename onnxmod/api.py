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
from . import progress as _progress
from . import runtime
from . import report as rep
from . import search
from .ablation import concern_by_effect, unit_effects
from .compose import compose as compose_protos
from .compose import module_info
from .compose import replace as replace_in
import dataclasses

from .concern import ConcernConfig, score_units
from .errors import InputError, UnsupportedModelError, UsageError
from .fuse import fuse, why_not_fusable
from .graph import Model, count_parameters_proto, describe_leniently
from .io import (Dataset, atomic_directory, check_output_dir, check_output_file, input_spec, load_data, load_onnx,
                 save_model_atomic, token_limit, write_bytes_atomic)
from .modularize import build_module, model_digest
from .recurrence import verify_forms
from .sampling import (held_out, observations_many_output, observations_one_output, trace_rows_many_output,
                       trace_rows_one_output)
from .trace import final_step, gate_activations, run_trace

MODES = ("auto", "rolled", "unrolled")


def resolve_mode(mode: str, model: Model) -> str:
    """``auto``: rolled for one-output models and translators, unrolled for many-output models
    (measured: rolled mode costs many-output models far more accuracy, as the paper found)."""
    if mode != "auto":
        return mode
    return "rolled" if model.one_output or model.shape == "enc-dec" else "unrolled"


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
            described = {**Model(proto, source=str(path)).describe(), "decompose": {"ok": True}}
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
            "unrolled": any(isinstance(layer.get("kept"), list) for layer in layers)}


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
                      threads: int | None = None, monitor: str = "hidden"):
    """Sample, trace once, and identify every class's concern. Returns (concerns, info).

    ``monitor='gates'`` decides LSTM/GRU units on their gate activations (rebuilt exactly from the
    traced X and Y) instead of on h.
    """
    gates = monitor == "gates"
    C = model.num_classes
    names = model.class_names(data.class_names)
    cfg = config.sampling
    rules = [op.rule for op in model.recurrent]
    t0 = time.perf_counter()
    if model.one_output:
        per_class = trace_rows_one_output(data.y_train, C, cfg)
        rows = np.unique(np.concatenate(list(per_class.values())))
        position = {int(r): i for i, r in enumerate(rows)}
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
        obs = {c: tuple(np.array([position[int(r)] for r in a], dtype=np.int64) for a in pn)
               for c, pn in observations_one_output(per_class, cfg).items()}

        def observations(c, t):
            p, n = obs[c]
            return p * T + (t or 0), n * T + (t or 0)
    else:
        rows = trace_rows_many_output(data.y_train, cfg)
        y = data.y_train[rows]
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
                cache[t] = observations_many_output(y, C, cfg, step=t)
            return cache[t][c]
    t1 = time.perf_counter()
    scores = score_units(hidden, rules, names, config, mode, observations)
    if model.one_output:
        class_rows = {c: np.unique(np.concatenate(pn)) for c, pn in obs.items()}
    else:
        T = y.shape[1]
        class_rows = {c: np.unique(np.concatenate(observations(c, None)) // T) for c in range(C)}
    tokens = _token_counts(model, data.x_train[rows], class_rows)
    t2 = time.perf_counter()
    counts = np.bincount(data.y_train[data.y_train >= 0].ravel(), minlength=C)
    return scores, {"traced_rows": int(len(rows)), "trace_s": t1 - t0, "identify_s": t2 - t1,
                    "train_counts": counts.tolist(), "class_names": names, "means": means, "token_counts": tokens,
                    "forms": forms}


def _token_counts(model: Model, x: np.ndarray, class_rows: dict) -> np.ndarray | None:
    """``[C, V]``: how often each token occurs in the traced sequences of each class's positive and
    negative observations (what the size search prunes the vocabulary by); None without an embedding."""
    V = model.vocabulary_size()
    if V is None or not np.issubdtype(x.dtype, np.integer):
        return None
    out = np.zeros((len(class_rows), V), dtype=np.int64)
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


def _holdout(data: Dataset, seed: int, guard: bool = False) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The validation split: ``x_val``/``y_val`` when the data has them (at most ``GUARD_ROWS``
    seeded rows for the guard, ``SEARCH_ROWS`` for the size search),
    else a seeded 10 % (200..1500 rows) of the training split, kept out of tracing — optimistic
    when the model has fit its training data. For the guard of a many-output model, only as many
    seeded sequences as hold ``GUARD_LABELS`` labelled steps: it compares the composition with the
    model on the same steps, and each module pass over the split costs a model pass."""
    if data.x_val is not None:
        n = data.y_val.shape[0]
        cap = GUARD_ROWS if guard else SEARCH_ROWS
        rows = np.arange(n) if n <= cap else np.sort(
            np.random.default_rng(np.random.SeedSequence([seed, 7907])).choice(n, cap, replace=False))
        if guard and data.y_val.ndim == 2:
            order = np.random.default_rng(np.random.SeedSequence([seed, 7901])).permutation(rows)
            labelled = np.cumsum((data.y_val[order] >= 0).sum(axis=1))
            rows = np.sort(order[:int(np.searchsorted(labelled, GUARD_LABELS)) + 1])
        return data, data.x_val[rows], data.y_val[rows]
    n = data.y_train.shape[0]
    k = int(min(max(200, 0.1 * n), GUARD_ROWS, n // 2))
    fit, val = held_out(n, k, seed, 7919)
    return (dataclasses.replace(data, x_train=data.x_train[fit], y_train=data.y_train[fit]),
            data.x_train[val], data.y_train[val])


def _build(model, concerns, vocab, digest, unrolled="output", means=None):
    modules = [build_module(model, c, vocab, digest, unrolled, means) for c in _progress.each(concerns, "modules")]
    return modules, compose_protos(modules, [f"{c.class_name} module" for c in concerns])


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
                z: float = LOSS_Z) -> float:
    """An upper bound (one standard error) on the accuracy a changed composition loses against
    ``reference`` on the labelled entries of ``y`` in ``rows`` (a mask like ``y``): the paired
    difference (answers turned wrong minus answers turned right) plus its standard error over n
    labelled answers. Answers within one sequence are not independent (a tagger that misreads a
    sentence misreads several words), so the error is taken over sequences: sqrt(sum over
    sequences of (lost - won)^2) / n — sqrt(changed answers) / n when each sequence has one
    answer. A step that looks harmless only because gains cancel losses on a few hundred rows is
    refused."""
    was, now = (reference == y) & rows, (label == y) & rows
    d = (was & ~now).astype(np.int64) - (~was & now)
    per_sequence = d.reshape(d.shape[0], -1).sum(axis=1)
    n = max(int(rows.sum()), 1)
    return (int(per_sequence.sum()) + z * np.sqrt(float((per_sequence ** 2).sum()))) / n


@_progress.labelled("size search")
def _size_search(model, scores, config, max_loss, x_val, y_val, vocab, digest, threads, means=None,
                 token_counts=None):
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
    (argmax of log-odds), so no composed graph is built during the search."""
    cfg = dataclasses.replace(config, rank_all=True)
    ids = np.array([s.class_index for s in scores])
    names = {s.class_index: s.class_name for s in scores}
    width = model.embedding_width()
    no_features = model.why_not_reducible_embedding()
    ladders = (UNIT_STEPS, VOCAB_STEPS if token_counts is not None else (0.0,),
               (0.0,) if no_features else FEATURE_STEPS)
    valid = y_val >= 0
    half = np.zeros(len(y_val), dtype=bool)
    half[np.random.default_rng(np.random.SeedSequence([config.sampling.seed, 7933])).permutation(len(y_val))[
        :(len(y_val) + 1) // 2]] = True
    rows_a = valid & half[(slice(None),) + (None,) * (valid.ndim - 1)]  # searched half, labelled
    rows_b = valid & ~rows_a  # the half that certifies
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
            margin = lg[..., 1] - lg[..., 0]
            truth = y_val[rows_a] == c.class_index
            auc = ev.roc_auc(margin[rows_a], truth)
            se = None if auc is None else ev.auc_standard_error(auc, int(truth.sum()), int((~truth).sum()))
            cache[j, state] = (c, proto, margin, count_parameters_proto(proto), auc, se)
        return cache[j, state]

    def vote(states) -> np.ndarray:
        return ids[np.stack([module(j, st)[2] for j, st in enumerate(states)], axis=-1).argmax(axis=-1)]

    start = (0,) * len(ladders)
    states = [start] * len(scores)
    reference = final = vote(states)
    base = ev.accuracy(reference, y_val)
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
                acc = ev.accuracy(label[half], y_val[half])
                bound = _loss_bound(label, reference, y_val, rows_a)
            over = None if label is None else search.class_over_bound(label, reference, y_val, rows_a, ids, max_loss,
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
        bound = _loss_bound(final, reference, y_val, rows_b, CERTIFY_Z)
        over = search.class_over_bound(final, reference, y_val, rows_b, ids, max_loss, CERTIFY_Z)
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
        "heldout_accuracy": ev.accuracy(final, y_val),
        "heldout_changed": float((final[valid] != reference[valid]).mean()), "modules_evaluated": len(cache),
        "chosen": [{"class": s.class_name, **_knobs(ladders, st)} for s, st in zip(scores, states)],
        "search_rows": int(half.sum()), "trail": trail, "certification": certified,
        **({"embedding_features_fixed": no_features} if no_features else {})}


def _knobs(ladders, state) -> dict:
    return dict(zip(("units_removed", "vocabulary_removed", "embedding_features_removed"),
                    (ladder[i] for ladder, i in zip(ladders, state))))


@_progress.labelled("guard")
def _guard(model, scores, config, x_val, y_val, vocab, digest, threads, means=None):
    """The reference removal cap, backed off (cap, cap/2, 0) while the validation accuracy of the
    composition drops more than ``config.guard`` points below the model's."""
    base = ev.accuracy(ev.predict(model.runnable, x_val, threads=threads), y_val)
    trail = []
    caps = [config.removal_cap, config.removal_cap / 2, 0.0]
    for cap in caps:
        concerns = [s.concern(config, cap) for s in scores]
        modules, composed = _build(model, concerns, vocab, digest, config.unrolled, means)
        label, _ = ev.predict_composed(composed, x_val, threads=threads)
        acc = ev.accuracy(label, y_val)
        ok = base - acc <= config.guard / 100 or cap == 0.0
        trail.append({"cap": cap, "heldout_accuracy": acc, "accepted": bool(base - acc <= config.guard / 100)})
        if ok:
            break
    return concerns, modules, composed, {"kind": "guard", "tolerance_points": config.guard, "cap": cap,
                                         "heldout_rows": int(len(y_val)), "heldout_model_accuracy": base,
                                         "trail": trail}


def decompose(model_path, data_path, out_dir, mode: str = "auto", seed: int = 0,
              config: ConcernConfig | None = None, force: bool = False, progress: bool | None = None,
              threads: int | None = None, monitor: str = "hidden", max_loss: float | None = None,
              evaluate: bool = True) -> dict:
    """Decompose ``model_path`` into one module per class; write modules, composition and reports.

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
                          max_loss, evaluate)


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
               evaluate) -> dict:
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
    model = Model.load(model_path)
    mode = resolve_mode(mode, model)
    if model.shape == "enc-dec":
        if max_loss is not None:
            raise UsageError(f"{model_path}: --max-loss (the size search) is not supported for encoder-decoder "
                             f"models yet: it certifies accuracy, and a translator is judged by BLEU")
        return _decompose_translator(model, model_path, data_path, out, mode, seed, config, force, threads, t_start,
                                     evaluate)
    data = load_dataset_for(model, data_path)
    guarded = max_loss is None and config.guard is not None
    fit, x_val, y_val = (data, None, None) if max_loss is None and not guarded else _holdout(data, seed, guarded)
    scores, info = identify_concerns(model, fit, mode, config, progress, threads, monitor)
    skipped = [scores[c].class_name for c, n in enumerate(info["train_counts"]) if n == 0]
    for name in skipped:
        warnings.warn(f"{data.path}: class {name!r} has no training samples; no module is built for it")
    scores = [s for s in scores if info["train_counts"][s.class_index] > 0]
    if not scores:
        raise InputError(f"{data.path}: no class has training samples")
    t_id = time.perf_counter()
    vocab = vocab_fingerprint(model, data)
    digest = model_digest(model.original)
    size = None
    means = info["means"] if config.compensate else None
    if max_loss is None and guarded:
        concerns, modules, composed, size = _guard(model, scores, config, x_val, y_val, vocab, digest, threads, means)
        size["heldout_split"] = "x_val" if data.x_val is not None else "10% of x_train"
    elif max_loss is None:
        concerns = [s.concern(config) for s in scores]
        modules, composed = _build(model, concerns, vocab, digest, config.unrolled, means)
    else:
        concerns, modules, composed, size = _size_search(model, scores, config, max_loss / 100, x_val, y_val,
                                                         vocab, digest, threads, means, info["token_counts"])
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
    fused = None if reason else fuse(model, concerns, vocab, digest)
    t_build = time.perf_counter()
    report = (_evaluate_decomposition if evaluate else _describe_decomposition)(
        model, data, concerns, modules, composed, threads)
    report.update({"model": str(model_path), "data": str(data_path), "mode": mode, "seed": seed, "monitor": monitor,
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
    _write(out, force, concerns, modules, composed, report, fused)
    search.warn(report)
    return report


def _decompose_translator(model, model_path, data_path, out, mode, seed, config, force, threads, t_start,
                          evaluate: bool = True) -> dict:
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
    _write(out, force, concerns, modules, composed, report)
    search.warn(report)
    return report


def _write(out, force, concerns, modules, composed, report, fused=None) -> None:
    names = module_file_names([(c.class_index, c.class_name) for c in concerns])
    with atomic_directory(out, force=force, inputs=(report["model"], report["data"])) as tmp:
        (tmp / "modules").mkdir()
        for name, proto, entry in zip(names, modules, report["modules"]):
            entry["file"] = f"modules/{name}.onnx"
            save_model_atomic(proto, tmp / "modules" / f"{name}.onnx")
        save_model_atomic(composed, tmp / "composed.onnx")
        if fused is not None:
            save_model_atomic(fused, tmp / "fused.onnx")
        write_bytes_atomic(tmp / "report.json", rep.dumps(_stable(report)).encode())
        write_bytes_atomic(tmp / "report.md", rep.markdown(report).encode())
        from . import report_html

        write_bytes_atomic(tmp / "report.html", report_html.decomposition(report).encode())


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
        params = count_parameters_proto(proto)
        entries.append({"class": c.class_index, "name": c.class_name, "monolithic_accuracy": None,
                        "composed_accuracy": None, "delta": None, "params": params,
                        "params_ratio": params / model_params, "jaccard": ev.jaccard(c),
                        "binary_accuracy": None, "auc": None, "kept_units": _kept_units(model, c),
                        **_unit_counts(model, c)})
    return {"monolithic_accuracy": None, "composed_accuracy": None, "delta": None,
            "num_classes": model.num_classes, "model_params": model_params,
            "composed_params": count_parameters_proto(composed), "modules": entries}


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


def _is_translator(proto: onnx.ModelProto) -> bool:
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("onnxmod.shape") == "enc-dec":
        return True
    return meta.get("onnxmod.kind", "model") == "model" and len(proto.graph.input) == 2


def evaluate(model_path, data_path, threads: int | None = None, classes=None, report=None,
             force: bool = False) -> dict:
    """Test-split scores of a model, a composition or a module (overall and per class).

    Classifiers report accuracy, taggers token accuracy (``metric``). A module reports its binary
    accuracy and the ROC AUC of its dominant score (``auc``). Translators (encoder-decoder models,
    their modules and compositions) report BLEU per target language from greedy decoding, and
    teacher-forced next-token accuracy.

    ``classes``: None (a composition that covers only some classes is scored on those classes'
    test samples, said in ``classes_note``; anything else on every class), ``"all"`` (every
    class), or a list of class names/indices (only their samples). ``report``: also write the
    result to this file, self-contained HTML (``.html``) or Markdown (``.md``)."""
    if report is not None:
        if Path(report).suffix.lower() not in (".html", ".htm", ".md"):
            raise UsageError(f"{report}: --report writes .html or .md files")
        check_output_file(report, force, inputs=[model_path, data_path])
    proto = load_onnx(model_path)
    k = ev.kind(proto)
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
        data = load_dataset_for(model, data_path, train=False)
        C = model.num_classes
        names = model.class_names(data.class_names)
    else:
        data = load_data(data_path, train=False, **input_spec(proto))  # float-input modules too
        described = ev.describe_classes(proto) if k in ("composition", "fused") else [module_info(proto, str(model_path))]
        C = int(max([c["class_index"] for c in described] + [int(data.y_test.max())]) + 1)
        names = data.class_names or [str(i) for i in range(C)]
        if k != "module":
            covered = sorted({int(c["class_index"]) for c in described})
    y = data.y_test
    metric = "token accuracy" if y.ndim == 2 else "accuracy"
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
        metric = "binary accuracy"
        extra["auc"] = ev.roc_auc(score[y >= 0], y[y >= 0] == 1)
    pc = ev.per_class_accuracy(pred, y, C)
    shown_classes = range(C) if selected is None else sorted(set(selected))
    scored = (y >= 0) if y.ndim == 1 else (y >= 0).any(axis=tuple(range(1, y.ndim)))
    r = {"model": str(model_path), "kind": k, "metric": metric, "accuracy": ev.accuracy(pred, y),
         "samples": int(scored.sum()), **extra,
         "per_class": [{"class": i, "name": names[i] if i < len(names) else str(i), "accuracy": pc[i],
                        "support": int((y == i).sum())} for i in shown_classes]}
    if selected is not None:
        r["classes"] = [int(c) for c in sorted(set(selected))]
    if note:
        r["classes_note"] = note
    return _evaluation_report(r, report)


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
