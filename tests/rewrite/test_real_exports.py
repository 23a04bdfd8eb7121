"""The rules on graphs real exporters wrote (tests/rewrite/data, rebuilt by build_exports.py):
Keras 3 through tf2onnx 1.17 and torch 2.13's default (dynamo) exporter, random weights.

Each: refused by ``Model`` without the rules (except where the rule only makes the op say what it
computes), accepted with exactly the listed rules, the same outputs in onnxruntime at two batch
sizes and two lengths (the unrolled TimeDistributed ones: their one static length), and removing
units from the rewritten model equals zeroing them in the original."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from rewrite_util import accepted, assert_slicing_exact, refused_without_rules, rewritten, run

HERE = Path(__file__).resolve().parent / "data"
F = 5

EXPECTED = {  # model -> (rules applied, in order; refused without them)
    "tf2onnx/lstm_last": ([], False),
    "tf2onnx/lstm_dense": (["dense_3d"], True),
    "tf2onnx/bilstm_last": (["direction_slice"] * 2, True),
    "tf2onnx/bilstm_seq": (["dense_3d"] + ["direction_slice"] * 2, True),
    "tf2onnx/bilstm_lstm_seq": (["dense_3d"] + ["direction_slice"] * 2, True),
    "tf2onnx/lstm_back_last": (["reverse_sequence", "reversed_input"], False),
    "tf2onnx/lstm_back_seq": (["dense_3d", "reverse_sequence", "reversed_input"], True),
    "tf2onnx/lstm_back_lstm": (["reverse_sequence", "reversed_input"], False),
    "tf2onnx/td_lstm": (["time_distributed", "head_transpose"], True),
    "tf2onnx/td_bilstm_softmax": (["time_distributed", "head_transpose"] + ["direction_slice"] * 2, True),
    "torch_dynamo/lstm1": (["reshape_from_shape"], True),
    "torch_dynamo/lstm2_bi": (["reshape_from_shape"] * 2, True),
    "torch_dynamo/gru1_bi": (["reshape_from_shape"], True),
    "torch_dynamo/gru2": (["reshape_from_shape"] * 2, True),
    "torch_dynamo/lstm_bi_many": (["reshape_from_shape"], True),
    "torch_dynamo/gru_many": (["reshape_from_shape"], True),
}


def test_every_committed_export_is_listed():
    assert sorted(str(p.relative_to(HERE))[:-5] for p in HERE.glob("*/*.onnx")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_export(name, monkeypatch):
    rules, refused = EXPECTED[name]
    proto = onnx.load(str(HERE / f"{name}.onnx"))
    if refused:
        refused_without_rules(proto, monkeypatch)
    out, applied = rewritten(proto)
    assert [a.rule for a in applied] == rules
    static = proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    rng = np.random.default_rng(0)
    for b in (1, 3):
        for t in (static,) if static else (4, 9):
            x = rng.normal(0, 1, (b, t, F)).astype(np.float32)
            for u, v in zip(run(proto, x), run(out, x)):
                assert u.shape == v.shape
                np.testing.assert_allclose(u, v, atol=1e-6, rtol=0)
    m = accepted(proto) if rules else None
    assert_slicing_exact(proto, F, static or 6)
    if m is not None:
        assert [a.rule for a in m.rewrites] == rules
