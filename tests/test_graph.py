"""Rewrites of the graph model that are not per-op: the embedding's features."""
import numpy as np
import onnx
import pytest
from conftest import fixture_path
from onnx import helper, numpy_helper

from onnxmod import runtime
from onnxmod.errors import UnsupportedModelError, UsageError
from onnxmod.graph import Model, count_parameters_proto


def _with_table(model: Model, table: np.ndarray) -> onnx.ModelProto:
    """The original model with its embedding table replaced."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.original)
    name = model.embedding().inputs[0].name
    for i, init in enumerate(proto.graph.initializer):
        if init.name == name:
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(table.astype(np.float32), name))
            return proto
    raise AssertionError(f"no initializer {name}")


def _run(proto_or_model, x):
    return runtime.session(proto_or_model).run(None, {"tokens": x})[0]


@pytest.mark.parametrize("task,name", [("math_topics", "lstm1"), ("math_topics", "lstm1_bi"),
                                       ("brown_genre", "gru1"), ("brown_pos", "rnn_relu2"),
                                       ("cmu_phones", "lstm1")])  # the features repeated over time by Expand
def test_reduced_embedding_equals_the_model_with_its_reconstructed_table(task, name):
    """Fewer features is exactly the model reading the projected table it returns: every layer that
    read the features (flattened positions included) and its bias were rewritten consistently."""
    model = Model.load(fixture_path(task, f"{name}.onnx"))
    z = np.load(fixture_path(task, "data.npz"))
    x = z["x_test"][:48]
    V, d = np.asarray(model.embedding().inputs[0].values).shape
    weights = np.bincount(z["x_train"].ravel(), minlength=V)[:V]
    m = model.fresh()
    approx = m.reduce_embedding(8, weights)
    reduced = m.export(outputs=[m.output])
    assert np.asarray(m.embedding().inputs[0].values).shape == (V, 8)
    got, expect = _run(reduced, x), _run(_with_table(model, approx), x)
    np.testing.assert_allclose(got, expect, atol=2e-4, rtol=1e-4)
    assert not np.allclose(got, _run(model.original, x), atol=1e-3)  # it did change something
    assert count_parameters_proto(reduced) < model.parameter_count() - V * (d - 8)


def test_reduced_embedding_after_a_pruned_vocabulary(math_lstm1):
    """Both rewrites compose: removed tokens read their nearest kept row, whose projection the
    reduced table holds; token weights are summed onto the rows they read."""
    model_path, data = math_lstm1
    model = Model.load(model_path)
    z = np.load(data)
    x = z["x_test"][:48]
    V = model.vocabulary_size()
    keep = np.ones(V, dtype=bool)
    keep[np.arange(V) % 2 == 1] = False
    keep[[0, 1]] = True
    m = model.fresh()
    m.prune_vocabulary(keep)
    approx = m.reduce_embedding(10, np.bincount(z["x_train"].ravel(), minlength=V)[:V])
    assert m.vocabulary_size() == V
    table = np.asarray(model.embedding().inputs[0].values)
    kept = np.flatnonzero(keep)
    nearest = kept[np.argmin(((table[:, None, :] - table[None, kept, :]) ** 2).sum(-1), axis=1)]
    full = table.copy()
    full[kept] = approx
    expect = _run(_with_table(model, full), np.where(keep[x], x, nearest[x]))
    np.testing.assert_allclose(_run(m.export(outputs=[m.output]), x), expect, atol=2e-4, rtol=1e-4)


def test_full_rank_keeps_the_model_and_bad_ranks_are_refused(math_lstm1):
    model_path, data = math_lstm1
    model = Model.load(model_path)
    x = np.load(data)["x_test"][:16]
    m = model.fresh()
    m.reduce_embedding(16)
    np.testing.assert_array_equal(_run(m.export(outputs=[m.output]), x), _run(model.original, x))
    for bad in (0, 17):
        with pytest.raises(UsageError, match=r"lstm1\.onnx: embedding rank must be 1\.\.16"):
            model.fresh().reduce_embedding(bad)


def test_reduction_is_deterministic(math_lstm1):
    model = Model.load(math_lstm1[0])
    a, b = model.fresh(), model.fresh()
    a.reduce_embedding(6)
    b.reduce_embedding(6)
    assert (a.export(outputs=[a.output]).SerializeToString(deterministic=True)
            == b.export(outputs=[b.output]).SerializeToString(deterministic=True))


def test_features_mixed_with_another_tensor_are_refused():
    """An embedding concatenated with something else cannot take fewer features: refused, naming
    the node (a graph built for the mechanics)."""
    rng = np.random.default_rng(0)
    H, d = 3, 4
    table = rng.normal(size=(10, d)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "tokens"], ["emb"], name="embed"),
        helper.make_node("Concat", ["emb", "extra"], ["cat"], axis=2, name="mix"),
        helper.make_node("Transpose", ["cat"], ["xt"], perm=[1, 0, 2], name="tr"),
        helper.make_node("RNN", ["xt", "W", "R", "B"], ["Y", "Yh"], hidden_size=H, name="rnn"),
        helper.make_node("Squeeze", ["Yh", "ax0"], ["h"], name="sq"),
        helper.make_node("Gemm", ["h", "hw", "hb"], ["logits"], name="head"),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("table", table), ("extra", np.ones((1, 5, 1), np.float32)),
        ("W", rng.normal(size=(1, H, d + 1)).astype(np.float32)), ("R", rng.normal(size=(1, H, H)).astype(np.float32)),
        ("B", np.zeros((1, 2 * H), np.float32)), ("ax0", np.array([0], np.int64)),
        ("hw", rng.normal(size=(H, 2)).astype(np.float32)), ("hb", np.zeros(2, np.float32))]]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("tokens", onnx.TensorProto.INT64, [1, 5])],
                          [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 2])], inits)
    model = Model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), source="mix.onnx")
    expected = r"mix\.onnx: node 'rnn' \(RNN\) consumes the features of 'embed': reads them concatenated"
    with pytest.raises(UnsupportedModelError, match=expected):
        model.reduce_embedding(2)


def test_copies_keep_sequences():
    """A model holding a sequence (``SplitToSequence`` → ``SequenceAt``, torch's ``unbind``) beside
    its recurrence: every copy of the normalized graph (modules, ``runnable``) exports it as a
    sequence, so onnxruntime loads it and it computes what the file computes (a copy used to make it
    a tensor: "Type (tensor(float)) of output arg ... does not match expected type
    (seq(tensor(float)))")."""
    from onnx import TensorProto

    rng = np.random.default_rng(0)
    H, F, T, C = 4, 3, 5, 2
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("W", rng.normal(0, .5, (1, 4 * H, F))), ("R", rng.normal(0, .5, (1, 4 * H, H))),
        ("Wo", rng.normal(0, .5, (H, C))), ("bo", rng.normal(0, .5, C)))]
    inits += [numpy_helper.from_array(np.array([0], np.int64), "ax0"),
              numpy_helper.from_array(np.array(0, np.int64), "first")]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("SplitToSequence", ["xt"], ["steps"], axis=0, keepdims=0),
             helper.make_node("SequenceAt", ["steps", "first"], ["x0"]),  # [N, F]: the first step
             helper.make_node("ReduceSum", ["x0"], ["s0"], keepdims=1),  # [N, 1]
             helper.make_node("Mul", ["xt", "s0"], ["xs"]),  # every step scaled by the first one's sum
             helper.make_node("LSTM", ["xs", "W", "R"], ["y", "yh"], hidden_size=H),
             helper.make_node("Squeeze", ["yh", "ax0"], ["h"]),
             helper.make_node("Gemm", ["h", "Wo", "bo"], ["logits"])]
    graph = helper.make_graph(nodes, "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, F])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", C])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    model = Model(proto, source="seq.onnx")
    exported = model.fresh().export()
    assert [v.type.WhichOneof("value") for v in exported.graph.value_info if v.name == "steps"] == ["sequence_type"]
    onnx.checker.check_model(exported, full_check=True)
    x = rng.normal(0, 1, (3, T, F)).astype(np.float32)
    want = runtime.session(proto).run(None, {"x": x})[0]
    np.testing.assert_allclose(runtime.session(exported).run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-6)
