import numpy as np
import pytest
from onnx import TensorProto, helper
from rewrite_util import Builder, check_rule, normalized

from onnxmod.graph import Model
from onnxmod.rewrite import NoMatch
from onnxmod.rewrite.reverse_sequence import ReverseSequence

F, H, C = 5, 6, 4


def full_lengths(b, t, how):
    """sequence_lens = the length of every row, as exporters compute it from Shape."""
    shp = b.node("Shape", [t])
    T = b.node("Slice", [shp, b.i64(0), b.i64(1), b.i64(0)])
    B = b.node("Slice", [shp, b.i64(1), b.i64(2), b.i64(0)])
    if how == "expand":
        return b.node("Expand", [T, B])
    if how == "tile":
        return b.node("Cast", [b.node("Tile", [T, B])], to=TensorProto.INT64)
    raise ValueError(how)


def go_backwards(op, how="expand", readout="last"):
    """Keras go_backwards / tf2onnx backward direction: ReverseSequence then a forward op.

    last:      Y -> Squeeze -> Gather(axis 0, -1) -> Gemm            (the state after all steps)
    sequences: Y -> Squeeze -> ReverseSequence back -> Transpose -> MatMul + Add
    """
    b = Builder()
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    lens = full_lengths(b, xt, how)
    rev = b.node("ReverseSequence", [xt, lens], time_axis=0, batch_axis=1)
    y = b.node("Squeeze", [b.recurrent(op, rev, F, H)[0], b.i64(1)])
    if readout == "last":
        last = b.node("Gather", [y, b.c(np.array(-1, np.int64))], axis=0)
        b.node("Gemm", [last, b.c(b.rand(H, C)), b.c(b.rand(C))], ["logits"])
        return b.model("logits", ["batch", C], F)
    back = b.node("ReverseSequence", [y, full_lengths(b, y, how)], time_axis=0, batch_axis=1)
    yb = b.node("Transpose", [back], perm=[1, 0, 2])
    b.node("Add", [b.node("MatMul", [yb, b.c(b.rand(H, C))]), b.c(b.rand(C))], ["logits"])
    return b.model("logits", ["batch", "time", C], F)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("readout", ["last", "sequences"])
def test_go_backwards_becomes_a_reverse_op(op, readout, monkeypatch):
    # the last-step readout was accepted already (the reversal is upstream of the op): the rewrite
    # only makes the op say what it computes; reading Y back in input order was refused
    reason, applied, m = check_rule(go_backwards(op, readout=readout), F, monkeypatch,
                                    {"reverse_sequence", "reversed_input"}, refused=readout == "sequences")
    if readout == "sequences":
        assert reason == ""  # ReverseSequence acts on each unit on its own: followed; the rule makes a reverse op
    assert m.recurrent[0].handler.direction(m.recurrent[0].node) == "reverse"
    assert not any(n.op == "ReverseSequence" for n in m.graph.nodes)


def test_lengths_tiled_and_cast(monkeypatch):
    check_rule(go_backwards("LSTM", how="tile", readout="sequences"), F, monkeypatch,
               {"reverse_sequence", "reversed_input"})


def test_refuses_lengths_given_as_an_input():
    # reading Y back with per-row lengths (a variable-length batch) is not a plain reversal
    b = Builder()
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    y = b.node("Squeeze", [b.recurrent("GRU", xt, F, H)[0], b.i64(1)])
    back = b.node("ReverseSequence", [y, "lens"], time_axis=0, batch_axis=1)
    yb = b.node("Transpose", [back], perm=[1, 0, 2])
    b.node("Add", [b.node("MatMul", [yb, b.c(b.rand(H, C))]), b.c(b.rand(C))], ["logits"])
    proto = b.model("logits", ["batch", "time", C], F,
                    extra_inputs=[helper.make_tensor_value_info("lens", TensorProto.INT64, ["batch"])])
    graph, applied = normalized(proto)
    assert applied == []
    node = next(n for n in graph.nodes if n.op == "ReverseSequence")
    why = ReverseSequence().match(graph, node)
    assert isinstance(why, NoMatch) and why.reason == "sequence_lens is not provably the full length of every row"
    m = Model(proto, source="lens.onnx")  # not a reverse op, but followed: it acts on each unit on its own
    assert not m.widened() and any(s.kind == "weight" for s in m.sites)
