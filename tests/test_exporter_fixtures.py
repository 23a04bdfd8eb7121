"""The committed fixtures from other exporters (fixtures/exporters/) are what their manifest says:
each file loads and passes the checker, onnxruntime reproduces the recorded test accuracy on the
task's test split, and the graph's op types, recurrence form and interface match the record.
Needs only onnx, onnxruntime and numpy (the builder, tools/build_exporter_fixtures.py, needs
torch / tensorflow; the tests never do)."""
import collections
import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FIXTURES

ROOT = FIXTURES / "exporters"
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
ENTRIES = MANIFEST["models"]
IDS = [f"{e['source']}/{e['name']}" for e in ENTRIES]


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_manifest_covers_every_file_and_every_exporter():
    files = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.onnx"))
    assert files == sorted(e["file"] for e in ENTRIES)
    assert not [p for p in ROOT.rglob("*") if p.is_file() and p.suffix not in (".onnx", ".json", ".md")]
    assert {e["source"] for e in ENTRIES} == {"torch_dynamo", "tf2onnx_keras3", "tf2onnx_tf_keras"}
    assert sum(e["file_bytes"] for e in ENTRIES) < 8_000_000


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_file_loads_and_matches_its_record(entry):
    path = ROOT / entry["file"]
    data = path.read_bytes()
    assert len(data) == entry["file_bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    # embedded weights: no external data reference anywhere
    assert not [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    counts = collections.Counter(n.op_type for n in proto.graph.node)
    assert sorted(counts) == entry["ops"]
    assert dict(counts) == entry["op_counts"]
    assert [n.op_type for n in proto.graph.node if n.op_type in ("LSTM", "GRU", "RNN")] == entry["native_recurrent_ops"]
    assert bool(counts["Loop"]) == entry["has_loop"] and bool(counts["Scan"]) == entry["has_scan"]
    for n in proto.graph.node:
        if n.op_type in ("Loop", "Scan"):
            body = [a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH][0]
            assert sorted({b.op_type for b in body.node}) == entry["loop_body_ops"][n.name]
    # exactly one of: native op(s), a Loop/Scan, an unrolled chain
    forms = [bool(entry["native_recurrent_ops"]), entry["has_loop"] or entry["has_scan"], entry["unrolled_steps"] > 0]
    assert sum(forms) == 1, entry["name"]
    assert [i.name for i in proto.graph.input] == [entry["input"]["name"]]
    assert proto.graph.output[0].name == entry["output"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["onnxmod.task"] == entry["task"] and meta["onnxmod.shape"] == entry["shape"]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_onnxruntime_reproduces_recorded_test_accuracy(entry):
    z = np.load(FIXTURES / entry["task"] / "data.npz")
    x, y = z["x_test"], z["y_test"]
    meta = {p.key: p.value for p in onnx.load(str(ROOT / entry["file"])).metadata_props}
    assert json.loads(meta["onnxmod.class_names"]) == [str(c) for c in z["class_names"]]
    sess = _session(ROOT / entry["file"])
    logits = np.concatenate([sess.run([entry["output"]], {entry["input"]["name"]: x[i:i + 500]})[0]
                             for i in range(0, len(x), 500)])
    assert logits.shape[:-1] == y.shape and logits.shape[-1] == len(z["class_names"])
    mask = y != -1
    acc = float((logits.argmax(-1)[mask] == y[mask]).mean())
    assert abs(acc - entry["test_accuracy"]) <= 1e-6, (acc, entry["test_accuracy"])
    # a trained classifier, not noise: better than always answering the majority class
    majority = np.bincount(y[mask]).max() / mask.sum()
    assert acc > majority + 0.02, (acc, majority)


FROZEN = [e for e in ENTRIES if e["check"].get("frozen_length")]


@pytest.mark.parametrize("entry", FROZEN, ids=[f"{e['source']}/{e['name']}" for e in FROZEN])
def test_frozen_length_is_real(entry):
    """Where the manifest says the exporter froze the sequence length, the model runs at that
    length and onnxruntime refuses a shorter one (the graph indexes steps that are not there)."""
    z = np.load(FIXTURES / entry["task"] / "data.npz")
    T = entry["check"]["frozen_length"]["length"]
    x = z["x_test"][:4]
    assert x.shape[1] == T
    sess = _session(ROOT / entry["file"])
    name = entry["input"]["name"]
    assert np.isfinite(sess.run(None, {name: x})[0]).all()
    shorter = np.ascontiguousarray(x[:, 9:] if entry["shape"] == "M:1" else x[:, :-9])
    with pytest.raises(Exception, match="(?i)invalid|index|shape"):
        sess.run(None, {name: shorter})
