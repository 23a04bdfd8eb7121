"""Fused compositions answer as the side-by-side composition of the same modules (onnxruntime)."""
import numpy as np
import onnx
import pytest
from conftest import fixture_path

from onnxmod import api, runtime
from onnxmod.compose import compose, split
from onnxmod.concern import ConcernConfig
from onnxmod.errors import IncompatibleError
from onnxmod.fuse import fuse, why_not_fusable
from onnxmod.graph import Model
from onnxmod.modularize import build_module


def _concerns(task, stem, cap=0.3):
    model = Model.load(fixture_path(task, f"{stem}.onnx"))
    data = api.load_dataset_for(model, fixture_path(task, "data.npz"))
    cfg = ConcernConfig(removal_cap=cap, rank_all=True)  # far more removed than the defaults
    scores, _ = api.identify_concerns(model, data, "rolled", cfg, False)
    return model, data, [s.concern(cfg) for s in scores]


@pytest.mark.parametrize("task,stem", [("math_topics", "lstm1"), ("math_topics", "lstm1_bi"),
                                       ("math_topics", "gru2"), ("math_topics", "rnn_relu2"),
                                       ("brown_genre", "lstm2"), ("brown_pos", "gru2"), ("cmu_phones", "lstm1")])
def test_fused_composition_answers_as_the_modules(task, stem):
    model, data, concerns = _concerns(task, stem)
    assert why_not_fusable(model, concerns, compensated=False) is None
    fused = fuse(model, concerns)
    modules = [build_module(model, c) for c in concerns]
    side = compose(modules)
    x = data.x_test[:200]
    lf, sf = runtime.session(fused).run(["label", "scores"], {model.input.name: x})
    ls, ss = runtime.session(side).run(["label", "scores"], {model.input.name: x})
    assert sf.shape == ss.shape and lf.shape == ls.shape
    np.testing.assert_allclose(sf, ss, atol=2e-6, rtol=0)
    logits = [runtime.session(m).run(["logits"], {model.input.name: x})[0] for m in modules]
    margin = np.sort(np.stack([lg[..., 1] - lg[..., 0] for lg in logits], axis=-1), axis=-1)
    decided = margin[..., -1] - margin[..., -2] > 1e-4  # not a float32 tie between two modules
    assert (lf[decided] == ls[decided]).all() and decided.mean() > 0.99
    # and a single-row batch (the tiling must follow the batch size)
    np.testing.assert_allclose(runtime.session(fused).run(["scores"], {model.input.name: x[:1]})[0], ss[:1],
                               atol=2e-6, rtol=0)


def test_what_cannot_be_fused_says_why():
    model, _, concerns = _concerns("math_topics", "rnn_tanh1", cap=0.1)
    assert "cannot silence a unit" in why_not_fusable(model, concerns, compensated=False)
    model, _, concerns = _concerns("math_topics", "lstm1", cap=0.1)
    assert "mean compensation" in why_not_fusable(model, concerns, compensated=True)
    concerns[0].vocabulary = np.ones(model.vocabulary_size(), dtype=bool)
    assert "vocabularies" in why_not_fusable(model, concerns, compensated=False)


def test_decompose_writes_a_fused_composition_that_evaluates_like_composed(math_lstm1, tmp_path):
    model, data = math_lstm1
    r = api.decompose(model, data, tmp_path / "o", progress=False)
    assert r["fused"] == {"file": "fused.onnx"}
    fused = tmp_path / "o" / "fused.onnx"
    e = api.evaluate(fused, data)
    assert e["kind"] == "fused" and abs(e["accuracy"] - r["composed_accuracy"]) < 1e-3
    assert api.inspect(fused)["kind"] == "fused"
    with pytest.raises(IncompatibleError, match="fused composition"):
        split(onnx.load(str(fused)), str(fused))
    # rnn_tanh cannot be fused: decompose says why and writes no file
    r2 = api.decompose(fixture_path("math_topics", "rnn_tanh1.onnx"), data, tmp_path / "t", progress=False)
    assert r2["fused"]["file"] is None and "Tanh" in r2["fused"]["why_not"]
    assert not (tmp_path / "t" / "fused.onnx").exists()


@pytest.mark.parametrize("opset", [13, 17])
def test_fused_outputs_have_shapes_at_every_opset(opset):
    """onnx infers no rank for a Reshape to a computed target before opset 14: the fused vote's
    outputs carry their shapes themselves, so an opset-13 model's fused composition passes the full
    checker and answers as its modules' side-by-side composition (random weights: mechanics)."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxmod.concern import Concern

    rng = np.random.default_rng(opset)
    H, F, C, T = 6, 3, 3, 5
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("W", rng.normal(0, .6, (1, 4 * H, F))), ("R", rng.normal(0, .6, (1, 4 * H, H))),
        ("B", rng.normal(0, .3, (1, 8 * H))), ("Wo", rng.normal(0, .6, (H, C))), ("bo", rng.normal(0, .3, C)))]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax0"))
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xt", "W", "R", "B"], ["y", "yh"], hidden_size=H),
             helper.make_node("Squeeze", ["yh", "ax0"], ["h"]),
             helper.make_node("Gemm", ["h", "Wo", "bo"], ["logits"])]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, F])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", C])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    model = Model(proto, source="m.onnx")
    keeps = [np.arange(H) % 3 != k for k in range(C)]
    concerns = [Concern(k, str(k), "rolled", {model.recurrent[0].index: keeps[k]}) for k in range(C)]
    assert why_not_fusable(model, concerns, compensated=False) is None
    fused = fuse(model, concerns)
    onnx.checker.check_model(fused, full_check=True)
    side = compose([build_module(model, c) for c in concerns])
    x = rng.normal(0, 1, (4, T, F)).astype(np.float32)
    sf = runtime.session(fused).run(["scores"], {"x": x})[0]
    ss = runtime.session(side).run(["scores"], {"x": x})[0]
    np.testing.assert_allclose(sf, ss, atol=2e-6, rtol=0)


def _view_linear_view(proto: onnx.ModelProto, opset: int = 13) -> onnx.ModelProto:
    """``proto`` (a tagger ending ``MatMul`` + ``Add`` over ``[N, T, H]``) with torch's legacy
    ``view(-1, H) → Linear → view(N, T, C)`` head instead: two reshapes to targets computed from
    ``Shape``, at an opset where onnx infers no rank for them."""
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    mm = next(n for n in g.node if n.op_type == "MatMul")
    add = next(n for n in g.node if n.op_type == "Add" and mm.output[0] in n.input)
    bias = next(i for i in add.input if i != mm.output[0])
    W = next(numpy_helper.to_array(t) for t in g.initializer if t.name == mm.input[1])
    H, C = W.shape
    y = mm.input[0]
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (
        ("v/zero", 0), ("v/one", 1), ("v/ax0", [0]), ("v/H", [H]), ("v/C", [C]))]
    nodes = [helper.make_node("Shape", [y], ["v/shape"]),
             helper.make_node("Gather", ["v/shape", "v/zero"], ["v/n"], axis=0),
             helper.make_node("Gather", ["v/shape", "v/one"], ["v/t"], axis=0),
             helper.make_node("Mul", ["v/n", "v/t"], ["v/nt"]),
             helper.make_node("Unsqueeze", ["v/nt", "v/ax0"], ["v/nt1"]),
             helper.make_node("Concat", ["v/nt1", "v/H"], ["v/flat_shape"], axis=0),
             helper.make_node("Reshape", [y, "v/flat_shape"], ["v/flat"]),
             helper.make_node("Gemm", ["v/flat", mm.input[1], bias], ["v/scores"]),
             helper.make_node("Unsqueeze", ["v/n", "v/ax0"], ["v/n1"]),
             helper.make_node("Unsqueeze", ["v/t", "v/ax0"], ["v/t1"]),
             helper.make_node("Concat", ["v/n1", "v/t1", "v/C"], ["v/out_shape"], axis=0),
             helper.make_node("Reshape", ["v/scores", "v/out_shape"], [add.output[0]])]
    kept = [n for n in g.node if n is not mm and n is not add]
    del g.node[:]
    g.node.extend(kept + nodes)
    g.initializer.extend(consts)
    for o in g.output:
        o.type.tensor_type.ClearField("shape")
    del out.opset_import[:]
    out.opset_import.append(helper.make_opsetid("", opset))
    return out


def test_fused_vote_reads_the_rank_the_model_runs_at(tmp_path):
    """A tagger whose output's rank no declared or inferred shape gives (torch's legacy view/Linear/view
    at opset 13): the fused vote takes the rank the head was read at, and answers as the modules do
    (it once voted as if the output had rank 0: an internal error while fusing)."""
    proto = _view_linear_view(onnx.load(fixture_path("brown_pos", "gru1.onnx")))
    original = Model(onnx.load(fixture_path("brown_pos", "gru1.onnx")), source="gru1.onnx")
    data = api.load_dataset_for(original, fixture_path("brown_pos", "data.npz"))
    x = data.x_test[:100]
    want = runtime.session(onnx.load(fixture_path("brown_pos", "gru1.onnx"))).run(None, {"tokens": x})[0]
    np.testing.assert_allclose(runtime.session(proto).run(None, {"tokens": x})[0], want, atol=1e-5)
    model = Model(proto, source="view.onnx")
    cfg = ConcernConfig(removal_cap=0.3, rank_all=True)
    scores, _ = api.identify_concerns(model, data, "rolled", cfg, False)
    concerns = [s.concern(cfg) for s in scores]
    fused = fuse(model, concerns)
    side = compose([build_module(model, c) for c in concerns])
    sf = runtime.session(fused).run(["scores"], {"tokens": x})[0]
    ss = runtime.session(side).run(["scores"], {"tokens": x})[0]
    assert sf.shape == ss.shape == (*x.shape, len(concerns))
    np.testing.assert_allclose(sf, ss, atol=2e-6, rtol=0)
