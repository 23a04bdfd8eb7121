"""The committed fixtures of what surrounds the recurrence (fixtures/surround/, issue 20) are what their
manifest says: each file loads and passes the checker, its graph holds the recorded ops, onnxruntime
reproduces the recorded test score on the committed split (accuracy, or greedy-decoded string accuracy
for the CTC models), and the data files derived from committed splits are what the builder says.
Needs only onnx, onnxruntime and numpy (the builder, tools/build_surround_fixtures.py, needs torch /
tensorflow; the tests never do)."""
import collections
import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FIXTURES
from conftest import ROOT as REPO

ROOT = FIXTURES / "surround"
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
ENTRIES = MANIFEST["models"]
IDS = [f"{e['source']}/{e['name']}" for e in ENTRIES]
CTC = [e for e in ENTRIES if e["task"] == "digits_ctc"]


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _op_name(n):
    return n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"


def _greedy(ids, charset):
    out, prev = [], 0
    for c in ids:
        if c != prev and c != 0:
            out.append(charset[c])
        prev = c
    return "".join(out)


def test_manifest_covers_every_file_and_every_row():
    files = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.onnx"))
    assert files == sorted(e["file"] for e in ENTRIES)
    assert not [p for p in ROOT.rglob("*") if p.is_file() and p.suffix not in (".onnx", ".json", ".md", ".npz")]
    # every row of issue 20's table has a fixture; every exporter is there
    assert set(MANIFEST["rows"]) == {e["row"] for e in ENTRIES}
    assert {e["source"] for e in ENTRIES} == {"torch_legacy", "torch_dynamo", "tf2onnx_keras3", "ort_quantized"}
    assert sum(e["file_bytes"] for e in ENTRIES) < 8_000_000


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_file_loads_and_matches_its_record(entry):
    path = ROOT / entry["file"]
    data = path.read_bytes()
    assert len(data) == entry["file_bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    assert not [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert dict(collections.Counter(_op_name(n) for n in proto.graph.node)) == entry["op_counts"]
    assert [i.name for i in proto.graph.input] == [entry["input"]["name"]]
    assert [o.name for o in proto.graph.output] == [entry["output"]["name"]]
    assert {(o.domain or "ai.onnx"): o.version for o in proto.opset_import} == entry["opset"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["onnxmod.task"] == entry["task"]
    if entry["task"] != "digits_ctc":
        assert "onnxmod.vocab_sha256" in meta


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_onnxruntime_reproduces_recorded_test_score(entry):
    z = np.load(REPO / entry["data"])
    x = z["x_test"]
    meta = {p.key: p.value for p in onnx.load(str(ROOT / entry["file"])).metadata_props}
    assert json.loads(meta["onnxmod.class_names"]) == [str(c) for c in z["class_names"]]
    sess = _session(ROOT / entry["file"])
    name = entry["input"]["name"]
    axis = 1 if entry["time_major"] else 0
    logits = np.concatenate([sess.run(None, {name: x[i:i + 500]})[0] for i in range(0, len(x), 500)], axis=axis)
    assert logits.shape[-1] == len(z["class_names"])
    if entry["metric"] == "string_accuracy":
        ids = logits.argmax(-1)
        ids = ids.T if entry["time_major"] else ids
        charset = [str(c) for c in z["charset"]]
        acc = float(np.mean([_greedy(r, charset) == t for r, t in zip(ids, z["text_test"])]))
        assert acc > 0.85, acc  # a trained recognizer, not noise
    else:
        y = z["y_test"]
        assert logits.shape[:-1] == y.shape
        mask = y != -1
        acc = float((logits.argmax(-1)[mask] == y[mask]).mean())
        majority = np.bincount(y[mask]).max() / mask.sum()
        assert acc > majority + 0.02, (acc, majority)
    assert abs(acc - entry["test_accuracy"]) <= 1e-6, (acc, entry["test_accuracy"])


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_other_batch_and_length(entry):
    """Each model runs at a batch size other than the export example's; where the manifest says the
    length is dynamic, at another length too; where it is static, onnxruntime refuses another one."""
    z = np.load(REPO / entry["data"])
    x = z["x_test"][:7]
    sess = _session(ROOT / entry["file"])
    name = entry["input"]["name"]
    out = sess.run(None, {name: x})[0]
    assert out.shape[1 if entry["time_major"] else 0] == 7 and np.isfinite(out).all()
    length = entry["input"]["shape"][3 if x.ndim == 4 else 1]
    static = isinstance(length, int)
    assert static == bool(entry["check"].get("static_length") or entry.get("fixed_length")
                          or entry["task"] == "math_topics")
    shorter = np.ascontiguousarray(x[..., :-8] if x.ndim == 4 else x[:, :-8])
    if static:
        with pytest.raises(Exception, match="(?i)invalid|dimension|shape"):
            sess.run(None, {name: shorter})
    else:
        assert np.isfinite(sess.run(None, {name: shorter})[0]).all()


def test_quantized_models_hold_integer_weights():
    by = {e["name"]: e for e in ENTRIES if e["source"] == "ort_quantized"}
    dyn = by["math_lstm1_dynamic_qint8"]
    assert dyn["op_counts"]["com.microsoft.DynamicQuantizeLSTM"] == 1 and dyn["op_counts"]["MatMulInteger"] == 1
    assert dyn["onnx_weights"]["integer"] > 200_000 > dyn["onnx_weights"]["float"]
    for name in ("genre_lstm_maxpool_qdq", "digits_crnn_ctc_qdq"):
        e = by[name]
        assert e["op_counts"]["QuantizeLinear"] > 0 and e["op_counts"]["DequantizeLinear"] > 0
        assert e["op_counts"]["LSTM"] == 1  # onnxruntime's QDQ quantizer leaves the LSTM float
    # the quantized files answer as their float sources do on almost every test row
    assert all(e["check"]["argmax_agreement"] > 0.98 for e in by.values())


def test_brown_genre_post_is_brown_genre_with_the_padding_moved():
    pre = np.load(FIXTURES / "brown_genre" / "data.npz")
    post = np.load(ROOT / "brown_genre_post" / "data.npz")
    for split in ("train", "val", "test"):
        a, b = pre[f"x_{split}"], post[f"x_{split}"]
        assert a.shape == b.shape and np.array_equal(pre[f"y_{split}"], post[f"y_{split}"])
        n = (a != 0).sum(1)
        assert np.array_equal(n, (b != 0).sum(1))
        cols = np.arange(a.shape[1])
        assert ((b != 0) == (cols[None, :] < n[:, None])).all()  # real tokens first, padding after
        assert np.array_equal(a[a != 0], b[b != 0])  # the same tokens in the same order


def test_digits_ctc_data_matches_its_model():
    """The per-step labels are the CRNN's own argmax; its greedy decoding is the text on most rows;
    every image is 4-5 committed digit images side by side."""
    z = np.load(ROOT / "digits_ctc" / "data.npz")
    assert [str(c) for c in z["charset"]] == ["<blank>"] + [str(i) for i in range(10)]
    sess = _session(ROOT / "torch_legacy" / "digits_crnn_ctc.onnx")
    for split in ("train", "val", "test"):
        x, y, text = z[f"x_{split}"], z[f"y_{split}"], z[f"text_{split}"]
        assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 40) and y.shape == (len(x), 20)
        assert all(4 <= len(t) <= 5 for t in text)
        assert np.array_equal(sess.run(None, {"image": x})[0].argmax(-1).T, y)
        assert np.mean([_greedy(r, [str(c) for c in z["charset"]]) == t for r, t in zip(y, text)]) > 0.85
    digits = np.load(FIXTURES / "digits" / "data.npz")["x_test"]
    for img in z["x_test"][:20, 0]:  # the first digit of each image is a committed test digit
        first_ink = np.flatnonzero(img.any(0))[0]
        starts = range(max(0, first_ink - 7), first_ink + 1)
        assert any(np.array_equal(img[:, s:s + 8], d) for s in starts for d in digits)
