import numpy as np
import pytest
from rewrite_util import Builder, check_rule, normalized

from onnxmod.rewrite import NoMatch
from onnxmod.rewrite.reversed_input import ReversedInput

F, H, C = 5, 6, 4


INT64_MIN = int(np.iinfo(np.int64).min)


def reversed_input(op, end=INT64_MIN, direction="forward"):
    """A forward op reading its input reversed by a Slice with step -1; M:N readout."""
    b = Builder()
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    rev = b.node("Slice", [xt, b.i64(-1), b.i64(end), b.i64(0), b.i64(-1)])
    y = b.recurrent(op, rev, F, H, direction)[0]
    D = 2 if direction == "bidirectional" else 1
    y = b.node("Reshape", [b.node("Transpose", [y], perm=[0, 2, 1, 3]), b.i64(0, 0, D * H)])
    yb = b.node("Transpose", [y], perm=[1, 0, 2])
    b.node("Add", [b.node("MatMul", [yb, b.c(b.rand(D * H, C))]), b.c(b.rand(C))], ["logits"])
    return b.model("logits", ["batch", "time", C], F)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_forward_op_on_reversed_input(op, monkeypatch):
    # accepted before too (the reversal is upstream of the op); afterwards Y is in input order
    _, applied, m = check_rule(reversed_input(op), F, monkeypatch, {"reversed_input"}, refused=False)
    assert m.recurrent[0].handler.direction(m.recurrent[0].node) == "reverse"


@pytest.mark.parametrize("end,direction,why", [
    (0, "forward", "its input is not reversed in time"),  # stops before the first step: not the whole axis
    (np.iinfo(np.int64).min, "bidirectional", "the op is not forward"),
])
def test_refusals(end, direction, why):
    graph, applied = normalized(reversed_input("GRU", end=end, direction=direction))
    assert applied == []
    node = next(n for n in graph.nodes if n.op == "GRU")
    r = ReversedInput().match(graph, node)
    assert isinstance(r, NoMatch) and r.reason == why
