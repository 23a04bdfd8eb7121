"""Canonicalization (``onnxmod.canonical``): what onnxmod adds to onnxscript's optimizer and
onnx-ir's passes. Small graphs built with ``onnx.helper`` (random weights: mechanics); sliced =
zeroed in onnxruntime."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

sys.path.insert(0, str(Path(__file__).resolve().parent / "flow"))
from test_engine import C, _model, _sequence  # noqa: E402
from test_random_surroundings import F, G, T, _logits, zeroed  # noqa: E402

from onnxmod import runtime  # noqa: E402
from onnxmod.canonical import canonicalize  # noqa: E402
from onnxmod.graph import Model  # noqa: E402
from onnxmod.units import UnitSelection  # noqa: E402


def normalize_expand_as(seed: int, cell: str, H: int, D: int):
    """``F.normalize(y[:, -1])`` as torch's legacy exporter writes it: ``x / Expand(Clip(ReduceL2(x)),
    Shape(x))``, then a ``Gemm``."""
    g = G(np.random.default_rng(seed))
    h = g.op("Gather", [_sequence(g, cell, H, D), g.const(np.array(-1, np.int64))], axis=1)
    norm = g.op("Clip", [g.op("ReduceL2", [h, g.const(np.array([-1], np.int64))], keepdims=1),
                         g.const(np.array(1e-12, np.float32))])
    z = g.op("Div", [h, g.op("Expand", [norm, g.op("Shape", [h])])])
    return _model(g, g.op("Gemm", [z, g.const(g.normal(D * H, C)), g.const(g.normal(C))]), ["N", C])


def mask_expand_as(seed: int, cell: str, H: int, D: int):
    """``(y * mask.expand_as(y)).sum(1)``: a mask computed from the data, expanded to the outputs."""
    g = G(np.random.default_rng(seed))
    y = _sequence(g, cell, H, D)
    first = g.op("Slice", ["x", g.const(np.array([0])), g.const(np.array([1])), g.const(np.array([2]))])
    mask = g.op("Cast", [g.op("Greater", [first, g.const(np.array(0.0, np.float32))])], to=TensorProto.FLOAT)
    z = g.op("ReduceSum", [g.op("Mul", [g.op("Expand", [mask, g.op("Shape", [y])]), y]),
                           g.const(np.array([1], np.int64))], keepdims=0)
    return _model(g, g.op("Gemm", [z, g.const(g.normal(D * H, C)), g.const(g.normal(C))]), ["N", C])


@pytest.mark.parametrize("build", [normalize_expand_as, mask_expand_as])
@pytest.mark.parametrize("cell,D", [("LSTM", 1), ("GRU", 2)])
def test_expand_as_is_read_as_a_broadcast(build, cell, D):
    """The ``Expand`` to the other operand's ``Shape`` goes; the flow then follows the op (the head's
    rows are sliced) and sliced = zeroed."""
    H = 5
    proto = build(11, cell, H, D)
    canon, why = canonicalize(proto)
    assert why is None
    assert not [n for n in canon.graph.node if n.op_type == "Expand"]
    model = Model(proto, source="canonical.onnx")
    x = np.random.default_rng(2).normal(0, 1, (6, T, F)).astype(np.float32)
    np.testing.assert_allclose(_logits(model, x), runtime.session(proto).run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
    assert any(s.kind == "weight" and s.node.op == "Gemm" for s in model.sites), model.widened()
    keep = [np.array([0, 1, 4]), np.array([2, 3])][:D]
    sel = {model.recurrent[0].index: UnitSelection.from_keep(H, keep)}
    reference = _logits(Model(zeroed(proto, cell, H, D, keep), source="zeroed.onnx"), x)
    np.testing.assert_allclose(_logits(model, x, sel), reference, rtol=1e-4, atol=2e-5)
