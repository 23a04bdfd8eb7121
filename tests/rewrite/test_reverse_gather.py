"""Backward directions an exporter makes by reversing a batch-major input in time (``x[:, ::-1]``
as a Gather of reversed indices or a Slice with step -1), then making it time-major: the op
becomes a reverse op (``reverse_gather``, ``reversed_input`` through the Transpose), and a forward
op and such a reverse one on the same input become one bidirectional op even when each reads its
own time-major copy of the input (``bidirectional_pair``)."""
import copy

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import numpy_helper
from rewrite_util import GATES, Builder, accepted, assert_exact, check_rule, refused_without_rules, rewritten, run

from onnxmod.rewrite import NoMatch
from onnxmod.rewrite.reverse_gather import ReverseGather
from onnxmod.units import UnitSelection

F, H, C, T = 5, 6, 4, 7


def reversed_then_transposed(op, how):
    """x [B, T, F] reversed in time on axis 1, made time-major, read by a forward op; its last step."""
    b = Builder()
    if how == "gather":
        rev = b.node("Gather", ["x", b.c(np.arange(T)[::-1].astype(np.int64))], axis=1)
    else:
        rev = b.node("Slice", ["x", b.i64(-1), b.c(np.array([np.iinfo(np.int64).min])), b.i64(1), b.i64(-1)])
    xt = b.node("Transpose", [rev], perm=[1, 0, 2])
    y = b.node("Squeeze", [b.recurrent(op, xt, F, H)[0], b.i64(1)])
    last = b.node("Gather", [y, b.c(np.array(-1, np.int64))], axis=0)
    b.node("Gemm", [last, b.c(b.rand(H, C)), b.c(b.rand(C))], ["logits"])
    return b.model("logits", ["batch", C], F, x_shape=("batch", T, None))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("how", ["gather", "slice"])
def test_a_reversed_batch_major_input_makes_a_reverse_op(op, how, monkeypatch):
    expect = {"reversed_input"} | ({"reverse_gather"} if how == "gather" else set())
    _, _, m = check_rule(reversed_then_transposed(op, how), F, monkeypatch, expect, lengths=(T,), refused=False)
    assert m.recurrent[0].reversed_directions() == [True]


def flipped_at_both_ends(op):
    """A bidirectional layer written as two forward ops: the backward one reads x flipped in time and
    its output is flipped back (torch's ``flip`` around a cell), the two joined on the unit axis."""
    b = Builder()
    flip = b.node("Slice", ["x", b.i64(-1), b.c(np.array([np.iinfo(np.int64).min])), b.i64(1), b.i64(-1)])
    ys = []
    for name, src in (("fwd", "x"), ("bwd", flip)):
        xt = b.node("Transpose", [src], perm=[1, 0, 2])
        y = b.node("Transpose", [b.node("Squeeze", [b.recurrent(op, xt, F, H, name=name)[0], b.i64(1)])],
                   perm=[1, 0, 2])
        ys.append(y)
    ys[1] = b.node("Slice", [ys[1], b.i64(-1), b.c(np.array([np.iinfo(np.int64).min])), b.i64(1), b.i64(-1)])
    both = b.node("Concat", ys, axis=2)
    last = b.node("Gather", [both, b.c(np.array(-1, np.int64))], axis=1)
    b.node("Gemm", [last, b.c(b.rand(2 * H, C)), b.c(b.rand(C))], ["logits"])
    return b.model("logits", ["batch", C], F)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_directions_flipped_at_both_ends_become_one_bidirectional_op(op, monkeypatch):
    proto = flipped_at_both_ends(op)
    reason = refused_without_rules(proto, monkeypatch)
    assert reason == ""  # the flow follows the two ops' units side by side; the rules make one bidirectional op
    out, applied = rewritten(proto)
    assert {a.rule for a in applied} == {"reversed_input", "bidirectional_pair", "direction_slice"}
    assert_exact(proto, out, F)
    m = accepted(proto)
    (rec,) = m.recurrent
    assert rec.directions == 2 and rec.reversed_directions() == [False, True]
    # removing units of the bidirectional op = zeroing them in the two ops the model wrote
    rng = np.random.default_rng(3)
    keep = [np.sort(rng.choice(H, H // 2, replace=False)) for _ in range(2)]
    zeroed = copy.deepcopy(proto)
    inits = {t.name: t for t in zeroed.graph.initializer}
    G = GATES[op]
    for d, name in enumerate(("fwd", "bwd")):
        gone = np.setdiff1d(np.arange(H), keep[d])
        for i, per in ((1, G), (2, G), (3, 2 * G)):
            t = inits[f"{name}_{'WRB'[i - 1]}"]
            arr = numpy_helper.to_array(t).copy()
            arr[0, (np.arange(per)[:, None] * H + gone[None, :]).reshape(-1)] = 0
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
    m.apply_selection({0: UnitSelection.from_keep(H, keep)})
    x = rng.normal(0, 1, (3, T, F)).astype(np.float32)
    want = run(zeroed, x)[0]
    assert not np.allclose(want, run(proto, x)[0], atol=1e-3)
    np.testing.assert_allclose(run(m.export(), x)[0], want, atol=1e-5)


def test_a_gather_that_is_no_reversal_is_left_alone():
    b = Builder()
    idx = b.c(np.array([6, 5, 4, 3, 2, 0, 1], np.int64))
    b.node("Gather", ["x", idx], ["y"], axis=1)
    proto = b.model("y", ["batch", T, F], F, x_shape=("batch", T, None))
    g = gs.import_onnx(proto)
    got = ReverseGather().match(g, g.nodes[0])
    assert isinstance(got, NoMatch) and "not every position in reverse order" in got.reason
