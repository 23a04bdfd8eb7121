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
