"""The machinery: rules in a fixed order to a fixpoint, deterministic names, refusals as data."""
import copy
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs
from rewrite_util import normalized

from onnxmod.rewrite import RULES, Applied, NoMatch, normalize, why_not

DATA = Path(__file__).resolve().parent / "data"


def test_rules_are_registered_once_in_a_fixed_order():
    names = [r.name for r in RULES]
    assert names == ["dense_3d", "time_distributed", "head_transpose", "rowwise_before_reshape",
                     "direction_slice", "reverse_sequence",
                     "reverse_gather", "reversed_input", "bidirectional_pair", "reshape_from_shape"]
    assert all(r.anchor for r in RULES)


def test_deterministic_and_a_fixpoint():
    proto = onnx.load(str(DATA / "tf2onnx" / "td_bilstm_softmax.onnx"))
    runs = []
    for _ in range(2):
        graph, applied = normalized(proto)
        graph.cleanup().toposort()
        runs.append((gs.export_onnx(graph).SerializeToString(), applied))
    assert runs[0] == runs[1]
    assert all(isinstance(a, Applied) and a.nodes for a in runs[0][1])
    graph, _ = normalized(proto)
    assert normalize(graph) == []


def test_why_not_reports_refusals_without_changing_the_graph():
    proto = onnx.load(str(DATA / "torch_dynamo" / "lstm2_bi.onnx"))
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(copy.deepcopy(proto), data_prop=True))
    graph.fold_constants(error_ok=True).cleanup().toposort()
    before = gs.export_onnx(graph.copy()).SerializeToString()
    refusals = why_not(graph)
    assert gs.export_onnx(graph.copy()).SerializeToString() == before
    assert refusals and all(isinstance(r, NoMatch) and not r and r.rule and r.node and r.reason for r in refusals)
    assert any(r.rule == "dense_3d" and r.reason == "its input is not a MatMul" for r in refusals)
