"""Tracing: the trace graph stops at the recurrence, and what it exposes is what the head reads."""
import numpy as np
from conftest import fixture_path

from onnxmod import runtime
from onnxmod.graph import Model
from onnxmod.trace import Tracer, trace_model


def test_traced_states_are_what_the_output_layer_reads(math_lstm1):
    """The head applied to the traced final state gives the model's own logits (onnxruntime), and
    the trace graph itself never runs the head."""
    model_path, data = math_lstm1
    model = Model.load(model_path)
    x = np.load(data)["x_test"][:64]
    proto = trace_model(model)
    assert [o.name for o in proto.graph.output] == [model.recurrent[0].node.outputs[0].name]
    assert not any(n.op_type == model.head.node.op for n in proto.graph.node)
    h = Tracer(model).run(x, batch_size=24, progress=False).hidden[0]  # [N, T, D, H], batches of 24
    W = np.asarray(model.head.node.inputs[1].values)
    b = np.asarray(model.head.node.inputs[2].values)
    expect = runtime.session(str(model_path)).run(None, {"tokens": x})[0]
    np.testing.assert_allclose(h[:, -1, 0, :] @ W.T + b, expect, atol=1e-4)


def test_a_translator_is_traced_without_its_vocabulary_projection():
    model = Model.load(fixture_path("translation", "en_frdeit/lstm.onnx"))
    proto = trace_model(model)
    assert len(proto.graph.output) == len(model.recurrent)
    heads = {model.head.node.name}
    assert not heads & {n.name for n in proto.graph.node}


def test_final_step_reads_each_rows_last_real_step_and_reverse_directions_at_zero():
    from onnxmod.trace import final_step

    a = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)  # N=2, T=4, D*H = 2*3
    got = final_step(a, [False, True], lengths=np.array([2, 4]))
    np.testing.assert_array_equal(got[:, :3], a[[0, 1], [1, 3], :3])
    np.testing.assert_array_equal(got[:, 3:], a[:, 0, 3:])
    np.testing.assert_array_equal(final_step(a, [True])[:, :], a[:, 0])  # a reverse-only op ends at step 0
    np.testing.assert_array_equal(final_step(a, [False]), a[:, -1])


def test_trace_fetches_computed_sequence_lengths(tmp_path):
    """A model whose LSTM reads sequence_lens computed from its padded tokens (pad id 0): the trace
    carries each row's length, and the one-output rolled state is read at the row's last real step."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxmod.trace import run_trace

    rng = np.random.default_rng(0)
    H, E, V = 3, 4, 9
    init = [numpy_helper.from_array(rng.normal(0, 1, (V, E)).astype(np.float32), "emb"),
            numpy_helper.from_array(rng.normal(0, 1, (1, 4 * H, E)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(0, 1, (1, 4 * H, H)).astype(np.float32), "R"),
            numpy_helper.from_array(np.zeros(1, np.int64), "zero"),
            numpy_helper.from_array(np.array([1], np.int64), "ax1"),
            numpy_helper.from_array(rng.normal(0, 1, (2, H)).astype(np.float32), "hw")]
    nodes = [helper.make_node("Greater", ["tokens", "zero"], ["real"]),
             helper.make_node("Cast", ["real"], ["real_i"], to=TensorProto.INT32),
             helper.make_node("ReduceSum", ["real_i", "ax1"], ["lens"], keepdims=0),
             helper.make_node("Gather", ["emb", "tokens"], ["e"]),
             helper.make_node("Transpose", ["e"], ["e_t"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["e_t", "W", "R", "", "lens"], ["", "Y_h"], hidden_size=H),
             helper.make_node("Squeeze", ["Y_h", "zero"], ["h"]),
             helper.make_node("Gemm", ["h", "hw"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", 5])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], init)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = Model(proto)
    x = np.array([[3, 4, 0, 0, 0], [1, 2, 3, 4, 5], [7, 0, 0, 0, 0]], dtype=np.int64)  # post-padded
    tr = run_trace(model, x)
    np.testing.assert_array_equal(tr.lengths[0], [2, 5, 1])
    from onnxmod.pipeline.identify import final as _final

    h = _final(tr.hidden[0], model.recurrent[0], tr.lengths[0])
    logits = runtime.session(proto).run(None, {"tokens": x})[0]
    np.testing.assert_allclose(h @ numpy_helper.to_array(init[-1]).T, logits, atol=1e-5)
