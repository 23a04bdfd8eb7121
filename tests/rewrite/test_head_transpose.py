import pytest
from rewrite_util import Builder, check_rule, normalized

from onnxmod.rewrite import NoMatch
from onnxmod.rewrite.head_transpose import HeadTranspose

F, H, C = 5, 6, 4


def transposed_head(op, perm=(1, 0, 2), post=None, bias=True, act=None):
    """A sequence-major Dense over Y [+ a row-wise act], transposed to batch-major after it."""
    b = Builder()
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    y = b.recurrent(op, xt, F, H)[0]
    s = b.node("Squeeze", [y, b.i64(1)])  # [T, B, H]
    out = b.node("MatMul", [s, b.c(b.rand(H, C))])
    if bias:
        out = b.node("Add", [out, b.c(b.rand(C))])
    if act:
        out = b.node(act, [out], **({"axis": 2} if act == "LogSoftmax" else {}))  # Softmax: axis -1
    if post:
        b.node(post, [b.node("Transpose", [out], perm=list(perm))], ["logits"], axis=-1)
    else:
        b.node("Transpose", [out], ["logits"], perm=list(perm))
    return b.model("logits", [C, "batch", "time"] if perm != (1, 0, 2) else ["batch", "time", C], F)


@pytest.mark.parametrize("op", ["LSTM", "RNN"])
@pytest.mark.parametrize("post", [None, "LogSoftmax"])
def test_transpose_after_the_output_layer(op, post, monkeypatch):
    reason, applied, m = check_rule(transposed_head(op, post=post), F, monkeypatch, {"head_transpose"})
    assert reason == ""  # the head is found through the transpose and the classes followed to the output
    assert m.head.node.op == "MatMul" and m.shape == "M:N"


@pytest.mark.parametrize("act", ["LogSoftmax", "Softmax"])
def test_without_bias_and_with_a_rowwise_activation(act, monkeypatch):
    check_rule(transposed_head("GRU", bias=False, act=act), F, monkeypatch, {"head_transpose"})


def test_refuses_a_permutation_that_moves_the_classes():
    proto = transposed_head("GRU", perm=(2, 1, 0))
    graph, applied = normalized(proto)
    assert applied == []
    node = next(n for n in graph.nodes if n.op == "Transpose" and n.outputs[0] in graph.outputs)
    why = HeadTranspose().match(graph, node)
    assert isinstance(why, NoMatch) and why.reason == "its permutation moves the last axis"
