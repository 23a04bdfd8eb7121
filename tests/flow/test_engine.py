"""The engine (``onnxmod.flow.engine``): what it does beyond one rule at a time.

A ``Shape`` of a tensor that carries units gives the size of their axis, which removing units
changes. Where that size goes into a reshape target the flow follows, the sliced size is right;
anywhere else (``ConstantOfShape`` for ``torch.zeros_like``, an ``Expand`` to it; arithmetic on
it, as ``view(n, size(1) * size(2))``) the ``Shape`` reads the units at full width. (An operand
expanded to the other operand's ``Shape``, torch's ``expand_as``, is read as a broadcast before the
flow runs: ``tests/test_canonical.py``.) Each graph is the smallest that shows it; sliced = zeroed in onnxruntime. (The
``view`` one is rewritten to a constant target by ``rewrite/reshape_from_shape`` before the flow
sees it; it stays here as a case of the same kind.)
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_random_surroundings import F, G, T, _logits, _recurrence, zeroed

from onnxmod import runtime
from onnxmod.graph import Model
from onnxmod.units import UnitSelection

C = 4


def _model(g: G, logits: str, out_shape, steps=T) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, "engine",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", steps, F])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, out_shape)], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _sequence(g: G, cell: str, H: int, D: int) -> str:
    """``[N, T, D*H]``: the recurrence's outputs, batch-first."""
    y, _, _ = _recurrence(g, cell, H, D, "x")
    yt = g.op("Transpose", [y], perm=[0, 2, 1, 3])
    yr = g.op("Reshape", [yt, g.const(np.array([0, 0, -1], np.int64))])
    return g.op("Transpose", [yr], perm=[1, 0, 2])


def zeros_like_where(seed: int, cell: str, H: int, D: int):
    """``torch.where(mask, y, torch.zeros_like(y))`` as the legacy exporter writes it: ``Where(mask,
    y, ConstantOfShape(Shape(y)))``, then max over the steps and a ``Gemm``."""
    g = G(np.random.default_rng(seed))
    y = _sequence(g, cell, H, D)
    first = g.op("Slice", ["x", g.const(np.array([0])), g.const(np.array([1])), g.const(np.array([2]))])
    mask = g.op("Greater", [first, g.const(np.array(0.0, np.float32))])
    zeros = g.op("ConstantOfShape", [g.op("Shape", [y])], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
    z = g.op("ReduceMax", [g.op("Where", [mask, y, zeros]), g.const(np.array([1], np.int64))], keepdims=0)
    return _model(g, g.op("Gemm", [z, g.const(g.normal(D * H, C)), g.const(g.normal(C))]), ["N", C])


def view_by_arithmetic(seed: int, cell: str, H: int, D: int):
    """``y.view(y.size(0), y.size(1) * y.size(2))``: the target's width is a product of ``Shape``
    elements (the input declares its steps by name, so nothing folds them), then a ``Gemm`` over
    ``T * D*H`` features."""
    g = G(np.random.default_rng(seed))
    y = _sequence(g, cell, H, D)
    shape = g.op("Shape", [y])
    dim = [g.op("Gather", [shape, g.const(np.array(i, np.int64))], axis=0) for i in range(3)]
    width = g.op("Mul", [dim[1], dim[2]])
    target = g.op("Concat", [g.op("Unsqueeze", [dim[0], g.const(np.array([0], np.int64))]),
                             g.op("Unsqueeze", [width, g.const(np.array([0], np.int64))])], axis=0)
    z = g.op("Reshape", [y, target])
    return _model(g, g.op("Gemm", [z, g.const(g.normal(T * D * H, C)), g.const(g.normal(C))]), ["N", C], "T")


@pytest.mark.parametrize("build", [zeros_like_where, view_by_arithmetic])
@pytest.mark.parametrize("cell,D", [("LSTM", 1), ("GRU", 2), ("RNN", 2)])
def test_a_size_of_the_units_used_elsewhere_reads_them_at_full_width(build, cell, D):
    H = 5
    proto = build(7, cell, H, D)
    model = Model(proto, source="engine.onnx")
    x = np.random.default_rng(1).normal(0, 1, (6, T, F)).astype(np.float32)
    np.testing.assert_allclose(_logits(model, x), runtime.session(proto).run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
    keep = [np.array([0, 2, 3]), np.array([1, 4])][:D]
    sel = {model.recurrent[0].index: UnitSelection.from_keep(H, keep)}
    sliced = _logits(model, x, sel)
    reference = _logits(Model(zeroed(proto, cell, H, D, keep), source="zeroed.onnx"), x)
    np.testing.assert_allclose(sliced, reference, rtol=1e-4, atol=2e-5)
    if build is not view_by_arithmetic:  # that target is rewritten to [0, -1] before the flow runs
        assert any("size of the units' axis" in w for w in model.widened()), model.widened()


def test_a_size_that_goes_only_into_followed_targets_stays_sliced():
    """``y.view(y.size(0), y.size(1), -1)``-style targets whose unit-axis element is the ``Shape``
    itself follow the units: nothing is read at full width."""
    g = G(np.random.default_rng(3))
    y = _sequence(g, "LSTM", 5, 1)
    shape = g.op("Shape", [y])
    target = g.op("Concat", [g.op("Slice", [shape, g.const(np.array([0])), g.const(np.array([1]))]),
                             g.const(np.array([-1], np.int64)),
                             g.op("Slice", [shape, g.const(np.array([2])), g.const(np.array([3]))])], axis=0)
    z = g.op("ReduceMax", [g.op("Reshape", [y, target]), g.const(np.array([1], np.int64))], keepdims=0)
    proto = _model(g, g.op("Gemm", [z, g.const(g.normal(5, C)), g.const(g.normal(C))]), ["N", C])
    model = Model(proto, source="engine.onnx")
    assert model.widened() == [] or all("graph output" in w for w in model.widened()), model.widened()
    x = np.random.default_rng(1).normal(0, 1, (6, T, F)).astype(np.float32)
    sel = {model.recurrent[0].index: UnitSelection.from_keep(5, [np.array([0, 2, 3])])}
    reference = _logits(Model(zeroed(proto, "LSTM", 5, 1, [np.array([0, 2, 3])]), source="zeroed.onnx"), x)
    np.testing.assert_allclose(_logits(model, x, sel), reference, rtol=1e-4, atol=2e-5)
