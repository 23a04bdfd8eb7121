import pytest
from rewrite_util import Builder, check_rule, normalized

from onnxmod.rewrite import NoMatch
from onnxmod.rewrite.dense3d import Dense3D

F, H, C = 5, 6, 4


def tf2onnx_dense(op, target_last=C, bidirectional=False, shape_of="y", rows="const"):
    """Keras many-to-many Dense through tf2onnx: Reshape(Y,[-1,H]) -> MatMul -> Reshape(Shape) -> Add."""
    b = Builder()
    D = 2 if bidirectional else 1
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    y = b.recurrent(op, xt, F, H, "bidirectional" if bidirectional else "forward")[0]
    if bidirectional:
        s = b.node("Reshape", [b.node("Transpose", [y], perm=[0, 2, 1, 3]), b.i64(0, 0, D * H)])
    else:
        s = b.node("Squeeze", [y, b.i64(1)])
    yb = b.node("Transpose", [s], perm=[1, 0, 2])  # [B, T, D*H]
    if rows == "const":
        flat = b.node("Reshape", [yb, b.i64(-1, D * H)])
    else:  # tf2onnx's Tensordot: [ReduceProd(Shape(y)[0:2]), H], as int32 then cast
        sy = b.node("Cast", [b.node("Shape", [yb])], to=6)
        n = b.node("Unsqueeze", [b.node("ReduceProd", [b.node("Gather", [sy, b.i64(0, 1)], axis=0)],
                                        axes=[0], keepdims=0), b.i64(0)])
        h = b.node("Gather", [sy, b.i64(2)], axis=0)
        flat = b.node("Reshape", [yb, b.node("Cast", [b.node("Concat", [n, h], axis=0)], to=7)])
    mm = b.node("MatMul", [flat, b.c(b.rand(D * H, C))])
    shp = b.node("Shape", [yb if shape_of == "y" else "x"])
    target = b.node("Concat", [b.node("Slice", [shp, b.i64(0), b.i64(2), b.i64(0)]), b.i64(target_last)], axis=0)
    r = b.node("Reshape", [mm, target])
    b.node("Add", [r, b.c(b.rand(C))], ["logits"])
    return b.model("logits", ["batch", "time", C], F)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_many_to_many_dense(op, monkeypatch):
    reason, applied, m = check_rule(tf2onnx_dense(op), F, monkeypatch, {"dense_3d"})
    assert reason == ""  # the unit flow follows the reshapes around the MatMul by axes; the rule makes it one op
    assert m.head.node.op == "MatMul" and m.head.bias_node is not None and m.shape == "M:N"
    assert [n.op for n in m.graph.nodes].count("Reshape") == 0


def test_bidirectional_and_shape_of_the_model_input(monkeypatch):
    check_rule(tf2onnx_dense("LSTM", bidirectional=True, shape_of="x"), F, monkeypatch, {"dense_3d"})


@pytest.mark.parametrize("bidirectional", [False, True])
def test_rows_computed_by_reduce_prod(bidirectional, monkeypatch):
    proto = tf2onnx_dense("GRU", bidirectional=bidirectional, rows="reduce_prod")
    check_rule(proto, F, monkeypatch, {"dense_3d"})


def test_refuses_another_target():
    # the second Reshape's last size is not the MatMul's width: not the Dense pattern
    proto = tf2onnx_dense("LSTM", target_last=2 * C)
    graph, applied = normalized(proto)
    assert "dense_3d" not in {a.rule for a in applied}
    node = next(n for n in graph.nodes if n.op == "Reshape" and n.inputs[0].inputs and
                n.inputs[0].inputs[0].op == "MatMul")
    why = Dense3D().match(graph, node)
    assert isinstance(why, NoMatch) and "with its last axis 4" in why.reason
