"""onnxmod.fold: constant folding bounded before anything runs (issue 12)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from builders import build, random_stack

from onnxmod.errors import UnsupportedModelError
from onnxmod.fold import fold_bounded

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import fuzz  # noqa: E402


def _graph(proto):
    return gs.import_onnx(onnx.shape_inference.infer_shapes(proto, data_prop=True))


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile"])
def test_a_large_folded_constant_is_refused_naming_its_node(op):
    proto = fuzz.folding_bomb(build(random_stack(np.random.default_rng(0), "LSTM", 1, 3, 1)), 300, op)
    with pytest.raises(UnsupportedModelError, match=f"node 'fz_big' \\({op}\\) computes a constant of 360,000 bytes"):
        fold_bounded(_graph(proto), "m.onnx", limit_bytes=100_000)


def test_below_the_limit_it_folds_to_the_same_values():
    proto = fuzz.folding_bomb(build(random_stack(np.random.default_rng(0), "LSTM", 1, 3, 1)), 300)
    g = fold_bounded(_graph(proto), "m.onnx", limit_bytes=1_000_000).cleanup()
    bias = next(n for n in g.nodes if n.op == "Gemm").inputs[2]
    assert isinstance(bias, gs.Constant)
    want = onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "head_b")) + 300 * 300 * 1e-9
    np.testing.assert_allclose(bias.values, want, rtol=1e-5)
