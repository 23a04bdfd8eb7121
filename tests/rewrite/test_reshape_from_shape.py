import numpy as np
import onnx_graphsurgeon as gs
import pytest
from rewrite_util import Builder, check_rule, normalized

from onnxmod.rewrite import NoMatch
from onnxmod.rewrite.reshape_from_shape import ReshapeFromShape

F, H, C = 5, 6, 4


def torch_dynamo(op, bidirectional=True, batch_from_input=False):
    """torch's default exporter: Transpose(0,2,1,3) of Y, Reshape(target from Shape), last step, Gemm."""
    b = Builder()
    D = 2 if bidirectional else 1
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    y = b.recurrent(op, xt, F, H, "bidirectional" if bidirectional else "forward")[0]
    z = b.node("Transpose", [y], perm=[0, 2, 1, 3])
    sz = b.node("Shape", [z])
    sx = b.node("Shape", ["x"])
    t = b.node("Unsqueeze", [b.node("Gather", [sz, b.c(np.array(0, np.int64))], axis=0), b.i64(0)])
    if batch_from_input:
        bb = b.node("Slice", [sx, b.i64(0), b.i64(1), b.i64(0)])
    else:
        bb = b.node("Unsqueeze", [b.node("Gather", [sz, b.c(np.array(1, np.int64))], axis=0), b.i64(0)])
    dh = b.node("Mul", [b.node("Gather", [sz, b.i64(2)], axis=0), b.node("Gather", [sz, b.i64(3)], axis=0)])
    target = b.node("Concat", [t, bb, dh], axis=0)
    r = b.node("Reshape", [z, target])
    bt = b.node("Transpose", [r], perm=[1, 0, 2])
    last = b.node("Gather", [bt, b.c(np.array(-1, np.int64))], axis=1)
    b.node("Gemm", [last, b.c(b.rand(C, D * H)), b.c(b.rand(C))], ["logits"], transB=1)
    return b.model("logits", ["batch", C], F)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_torch_default_exporter_readout(op, bidirectional, monkeypatch):
    proto = torch_dynamo(op, bidirectional)
    reason, applied, m = check_rule(proto, F, monkeypatch, {"reshape_from_shape"})
    # the flow reads past a Shape that only takes the time and batch sizes (the unit sizes were folded):
    # the Reshape whose target they make is what it cannot follow
    assert reason == ""  # the unit flow reads a computed target by the sizes it gives; the rule makes it constant
    reshape = next(n for n in m.graph.nodes if n.op == "Reshape")
    D = 2 if bidirectional else 1
    assert np.asarray(reshape.inputs[1].values).tolist() == [0, 0, D * H]


def test_batch_size_taken_from_the_model_input(monkeypatch):
    proto = torch_dynamo("LSTM", batch_from_input=True)
    check_rule(proto, F, monkeypatch, {"reshape_from_shape"})


def test_refuses_two_dynamic_sizes_it_cannot_copy():
    # Reshape([B*T, C] -> [B, T, C]) with B and T from another tensor: neither 0 nor a single -1 is exact
    b = Builder()
    flat = b.node("Reshape", ["x", b.i64(-1, F)])
    sx = b.node("Shape", ["x"])
    target = b.node("Concat", [b.node("Slice", [sx, b.i64(0), b.i64(2), b.i64(0)]), b.i64(F)], axis=0)
    b.node("Reshape", [flat, target], ["logits"])
    graph, applied = normalized(b.model("logits", ["batch", "time", F], F))
    assert applied == []
    node = next(n for n in graph.nodes if n.op == "Reshape" and not isinstance(n.inputs[1], gs.Constant))
    why = ReshapeFromShape().match(graph, node)
    assert isinstance(why, NoMatch) and "2 sizes of the target are dynamic" in why.reason
    assert why.node == node.name


def test_refuses_allowzero_with_a_literal_zero():
    b = Builder()
    sx = b.node("Shape", ["x"])
    target = b.node("Concat", [b.node("Slice", [sx, b.i64(0), b.i64(1), b.i64(0)]), b.i64(0), b.i64(F)], axis=0)
    b.node("Reshape", ["x", target], ["logits"], allowzero=1)
    graph, applied = normalized(b.model("logits", ["batch", 0, F], F))
    assert applied == []
    node = next(n for n in graph.nodes if n.op == "Reshape")
    why = ReshapeFromShape().match(graph, node)
    assert isinstance(why, NoMatch) and "allowzero=1" in why.reason
