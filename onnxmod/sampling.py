"""Seeded sampling of positive and negative observations per class (SPEC §3, step 1).

An *observation* is one (sample, step) pair: for one-output models the step is the output step
(one per sample); for many-output models an input is positive at step t when its label at t is the
class. Padding (label -1) is never sampled. Positives: up to ``positives`` observations of the
class; negatives: ``negatives`` in total, spread evenly over the other classes *present* (ceil(n/(P-1))
each, fewer when a class has fewer; one each from ``negatives`` of them when more classes are
present, ``negatives_for``). Every draw comes from ``np.random.default_rng((seed, class, step))``
so results do not depend on the order classes are processed in, nor on classes absent from the
data: the cost is linear in the classes present, whatever the width of the model's head.
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


def class_pools(labels: np.ndarray, mask: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """Per class present in ``labels`` (``-1`` never is), its flat positions in ascending order,
    grouped by one stable sort: O(n log n) whatever the head's width, and classes absent from
    the labels cost nothing (``np.flatnonzero(labels == c)`` for every class c cost O(n) each)."""
    flat = labels.ravel()
    keep = flat >= 0 if mask is None else (flat >= 0) & mask.ravel()
    idx = np.flatnonzero(keep)
    lab = flat[idx]
    order = np.argsort(lab, kind="stable")
    idx, lab = idx[order], lab[order]
    classes, starts = np.unique(lab, return_index=True)
    return dict(zip(classes.tolist(), np.split(idx, starts[1:]))) if classes.size else {}


def negatives_for(present: list[int], classes, cfg: SamplingConfig, block, key: tuple = ()) -> dict[int, np.ndarray]:
    """Per class in ``classes``: its negative observations, spread evenly over the other classes
    in ``present`` (those with any observation). ``block(o, k)`` gives class o's ``k`` negative
    observations; it is asked once per class that contributes, so each class's block serves every
    class it is a negative of.

    While the other classes number at most ``cfg.negatives``, each gives ``k = ceil(negatives /
    (P - 1))`` (P present classes) and a class's negatives are every other class's block. Beyond
    that, ``k = 1`` and a class's negatives are the blocks of the ``cfg.negatives`` classes that
    follow it in one seeded cyclic order of the present classes. Either way each class costs
    O(negatives) and the whole draw O(P * negatives): linear in the classes present, never in the
    head's width, and no P x P table is ever built."""
    present = sorted(present)
    P = len(present)
    k = math.ceil(cfg.negatives / max(P - 1, 1))
    out = {}
    if P - 1 <= cfg.negatives:
        blocks = [np.asarray(block(o, k), dtype=np.int64) for o in present]
        shared = np.concatenate(blocks) if blocks else np.empty(0, np.int64)
        owner = np.repeat(np.asarray(present, dtype=np.int64), [len(b) for b in blocks])
        for c in classes:
            out[c] = np.sort(shared[owner != c])
        return out
    order = np.asarray(present, dtype=np.int64)[_rng(cfg.seed, *key, 10**6 + 3).permutation(P)]
    where = {int(c): i for i, c in enumerate(order)}
    firsts = np.array([np.asarray(block(int(o), 1), dtype=np.int64)[0] for o in order], dtype=np.int64)
    follow = 1 + np.arange(cfg.negatives)
    for c in classes:
        out[c] = np.sort(firsts[(where[c] + follow) % P])
    return out


def trace_rows_one_output(y: np.ndarray, num_classes: int, cfg: SamplingConfig) -> dict[int, np.ndarray]:
    """Per class present in ``y``, the training rows drawn as its positives (one draw serves every
    class: a class's first rows are also its negative block, ``observations_one_output``)."""
    return {c: _draw(p, cfg.positives, _rng(cfg.seed, c)) for c, p in class_pools(y).items() if c < num_classes}


def observations_one_output(per_class: dict[int, np.ndarray], cfg: SamplingConfig, classes=None):
    """Per class c (of ``classes``; default: every class with rows): (positive rows, negative rows),
    negatives taken from the other classes' draws (their first rows; ``negatives_for``)."""
    present = [c for c, rows in per_class.items() if len(rows)]
    wanted = present if classes is None else [c for c in classes if c in present]
    neg = negatives_for(present, wanted, cfg, lambda o, k: per_class[o][:k])
    return {c: (per_class[c], neg[c]) for c in wanted}


def trace_rows_many_output(y: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    """The training sequences to trace for a many-output model (a seeded subset)."""
    return _draw(np.arange(y.shape[0]), cfg.max_sequences, _rng(cfg.seed, 10**6))


def observations_many_output(y: np.ndarray, num_classes: int, cfg: SamplingConfig, step: int | None = None,
                             classes=None):
    """Per class c (of ``classes``; default: every class present): (positive, negative)
    observations as flat indices into ``y.ravel()``; a class absent (at this step) is left out.

    ``y`` is the traced sequences' labels ``[N, T]``. With ``step`` given, only that step counts
    (unrolled mode); otherwise every step does (rolled mode). Each present class draws one
    negative block (seeded by class and step) that serves as its share of every other class's
    negatives (``negatives_for``)."""
    mask = None
    if step is not None:
        mask = np.zeros(y.shape, dtype=bool)
        mask[:, step] = True
    key = -1 if step is None else step
    pools = {c: p for c, p in class_pools(y, mask).items() if c < num_classes}
    wanted = sorted(pools) if classes is None else [c for c in classes if c in pools]
    pos = {c: _draw(pools[c], cfg.positives, _rng(cfg.seed, c, key)) for c in wanted}
    neg = negatives_for(list(pools), wanted, cfg, lambda o, k: _draw(pools[o], k, _rng(cfg.seed, o, key, 10**6 + 1)),
                        key=(key,))
    return {c: (pos[c], neg[c]) for c in wanted}
