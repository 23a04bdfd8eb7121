"""Sampling (``onnxmod.sampling``): seeded, spread over the classes present, linear in their number."""
import math
import tracemalloc

import numpy as np
import pytest

from onnxmod import sampling as S

CFG = S.SamplingConfig()


def _labels(present: int, width: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` labels over ``present`` classes spread across a head of ``width`` classes."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(width, size=present, replace=False))
    return ids[rng.integers(0, present, size=n)]


def test_class_pools_equal_flatnonzero_per_class():
    y = np.array([[2, -1, 0], [2, 5, 0]])
    pools = S.class_pools(y)
    assert sorted(pools) == [0, 2, 5]
    for c, p in pools.items():
        assert p.tolist() == np.flatnonzero(y.ravel() == c).tolist()
    mask = np.zeros_like(y, dtype=bool)
    mask[:, 2] = True
    assert {c: p.tolist() for c, p in S.class_pools(y, mask).items()} == {0: [2, 5]}
    assert S.class_pools(np.full(3, -1)) == {}


def test_negatives_spread_evenly_over_the_other_classes():
    y = _labels(5, 5, 4000)
    per = S.trace_rows_one_output(y, 5, CFG)
    obs = S.observations_one_output(per, CFG)
    k = math.ceil(CFG.negatives / 4)
    for c, (pos, neg) in obs.items():
        assert (y[pos] == c).all() and len(pos) == CFG.positives
        owners, counts = np.unique(y[neg], return_counts=True)
        assert c not in owners and set(counts.tolist()) == {k}  # k from each of the 4 others
        assert np.array_equal(np.sort(neg), neg)


def test_many_classes_each_negative_from_a_different_class_and_linear():
    y = _labels(3000, 8210, 60000)
    per = S.trace_rows_one_output(y, 8210, CFG)
    calls = []

    def block(o, k):
        calls.append(o)
        return per[o][:k]
    present = sorted(per)
    neg = S.negatives_for(present, present, CFG, block)
    assert sorted(calls) == present  # every class's block drawn once, whatever it is a negative of
    for c, rows in neg.items():
        owners = y[rows]
        assert len(rows) == CFG.negatives and c not in owners and len(set(owners.tolist())) == CFG.negatives


def test_sampling_never_builds_a_class_by_class_table():
    y = _labels(8210, 8210, 120000)
    tracemalloc.start()
    per = S.trace_rows_one_output(y, 8210, CFG)
    obs = S.observations_one_output(per, CFG)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(obs) == len(per)
    # the negatives themselves are 8,210 x 500 int64 (33 MB); a class-by-class table would be 539 MB
    assert peak < 80e6, peak
    ym = _labels(8210, 8210, 400 * 40, seed=1).reshape(400, 40)
    tracemalloc.start()
    S.observations_many_output(ym, 8210, CFG)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 80e6, peak


@pytest.mark.parametrize("many", [False, True])
def test_absent_classes_change_nothing_and_subsets_are_restrictions(many):
    present = _labels(67, 8210, 67)  # 67 class ids spread over an 8,210-wide head
    ids = np.unique(present)
    rng = np.random.default_rng(3)
    if many:
        y = ids[rng.integers(0, len(ids), size=(500, 12))]
        y[:, 9:] = -1
        narrow = S.observations_many_output(y, int(ids.max()) + 1, CFG, step=4)
        wide = S.observations_many_output(y, 8210, CFG, step=4)
        some = S.observations_many_output(y, 8210, CFG, step=4, classes=[int(ids[0]), int(ids[5]), 8209])
    else:
        y = ids[rng.integers(0, len(ids), size=6000)]
        narrow = S.observations_one_output(S.trace_rows_one_output(y, int(ids.max()) + 1, CFG), CFG)
        per = S.trace_rows_one_output(y, 8210, CFG)
        wide = S.observations_one_output(per, CFG)
        some = S.observations_one_output(per, CFG, classes=[int(ids[0]), int(ids[5]), 8209])
    assert sorted(wide) == sorted(narrow) == ids.tolist()
    for c in wide:
        assert all(np.array_equal(a, b) for a, b in zip(wide[c], narrow[c]))
    assert sorted(some) == [int(ids[0]), int(ids[5])]  # class 8209 is absent: no observations
    for c in some:
        assert all(np.array_equal(a, b) for a, b in zip(some[c], wide[c]))
