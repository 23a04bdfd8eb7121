"""Readouts and weights the issue lists that need no rule: ``Model`` already accepts them as
exported, and no rule fires (items 6 and 7 of the readout list)."""
import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto
from rewrite_util import Builder, run

from onnxmod.graph import Model

F, H, C = 5, 6, 4


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("axis,post", [(0, "Softmax"), (1, "LogSoftmax"), (1, None)])
def test_last_step_gather_and_trailing_softmax(op, axis, post):
    b = Builder()
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    y = b.node("Squeeze", [b.recurrent(op, xt, F, H)[0], b.i64(1)])  # [T, B, H]
    if axis == 1:
        y = b.node("Transpose", [y], perm=[1, 0, 2])
    last = b.node("Gather", [y, b.c(np.array(-1, np.int64))], axis=axis)
    out = "logits" if post is None else "scores"
    b.node("Gemm", [last, b.c(b.rand(C, H)), b.c(b.rand(C))], [out], transB=1)
    if post:
        b.node(post, [out], ["logits"], axis=-1)
    m = Model(b.model("logits", ["batch", C], F), source="last.onnx")
    assert m.rewrites == []
    assert m.head.node.op == "Gemm" and m.shape == "M:1" and m.recurrent[0].sites


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_weights_through_identity_and_cast_are_folded(op):
    """W as Cast(float16), R through Identity, B through Identity(Cast): graphsurgeon's constant
    folding already makes them initializers, and the model computes the same."""
    b = Builder()
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    W = b.node("Cast", [b.c(b.rand(1, G * H, F).astype(np.float16))], to=TensorProto.FLOAT)
    R = b.node("Identity", [b.c(b.rand(1, G * H, H))])
    B = b.node("Identity", [b.node("Cast", [b.c(b.rand(1, 2 * G * H).astype(np.float64))], to=TensorProto.FLOAT)])
    outs = ["Y", "Yh"] + (["Yc"] if op == "LSTM" else [])
    attrs = {"linear_before_reset": 1} if op == "GRU" else {}
    b.node(op, [xt, W, R, B], outs, hidden_size=H, **attrs)
    last = b.node("Squeeze", ["Yh", b.i64(0)])
    b.node("Gemm", [last, b.c(b.rand(C, H)), b.c(b.rand(C))], ["logits"], transB=1)
    proto = b.model("logits", ["batch", C], F)
    m = Model(proto, source="cast.onnx")
    assert m.rewrites == []
    node = m.recurrent[0].node
    assert all(isinstance(node.inputs[i], gs.Constant) for i in (1, 2, 3))
    x = np.random.default_rng(0).normal(0, 1, (3, 5, F)).astype(np.float32)
    np.testing.assert_allclose(run(m.export(), x)[0], run(proto, x)[0], atol=1e-6, rtol=0)
