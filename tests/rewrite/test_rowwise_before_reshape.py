"""The rule ``rowwise_before_reshape``: tf_keras's ``TimeDistributed(Dense(C, activation="softmax"))``
as tf2onnx writes it (rows flattened, the Dense, its softmax, rows unflattened)."""
import pytest
from rewrite_util import Builder, check_rule, normalized

from onnxmod.rewrite import NoMatch
from onnxmod.rewrite.rowwise_before_reshape import RowwiseBeforeReshape

F, H, C, T = 5, 6, 4, 7


def flattened_dense(op, act="Softmax", last=C):
    """Y [B, T, H] → Reshape [-1, H] → MatMul → Add → ``act`` → Reshape [-1, T, ``last``]."""
    b = Builder()
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    y = b.recurrent(op, xt, F, H)[0]
    s = b.node("Transpose", [b.node("Squeeze", [y, b.i64(1)])], perm=[1, 0, 2])  # [B, T, H]
    flat = b.node("Reshape", [s, b.i64(-1, H)])
    z = b.node("Add", [b.node("MatMul", [flat, b.c(b.rand(H, C))]), b.c(b.rand(C))])
    a = b.node(act, [z], axis=-1)
    b.node("Reshape", [a, b.i64(-1, T, last)], ["logits"])
    return b.model("logits", ["batch", T, C], F, x_shape=("batch", T, None))


@pytest.mark.parametrize("op,act", [("LSTM", "Softmax"), ("GRU", "LogSoftmax"), ("RNN", "Softmax")])
def test_a_softmax_moves_behind_the_reshape(op, act, monkeypatch):
    reason, applied, m = check_rule(flattened_dense(op, act), F, monkeypatch, {"rowwise_before_reshape"},
                                    lengths=(T,))
    assert "cannot find the output layer" in reason  # refused before: the head sat behind the softmax
    assert m.head.node.op == "MatMul" and m.shape == "M:N" and m.num_classes == C


def test_refuses_a_reshape_that_regroups_the_last_axis():
    graph, applied = normalized(flattened_dense("GRU", last=C * T))  # [B, T*C]-like: rows of C merged
    assert not [a for a in applied if a.rule == "rowwise_before_reshape"]
    node = next(n for n in graph.nodes if n.op == "Reshape" and n.outputs[0] in graph.outputs)
    why = RowwiseBeforeReshape().match(graph, node)
    assert isinstance(why, NoMatch) and why.reason == "its target does not keep the input's last axis"
