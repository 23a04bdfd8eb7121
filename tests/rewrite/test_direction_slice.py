import numpy as np
import pytest
from rewrite_util import I64_MAX, Builder, check_rule, normalized

from onnxmod.rewrite import NoMatch
from onnxmod.rewrite.direction_slice import DirectionSlice

F, H, C = 5, 6, 4


def _dir(b, t, d, axis, gather):
    if gather:
        return b.node("Gather", [t, b.c(np.array(d, np.int64))], axis=axis)
    return b.node("Squeeze", [b.node("Slice", [t, b.i64(d), b.i64(d + 1), b.i64(axis)]), b.i64(axis)])


def bidirectional(op, readout, gather=False):
    """tf2onnx Bidirectional(...): the direction axis sliced, squeezed, concatenated.

    sequences: Y -> per direction Slice(axes=[1]) + Squeeze -> Concat(-1) -> Transpose -> MatMul + Add
    last:      Y -> per direction Slice(axes=[1]) + Squeeze -> Slice(axes=[0]) last / first step
               -> Squeeze -> Concat(1) -> Gemm
    state:     Y_h -> per direction Slice(axes=[0]) + Squeeze -> Concat(1) -> Gemm
    """
    b = Builder()
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    outs = b.recurrent(op, xt, F, H, "bidirectional")
    if readout == "state":
        fw, bw = _dir(b, outs[1], 0, 0, gather), _dir(b, outs[1], 1, 0, gather)
        cat = b.node("Concat", [fw, bw], axis=1)
        b.node("Gemm", [cat, b.c(b.rand(2 * H, C)), b.c(b.rand(C))], ["logits"])
        return b.model("logits", ["batch", C], F)
    fw, bw = _dir(b, outs[0], 0, 1, gather), _dir(b, outs[0], 1, 1, gather)  # [T, B, H]
    if readout == "last":
        fw = b.node("Squeeze", [b.node("Slice", [fw, b.i64(-1), b.i64(I64_MAX), b.i64(0)]), b.i64(0)])
        bw = b.node("Squeeze", [b.node("Slice", [bw, b.i64(0), b.i64(1), b.i64(0)]), b.i64(0)])
        cat = b.node("Concat", [fw, bw], axis=1)
        b.node("Gemm", [cat, b.c(b.rand(2 * H, C)), b.c(b.rand(C))], ["logits"])
        return b.model("logits", ["batch", C], F)
    cat = b.node("Transpose", [b.node("Concat", [fw, bw], axis=-1)], perm=[1, 0, 2])
    b.node("Add", [b.node("MatMul", [cat, b.c(b.rand(2 * H, C))]), b.c(b.rand(C))], ["logits"])
    return b.model("logits", ["batch", "time", C], F)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("readout", ["sequences", "last", "state"])
def test_direction_slices(op, readout, monkeypatch):
    reason, applied, m = check_rule(bidirectional(op, readout), F, monkeypatch, {"direction_slice"})
    assert reason == ""  # the unit flow follows the direction axis as rows; the rule makes the slices plainer
    assert len(applied) == 2
    kinds = [s.kind for s in m.recurrent[0].sites]
    assert kinds.count("select") == 2 and "weight" in kinds


@pytest.mark.parametrize("readout", ["sequences", "state"])
def test_direction_gathers(readout, monkeypatch):
    check_rule(bidirectional("LSTM", readout, gather=True), F, monkeypatch, {"direction_slice"})


def test_refuses_both_directions():
    b = Builder()
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    y = b.recurrent("GRU", xt, F, H, "bidirectional")[0]
    b.node("Slice", [y, b.i64(0), b.i64(2), b.i64(1)], ["logits"])
    graph, applied = normalized(b.model("logits", ["time", 2, "batch", H], F))
    assert applied == []
    node = next(n for n in graph.nodes if n.op == "Slice")
    why = DirectionSlice().match(graph, node)
    assert isinstance(why, NoMatch) and why.reason == "selects 2 directions, not one"
