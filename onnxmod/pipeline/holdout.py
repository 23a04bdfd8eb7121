"""The validation split a decomposition's guard or size search reads, kept out of tracing.

Every choice of rows is seeded by the decomposition's seed and a salt of its own (below), so the
same seed picks the same rows, and two choices never share one random stream.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..io import Dataset
from ..sampling import held_out

GUARD_ROWS = 1500  # the guard reads at most this many seeded validation rows: it only compares caps
SEARCH_ROWS = 20000  # the size search reads up to this many validation rows: its certification needs them
GUARD_LABELS = 8000  # the guard reads sequences until this many labelled steps (many-output models)
SALT_VAL_ROWS = 7907  # seed salt: which rows of x_val, when it has more than the cap
SALT_GUARD_ORDER = 7901  # seed salt: the order a many-output model's guard reads validation sequences in
SALT_TRAIN_ROWS = 7919  # seed salt: which rows of x_train are held out when the data has no x_val


def holdout(data: Dataset, seed: int, guard: bool = False, rows: bool = False) -> tuple:
    """The validation split: ``x_val``/``y_val`` when the data has them (at most ``GUARD_ROWS``
    seeded rows for the guard, ``SEARCH_ROWS`` for the size search),
    else a seeded 10 % (200..1500 rows) of the training split, kept out of tracing — optimistic
    when the model has fit its training data. For the guard of a many-output model, only as many
    seeded sequences as hold ``GUARD_LABELS`` labelled steps: it compares the composition with the
    model on the same steps, and each module pass over the split costs a model pass.
    Returns ``(the data to trace, x_val, y_val)``; ``rows=True`` also returns which split and rows
    the validation samples are (a CTC model's reference strings follow them)."""
    if data.x_val is not None:
        n = data.y_val.shape[0]
        cap = GUARD_ROWS if guard else SEARCH_ROWS
        picked = np.arange(n) if n <= cap else np.sort(
            np.random.default_rng(np.random.SeedSequence([seed, SALT_VAL_ROWS])).choice(n, cap, replace=False))
        if guard and data.y_val.ndim == 2:
            order = np.random.default_rng(np.random.SeedSequence([seed, SALT_GUARD_ORDER])).permutation(picked)
            labelled = np.cumsum((data.y_val[order] >= 0).sum(axis=1))
            picked = np.sort(order[:int(np.searchsorted(labelled, GUARD_LABELS)) + 1])
        return (data, data.x_val[picked], data.y_val[picked]) + ((("val", picked),) if rows else ())
    n = data.y_train.shape[0]
    k = int(min(max(200, 0.1 * n), GUARD_ROWS, n // 2))
    fit, val = held_out(n, k, seed, SALT_TRAIN_ROWS)
    return (dataclasses.replace(data, x_train=data.x_train[fit], y_train=data.y_train[fit]),
            data.x_train[val], data.y_train[val]) + ((("train", val),) if rows else ())
