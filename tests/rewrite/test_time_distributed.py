import numpy as np
import pytest
from rewrite_util import Builder, check_rule, normalized, refused_without_rules

from onnxmod.errors import UnsupportedModelError
from onnxmod.graph import Model
from onnxmod.rewrite import NoMatch
from onnxmod.rewrite.time_distributed import TimeDistributed

F, H, C, N = 5, 6, 4, 4


def unrolled(op, form="gather", differ=False, time_static=False):
    """TimeDistributed(Dense) unrolled into N copies of one Dense, then stacked.

    gather: Gather(s, t, axis=1) -> Gemm -> Unsqueeze(1) -> Concat(axis=1)               [B, N, C]
    slice:  Slice(s, t:t+1, axis=1) -> Squeeze -> MatMul -> Add -> Unsqueeze(0) -> Concat(axis=0)
            -> Transpose(1, 0, 2) -> Softmax                                            [B, N, C]
    keep:   Slice(s, t:t+1, axis=1) -> MatMul -> Add -> Concat(axis=1)                   [B, N, C]
    softmax (tf2onnx, Dense(activation="softmax") with a zero bias dropped):
            Slice(s, t:t+1, axis=1) -> Squeeze -> MatMul -> Softmax -> Unsqueeze(0) -> Concat(axis=0)
            -> Transpose(1, 0, 2)                                                      [B, N, C]
    """
    b = Builder()
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    y = b.recurrent(op, xt, F, H)[0]
    s = b.node("Transpose", [b.node("Squeeze", [y, b.i64(1)])], perm=[1, 0, 2])  # [B, T, H]
    w, bias = b.rand(H, C), b.rand(C)
    steps = []
    for t in range(N):
        wt = w + (0.1 if differ and t == 2 else 0)
        if form == "gather":
            x = b.node("Gather", [s, b.c(np.array(t, np.int64))], axis=1)
            yt = b.node("Gemm", [x, b.c(np.ascontiguousarray(wt.T)), b.c(bias)], transB=1)
            steps.append(b.node("Unsqueeze", [yt, b.i64(1)]))
        elif form == "softmax":
            x = b.node("Squeeze", [b.node("Slice", [s, b.i64(t), b.i64(t + 1), b.i64(1)]), b.i64(1)])
            yt = b.node("Softmax", [b.node("MatMul", [x, b.c(wt)])], axis=1)
            steps.append(b.node("Unsqueeze", [yt, b.i64(0)]))
        else:
            x = b.node("Slice", [s, b.i64(t), b.i64(t + 1), b.i64(1)])
            if form == "slice":
                x = b.node("Squeeze", [x, b.i64(1)])
            yt = b.node("Add", [b.node("MatMul", [x, b.c(wt)]), b.c(bias)])
            steps.append(b.node("Unsqueeze", [yt, b.i64(0)]) if form == "slice" else yt)
    if form == "slice":
        cat = b.node("Concat", steps, axis=0)
        b.node("Softmax", [b.node("Transpose", [cat], perm=[1, 0, 2])], ["logits"], axis=-1)
    elif form == "softmax":
        b.node("Transpose", [b.node("Concat", steps, axis=0)], ["logits"], perm=[1, 0, 2])
    else:
        b.node("Concat", steps, ["logits"], axis=1)
    return b.model("logits", ["batch", N, C], F, x_shape=("batch", N if time_static else "time", None))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_gather_gemm_copies(op, monkeypatch):
    # the input's length is dynamic: the copies read the first N steps, and so does the rewrite
    reason, applied, m = check_rule(unrolled(op), F, monkeypatch, {"time_distributed"}, lengths=(N, N + 3))
    assert "consumes the classes of the output layer" in reason  # one head per step, joined after the heads
    assert m.head.node.op == "MatMul" and m.shape == "M:N"
    assert sum(n.op == "Slice" for n in m.graph.nodes) == 1  # the first N steps


def test_slice_matmul_copies_then_transpose_and_softmax(monkeypatch):
    reason, applied, m = check_rule(unrolled("LSTM", form="slice"), F, monkeypatch,
                                    {"time_distributed", "head_transpose"}, lengths=(N, N + 2))
    assert [a.rule for a in applied] == ["time_distributed", "head_transpose"]


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_per_step_softmax_without_bias_then_transpose(op, monkeypatch):
    reason, applied, m = check_rule(unrolled(op, form="softmax"), F, monkeypatch,
                                    {"time_distributed", "head_transpose"}, lengths=(N, N + 1))
    assert m.head.bias_node is None and m.head.node.op == "MatMul"
    assert [n.op for n in m.graph.nodes][-3:] == ["Transpose", "MatMul", "Softmax"]


def test_slices_that_keep_the_axis_and_a_static_length(monkeypatch):
    proto = unrolled("GRU", form="keep", time_static=True)
    reason, applied, m = check_rule(proto, F, monkeypatch, {"time_distributed"}, lengths=(N,))
    assert not any(n.op == "Slice" for n in m.graph.nodes)


def test_refuses_copies_with_different_weights(monkeypatch):
    proto = unrolled("LSTM", differ=True)
    graph, applied = normalized(proto)
    assert applied == []
    concat = next(n for n in graph.nodes if n.op == "Concat" and len(n.inputs) == N)
    why = TimeDistributed().match(graph, concat)
    assert isinstance(why, NoMatch)
    assert why.reason == "the weights of step 2 differ from step 0's (not one Dense per step)"
    with pytest.raises(UnsupportedModelError):
        Model(proto, source="differ.onnx")
    refused_without_rules(proto, monkeypatch)
