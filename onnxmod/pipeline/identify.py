"""Identifying concerns: sample the training split, trace the model once, score every unit for
every class (``concern.score_units``), and count the tokens each class's traced samples use (what
the size search prunes the vocabulary by)."""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from ..concern import ConcernConfig, score_units
from ..errors import InputError
from ..graph import Model
from ..io import Dataset
from ..recurrence import verify_forms
from ..sampling import observations_many_output, observations_one_output, trace_rows_many_output, trace_rows_one_output
from ..trace import final_step, gate_activations, run_trace

_log = logging.getLogger("onnxmod")


@dataclasses.dataclass
class Traced:
    """One trace of the training rows the observations need, read for scoring."""

    rows: np.ndarray  # the training rows traced (sorted)
    wanted: list  # the classes to identify
    forms: object  # the recurrences' forms, checked on the traced rows (``verify_forms``)
    means: dict  # per layer: (mean state over every step, mean final/labelled state), for compensation
    hidden: list  # per layer: what is scored, [rows, steps, units]
    observations: Callable  # (class, step) -> (positive, negative) indices into hidden's rows × steps
    class_rows: Callable  # () -> {class: the traced rows of its observations}


def identify_concerns(model: Model, data: Dataset, mode: str, config: ConcernConfig, progress=None,
                      threads: int | None = None, monitor: str = "hidden", classes=None):
    """Sample, trace once, and identify every class's concern. Returns (concerns, info).

    ``monitor='gates'`` decides LSTM/GRU units on their gate activations (rebuilt exactly from the
    traced X and Y) instead of on h. ``classes``: the class indices to identify (default: every
    class with training samples); negatives come from every class present either way. The cost
    is linear in the classes present (``sampling``), not in the head's width.
    """
    gates = monitor == "gates"
    names = model.class_names(data.class_names)
    rules = [op.rule for op in model.recurrent]
    t0 = time.perf_counter()
    trace = _trace_one_output if model.one_output else _trace_many_output
    t = trace(model, data, mode, config.sampling, classes, progress, threads, gates)
    t1 = time.perf_counter()
    _log.info("scoring %s units of %s recurrent layer%s for %s classes", f"{sum(h.shape[-1] for h in t.hidden):,}",
              len(t.hidden), "" if len(t.hidden) == 1 else "s", f"{len(t.wanted):,}")
    scores = score_units(t.hidden, rules, names, config, mode, t.observations, classes=t.wanted)
    for sc in scores:
        _log.debug("class %s: %s positive and %s negative observations", sc.class_name, f"{sc.positives:,}",
                   f"{sc.negatives:,}")
    tokens = token_counts(model, data.x_train[t.rows], t.class_rows())
    t2 = time.perf_counter()
    counts = np.bincount(data.y_train[data.y_train >= 0].ravel(), minlength=model.num_classes)
    return scores, {"traced_rows": int(len(t.rows)), "trace_s": t1 - t0, "identify_s": t2 - t1,
                    "train_counts": counts.tolist(), "class_names": names, "means": t.means, "token_counts": tokens,
                    "forms": t.forms}


def _trace_one_output(model, data, mode, cfg, classes, progress, threads, gates) -> Traced:
    """One answer per sequence: each class's positive and negative rows, traced once; rolled mode
    scores each layer's final state, unrolled mode every step's."""
    empty = (np.empty(0, np.int64), np.empty(0, np.int64))
    per_class = trace_rows_one_output(data.y_train, model.num_classes, cfg)
    wanted = sorted(per_class) if classes is None else [c for c in classes if c in per_class]
    obs_rows = observations_one_output(per_class, cfg, wanted)
    rows = np.unique(np.concatenate([a for pn in obs_rows.values() for a in pn] or [np.empty(0, np.int64)]))
    _log.info("tracing %s training rows (%s classes to identify, %s present)", f"{len(rows):,}",
              f"{len(wanted):,}", f"{len(per_class):,}")
    tr = run_trace(model, data.x_train[rows], progress=progress, threads=threads, inputs=gates)
    forms = verify_forms(model, data.x_train[rows], threads)
    means = {op.index: (h.mean(axis=(0, 1)).reshape(-1).astype(np.float64),
                        final(h, op, n).mean(axis=0).astype(np.float64))
             for op, h, n in zip(model.recurrent, tr.hidden, tr.lengths)}
    if gates:
        hidden = _gates(model, tr, mode, True)
    else:
        hidden = [final(h, op, n)[:, None] if mode == "rolled" else h.reshape(h.shape[0], h.shape[1], -1)
                  for h, op, n in zip(tr.hidden, model.recurrent, tr.lengths)]
    T = hidden[0].shape[1]
    obs = {c: tuple(np.searchsorted(rows, a).astype(np.int64) for a in pn) for c, pn in obs_rows.items()}

    def observations(c, t):
        p, n = obs.get(c, empty)
        return p * T + (t or 0), n * T + (t or 0)

    return Traced(rows, wanted, forms, means, hidden, observations,
                  lambda: {c: np.unique(np.concatenate(pn)) for c, pn in obs.items()})


def _trace_many_output(model, data, mode, cfg, classes, progress, threads, gates) -> Traced:
    """An answer per step: seeded sequences traced once; each class's observations are drawn
    from their labelled steps (per step in unrolled mode)."""
    empty = (np.empty(0, np.int64), np.empty(0, np.int64))
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
            cache[t] = observations_many_output(y, model.num_classes, cfg, step=t, classes=wanted)
        return cache[t].get(c, empty)

    def class_rows():
        T = y.shape[1]
        return {c: np.unique(np.concatenate(observations(c, None)) // T) for c in wanted}

    return Traced(rows, wanted, forms, means, hidden, observations, class_rows)


def _gates(model: Model, tr, mode: str, one_output: bool) -> list[np.ndarray]:
    gates = gate_activations(model, tr)
    if one_output and mode == "rolled":
        gates = [final_step(g, op.reversed_directions(), n)[:, None]
                 for g, op, n in zip(gates, model.recurrent, tr.lengths)]
    return gates


def token_counts(model: Model, x: np.ndarray, class_rows: dict) -> dict | None:
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


def final(h: np.ndarray, op, lengths=None) -> np.ndarray:
    """``[N, T, D, H]`` -> ``[N, D*H]``: each direction's state after the whole (real) sequence."""
    return final_step(h.reshape(h.shape[0], h.shape[1], -1), op.reversed_directions(), lengths)


@dataclasses.dataclass
class Identified:
    """A (non-translator) decomposition after identification: its data, the concerns' scores, and
    the validation rows with what judges them (the guard's and the size search's)."""

    data: Dataset  # the data (a class subset: y_test keeps only the subset's labels)
    blank: int | None  # a CTC head's blank
    selected: list | None  # the class indices asked for (None: every class)
    scores: list  # the classes with training samples (``concern.ClassScores``)
    info: dict  # what ``identify_concerns`` measured
    skipped: list  # the names of the classes asked for without training samples
    x_val: np.ndarray | None = None  # the validation rows (guard, size search)
    y_val: np.ndarray | None = None
    metric: object = None  # what the guard and the size search judge by (None: step accuracy)
    judged: object = None  # ... against what (None: y_val; a CTC head: reference strings)
    ctc_test: object = None  # a CTC head's test reference strings
    heldout_split: str | None = None  # where the validation rows came from, as the report says

    @property
    def built(self) -> list[int]:
        """The class indices that get a module."""
        return [s.class_index for s in self.scores]

    def means(self, config: ConcernConfig) -> dict | None:
        """The layers' mean states when removed units are compensated (``config.compensate``)."""
        return self.info["means"] if config.compensate else None
