"""The recurrences of the "what surrounds the recurrence" fixtures (``fixtures/surround``, issue 20),
recognized by value and meaning: torch's dynamo ``nn.RNN`` with a weight copy per step, Keras 3
taggers with two ``Loop`` layers stacked, Keras ``mask_zero`` cells over post-padded rows, torch's
concatenated ``h_n``, an OCR CRNN whose LSTM is unrolled into per-step cells with its backward
direction flipped at both ends, a dynamically quantized LSTM.

Each fixture's recognized graph (after the front-ends and the rules) computes what the file computes
on the fixture's own rows, in onnxruntime. Where the unit flow around the recurrence is onnxmod's
already, removing units through the recognized recurrence equals zeroing them. A fixture not
committed yet is skipped, naming the file.
"""
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from onnxmod import runtime
from onnxmod.io import load_onnx
from onnxmod.prepare import prepare_graph
from onnxmod.recurrence import forms_after, recognize
from onnxmod.rewrite import normalize

ROOT = Path(__file__).resolve().parents[2]
SURROUND = ROOT / "fixtures" / "surround"

# file -> the recurrences recognized: (form, op_type, directions) in graph order
EXPECTED = {
    "torch_dynamo/genre_rnn_static.onnx": [("unrolled", "RNN", 1)],
    "tf2onnx_keras3/pos_gru2_timedistributed.onnx": [("loop", "GRU", 1), ("loop", "GRU", 1)],
    "tf2onnx_keras3/pos_simplernn2_timedistributed.onnx": [("loop", "RNN", 1), ("loop", "RNN", 1)],
    "tf2onnx_keras3/genre_post_lstm_mask.onnx": [("loop", "LSTM", 1)],
    "tf2onnx_keras3/genre_post_gru_mask.onnx": [("loop", "GRU", 1)],
    "torch_dynamo/genre_lstm2_bi_hn.onnx": [("native", "LSTM", 2), ("native", "LSTM", 2)],
    "torch_legacy/genre_lstm2_bi_hn.onnx": [("native", "LSTM", 2), ("native", "LSTM", 2)],
    "torch_dynamo/digits_crnn_cells_flip.onnx": [("unrolled", "LSTM", 2)],
    "ort_quantized/math_lstm1_dynamic_qint8.onnx": [("native", "LSTM", 1)],
    "ort_quantized/genre_lstm_maxpool_qdq.onnx": [("native", "LSTM", 1)],
    "ort_quantized/digits_crnn_ctc_qdq.onnx": [("native", "LSTM", 2)],
}


def _manifest() -> dict:
    path = SURROUND / "manifest.json"
    return {m["file"]: m for m in json.loads(path.read_text())["models"]} if path.exists() else {}


def _fixture(rel):
    entry = _manifest().get(rel)
    if entry is None or not (SURROUND / rel).exists():
        pytest.skip(f"fixtures/surround/{rel} is not committed yet")
    return SURROUND / rel, ROOT / entry["data"]


def _recognized(path):
    """The graph as onnxmod recognizes it (front-ends, then the rules around lifted ops, as Model
    does), exported, and the recurrences."""
    proto = load_onnx(path)
    graph, _ = prepare_graph(proto, str(path))
    normalize(graph)
    found, misses = recognize(graph, str(path))
    assert not misses, [str(m) for m in misses]
    forms = {r.name: r.form for r in found if r.form != "native"}
    applied = normalize(graph) if forms else []
    if applied:  # the rules rewrote around lifted ops: recognized again, the lifted forms followed
        found, misses = recognize(graph, str(path), forms_after(forms, applied))
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    del out.opset_import[:]
    out.opset_import.extend(proto.opset_import)
    for o in out.opset_import:  # preparation converts an opset before 13 to 13
        if o.domain in ("", "ai.onnx"):
            o.version = max(o.version, graph.opset)
    out.ir_version = proto.ir_version
    return proto, out, found


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_surround_recurrences_are_recognized_and_compute_what_the_file_computes(rel):
    path, data = _fixture(rel)
    proto, out, found = _recognized(path)
    got = [(str(r.form), r.op_type, r.directions) for r in found]
    assert got == EXPECTED[rel]
    d = np.load(data)
    x = d["x_test"][:64]
    name = proto.graph.input[0].name
    want = runtime.session(proto).run(None, {name: x})
    have = runtime.session(out).run(None, {name: x})
    for a, b in zip(want, have):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)
    def floats(p):
        return sum(int(np.prod(t.dims)) for t in p.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)

    # no bigger than the file, but for the zero recurrent biases a lifted native op stores (its layout)
    zero_biases = sum(r.cell.num_gates * r.units for r in found if r.form != "native" and r.cell is not None)
    assert floats(out) <= floats(proto) + zero_biases
