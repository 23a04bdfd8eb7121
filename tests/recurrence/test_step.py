"""Cutting a cell's step out of its form (``onnxmod/recurrence/step.py``): what the step binds as
constants, and what it refuses."""
import numpy as np
import onnx
import pytest
from cell_export import export

from onnxmod.errors import UnsupportedModelError
from onnxmod.graph import Model

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_durnn_norm_cap_is_evaluated_once_and_bound():
    """The loop export computes U = U_s / max(1, |row|) from the raw U_s before its loop; the step
    holds the capped numbers (so slicing a unit out of U leaves the other rows' caps as trained)."""
    path = ROOT / "fixtures/cells/digits/durnn1_loop.onnx"
    raw = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}["layers.0.U_s"]
    capped = (raw / np.maximum(1.0, np.linalg.norm(raw, axis=1, keepdims=True))).T
    (op,) = Model.load(path).recurrent
    consts = [np.asarray(t.values) for t in op.step.graph.tensors().values() if hasattr(t, "values")]
    assert any(c.shape == capped.shape and np.allclose(c, capped, atol=1e-6) for c in consts)
    assert not any(n.op in ("ReduceL2", "Div", "Clip") for n in op.step.graph.nodes)


def _counter_cell(o, x, states):
    (h,) = states
    t = o.op("Cast", o.step_index, to=onnx.TensorProto.FLOAT)
    h2 = o.op("Tanh", o.op("Add", o.op("MatMul", x, o.w("W")), o.op("Mul", h, t)))
    return [h2], h2


def test_a_step_that_reads_the_loop_counter_is_refused_naming_the_node(tmp_path):
    rng = np.random.default_rng(0)
    proto = export(_counter_cell, {"W": rng.normal(0, 1, (2, 3))}, [3], 2, "loop", 4,
                   head=(rng.normal(0, 1, (2, 3)), np.zeros(2)))
    with pytest.raises(UnsupportedModelError, match=r"node 'body/Mul_\d+' \(Mul\): reads 'body/cast_\d+', which is "
                                                    r"neither the input step, a state nor a constant"):
        Model(proto, source="counter.onnx")
