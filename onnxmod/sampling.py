"""Seeded sampling of positive and negative observations per class (SPEC §3, step 1).

An *observation* is one (sample, step) pair: for one-output models the step is the output step
(one per sample); for many-output models an input is positive at step t when its label at t is the
class. Padding (label -1) is never sampled. Positives: up to ``positives`` observations of the
class; negatives: ``negatives`` in total, spread evenly over the other classes (ceil(n/(C-1)) each,
fewer when a class has fewer). Every draw comes from ``np.random.default_rng((seed, class, step))``
so results do not depend on the order classes are processed in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class SamplingConfig:
    positives: int = 500
    negatives: int = 500
    max_sequences: int = 2000  # many-output: sequences traced (observations are drawn from them)
    seed: int = 0


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *[k + 1 for k in key]]))


def held_out(n: int, k: int, seed: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows kept for fitting, ``k`` seeded rows held out), both sorted, from ``range(n)``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, salt]))
    val = np.sort(rng.choice(n, size=k, replace=False))
    return np.setdiff1d(np.arange(n), val), val


def _draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if pool.size <= n:
        return pool
    return np.sort(rng.choice(pool, size=n, replace=False))


def trace_rows_one_output(y: np.ndarray, num_classes: int, cfg: SamplingConfig) -> dict[int, np.ndarray]:
    """Per class, the training rows drawn as its positives (one draw serves every class)."""
    return {c: _draw(np.flatnonzero(y == c), cfg.positives, _rng(cfg.seed, c)) for c in range(num_classes)}


def observations_one_output(per_class: dict[int, np.ndarray], cfg: SamplingConfig):
    """Per class c: (positive rows, negative rows), negatives taken from the other classes' draws."""
    C = len(per_class)
    k = math.ceil(cfg.negatives / max(C - 1, 1))
    out = {}
    for c in range(C):
        neg = [per_class[o][:k] for o in range(C) if o != c]
        out[c] = (per_class[c], np.sort(np.concatenate(neg)) if neg else np.empty(0, np.int64))
    return out


def trace_rows_many_output(y: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    """The training sequences to trace for a many-output model (a seeded subset)."""
    return _draw(np.arange(y.shape[0]), cfg.max_sequences, _rng(cfg.seed, 10**6))


def observations_many_output(y: np.ndarray, num_classes: int, cfg: SamplingConfig, step: int | None = None):
    """Per class c: (positive, negative) observations as flat indices into ``y.ravel()``.

    ``y`` is the traced sequences' labels ``[N, T]``. With ``step`` given, only that step counts
    (unrolled mode); otherwise every step does (rolled mode).
    """
    flat = y.ravel()
    T = y.shape[1]
    pos_of_step = np.arange(flat.size) % T
    valid = flat >= 0
    if step is not None:
        valid &= pos_of_step == step
    key = -1 if step is None else step
    pools = {c: np.flatnonzero(valid & (flat == c)) for c in range(num_classes)}
    k = math.ceil(cfg.negatives / max(num_classes - 1, 1))
    draws = {c: _draw(pools[c], cfg.positives, _rng(cfg.seed, c, key)) for c in range(num_classes)}
    out = {}
    for c in range(num_classes):
        neg = [_draw(pools[o], k, _rng(cfg.seed, c, key, o)) for o in range(num_classes) if o != c]
        out[c] = (draws[c], np.sort(np.concatenate(neg)) if neg else np.empty(0, np.int64))
    return out
