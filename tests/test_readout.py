"""The readout (``onnxmod.readout``): the head found by walking back from the output, and the
classes followed forward to it. Small graphs built with ``onnx.helper`` (random weights:
mechanics); everything compared in onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxmod import runtime
from onnxmod.concern import Concern
from onnxmod.graph import Model
from onnxmod.modularize import build_module

H, F, T, C = 6, 3, 5, 4


def _mlp_classifier(scale: float | None, seed: int = 0) -> onnx.ModelProto:
    """LSTM → last step → Gemm → Relu → Gemm (the output layer), then ``logits / scale`` (a
    temperature, as ``return self.mlp(z) / 1.5`` exports) when ``scale`` is given."""
    rng = np.random.default_rng(seed)
    arrays = {"W": rng.normal(0, .6, (1, 4 * H, F)), "R": rng.normal(0, .6, (1, 4 * H, H)),
              "B": rng.normal(0, .3, (1, 8 * H)), "W1": rng.normal(0, .6, (H, 7)), "b1": rng.normal(0, .3, 7),
              "W2": rng.normal(0, .6, (7, C)), "b2": rng.normal(0, .3, C)}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    inits += [numpy_helper.from_array(np.array([0], np.int64), "ax0"),
              numpy_helper.from_array(np.array(scale or 1, np.float32), "scale")]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xt", "W", "R", "B"], ["y", "yh"], hidden_size=H),
             helper.make_node("Squeeze", ["yh", "ax0"], ["h"]),
             helper.make_node("Gemm", ["h", "W1", "b1"], ["z1"]),
             helper.make_node("Relu", ["z1"], ["a1"]),
             helper.make_node("Gemm", ["a1", "W2", "b2"], ["scores" if scale else "logits"])]
    if scale:
        nodes.append(helper.make_node("Div", ["scores", "scale"], ["logits"]))
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, F])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", C])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.mark.parametrize("scale", [1.5, 0.25])
def test_the_head_is_found_through_a_temperature(scale):
    """A division by a constant after the output layer (a temperature) is walked through like a
    bias: the head is the last Gemm, and each module's logits are those of the same model without
    the division, divided."""
    x = np.random.default_rng(1).normal(0, 1, (5, T, F)).astype(np.float32)
    scaled, plain = Model(_mlp_classifier(scale), source="t.onnx"), Model(_mlp_classifier(None), source="p.onnx")
    assert scaled.head.node.op == "Gemm" and scaled.head.node.inputs[1].name == "W2"
    keep = np.array([True, False, True, True, False, True])
    for k in (0, 3):
        concerns = [Concern(k, str(k), "rolled", {m.recurrent[0].index: keep}) for m in (scaled, plain)]
        got, want = (runtime.session(build_module(m, c)).run(["logits"], {"x": x})[0]
                     for m, c in zip((scaled, plain), concerns))
        assert got.shape == (5, 2)
        np.testing.assert_allclose(got, want / scale, rtol=1e-5, atol=1e-6)


def _specialized_time_major(declare_batch: bool) -> onnx.ModelProto:
    """LSTM over ``[N, T=5, F]`` → its time-major steps through a ``Reshape`` to the constant
    ``[5, -1, H]`` → a head per step, time-major ``[T, N, C]``: a graph specialized to one sequence
    length (as torch's dynamo exports one), whose output the file declares ``[5, "N", C]``
    (``declare_batch``) or ``[5, "?", C]``."""
    rng = np.random.default_rng(3)
    arrays = {"W": rng.normal(0, .6, (1, 4 * H, F)), "R": rng.normal(0, .6, (1, 4 * H, H)),
              "B": rng.normal(0, .3, (1, 8 * H)), "Wo": rng.normal(0, .6, (H, C)), "bo": rng.normal(0, .3, C)}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    inits += [numpy_helper.from_array(np.array([1], np.int64), "ax1"),
              numpy_helper.from_array(np.array([T, -1, H], np.int64), "tm_shape")]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xt", "W", "R", "B"], ["y", "yh"], hidden_size=H),
             helper.make_node("Squeeze", ["y", "ax1"], ["steps"]),  # [T, N, H]
             helper.make_node("Reshape", ["steps", "tm_shape"], ["fixed"]),  # [5, N, H]
             helper.make_node("MatMul", ["fixed", "Wo"], ["mm"]),
             helper.make_node("Add", ["mm", "bo"], ["logits"])]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [T, "N" if declare_batch else "?", C])
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", F])],
                              [out], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def test_the_batch_axis_a_file_declares_by_name_is_read_where_probing_cannot_run():
    """Output shapes the file declares are not trusted whole (exporters get some wrong), but an output
    axis named as the input's batch is the exporter's own link: a graph specialized to T=5 does not
    run at made-up lengths, so without that name the batch axis is unknown (one line, no traceback)."""
    from onnxmod.errors import UnsupportedModelError

    model = Model(_specialized_time_major(declare_batch=True), source="tm.onnx")
    assert model.output_rank == 3 and any("read as [batch, ..., classes]" in r for r in model.layout_rewrites)
    x = np.random.default_rng(0).normal(size=(7, T, F)).astype(np.float32)
    want = runtime.session(model.original).run(None, {"x": x})[0].transpose(1, 0, 2)
    got = runtime.session(model.runnable).run([model.output.name], {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(UnsupportedModelError, match="which axis of output 'logits' holds the rows is unknown"):
        Model(_specialized_time_major(declare_batch=False), source="tm.onnx")
