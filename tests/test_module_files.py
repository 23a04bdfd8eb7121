"""``--modules standalone|none|auto`` (``onnxmod.module_files``) and ``onnxmod split``."""
import json

import numpy as np
import onnxruntime as ort
import pytest
from conftest import fixture_path
from test_cli import assert_one_line_error, onnxmod

from onnxmod import api, module_files
from onnxmod.concern import ConcernConfig


def _outputs(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})


def test_decide_by_size():
    assert module_files.decide("standalone", 10**12, 1, 67, "o") == (True, None)
    assert module_files.decide("none", 1, 1, 2, "o") == (False, None)
    assert module_files.decide("auto", 8 * 54 << 20, 54 << 20, 8, "o") == (True, None)
    write, line = module_files.decide("auto", 67 * (22 << 20), 54 << 20, 67, "out/ocr")
    assert not write and "67 module files would take 1,474 MB (27x the model)" in line
    assert "onnxmod split out/ocr/composed.onnx --class C" in line
    assert module_files.decide("auto", 200 << 20, 1 << 20, 300, "o") == (True, None)  # under the 256 MB floor
    with pytest.raises(Exception, match="--modules 'some'"):
        module_files.decide("some", 1, 1, 1, "o")


@pytest.mark.parametrize("task,model,kw", [
    ("math_topics", "lstm1.onnx", {}),  # rolled
    ("ctc", "crnn_batch_first.onnx", {"labels": "model"}),  # unrolled, a CTC head
])
def test_none_writes_no_module_files_and_split_recovers_them(task, model, kw, tmp_path):
    model, data = fixture_path(task, model), fixture_path(task, "data.npz")
    cfg = dict(config=ConcernConfig(guard=None), evaluate=False, **kw)
    r = api.decompose(model, data, tmp_path / "none", modules="none", **cfg)
    assert r["module_files"] == "none" and all(m["file"] is None for m in r["modules"])
    assert not (tmp_path / "none" / "modules").exists() and (tmp_path / "none" / "composed.onnx").exists()
    marker = json.loads((tmp_path / "none" / ".onnxmod-output").read_text())
    assert not any("modules/" in f for f in json.dumps(marker).split('"'))
    s = api.decompose(model, data, tmp_path / "std", modules="standalone", **cfg)
    with np.load(data) as z:
        x = z["x_test"][:100]
    for m in s["modules"][:3]:
        got = api.split(tmp_path / "none" / "composed.onnx", tmp_path / f"{m['name']}.onnx", m["name"])
        assert got["class_name"] == m["name"] and got["parameters"] == m["params"]
        for a, b in zip(_outputs(tmp_path / f"{m['name']}.onnx", x), _outputs(tmp_path / "std" / m["file"], x)):
            np.testing.assert_array_equal(a, b)
        assert api.inspect(tmp_path / f"{m['name']}.onnx")["kind"] == "module"


def test_auto_says_in_one_line_when_it_writes_no_module_files(math_lstm1, tmp_path, monkeypatch):
    monkeypatch.setattr(module_files, "FLOOR", 0)
    monkeypatch.setattr(module_files, "FACTOR", 1)
    with pytest.warns(UserWarning, match=r"8 module files would take .* writing the composition only"):
        r = api.decompose(*math_lstm1, tmp_path / "o", config=ConcernConfig(guard=None), evaluate=False)
    assert r["module_files"] == "none"


def test_cli_modules_none_and_split(math_lstm1, tmp_path):
    model, data = math_lstm1
    res = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o", "--modules", "none", "--no-guard")
    assert res.returncode == 0, res.stderr
    assert "(composed.onnx, fused.onnx, report.json" in res.stdout and "modules/" not in res.stdout
    res = onnxmod("split", tmp_path / "o" / "composed.onnx", "--class", "calculus", "--out", tmp_path / "c.onnx")
    assert res.returncode == 0 and "module of class 'calculus'" in res.stdout, res.stderr
    res = onnxmod("split", tmp_path / "o" / "composed.onnx", "--class", "2", "--out", tmp_path / "c2.onnx", "--json")
    assert json.loads(res.stdout)["class_name"] == "calculus"
    assert_one_line_error(onnxmod("split", tmp_path / "o" / "composed.onnx", "--class", "geometry", "--out",
                                  tmp_path / "g.onnx"), 3, "no module of class 'geometry'")
    assert_one_line_error(onnxmod("split", tmp_path / "o" / "fused.onnx", "--class", "algebra", "--out",
                                  tmp_path / "f.onnx"), 5, "fused")
    assert_one_line_error(onnxmod("split", model, "--class", "algebra", "--out", tmp_path / "m.onnx"), 3,
                          "not an onnxmod composition")
    assert not (tmp_path / "g.onnx").exists()


def test_big_compositions_are_checked_by_their_skeleton(math_lstm1, tmp_path):
    """``compose.check`` with the size limit at 0 checks the skeleton (weights as typed inputs): it
    passes what the full check passes and refuses a node whose types do not agree."""
    import onnx
    from onnx import helper

    from onnxmod.compose import check

    api.decompose(*math_lstm1, tmp_path / "o", config=ConcernConfig(guard=None), evaluate=False)
    proto = onnx.load(str(tmp_path / "o" / "composed.onnx"))
    check(proto)
    check(proto, limit=0)
    proto.graph.node.append(helper.make_node("Add", ["label", "scores"], ["broken"]))  # int64 + float
    with pytest.raises(onnx.shape_inference.InferenceError):
        check(proto, limit=0)


def test_estimate_reads_a_quantized_head_as_stored():
    """A QDQ head's weight is the integers its DequantizeLinear reads (no ``values`` on the
    dequantized tensor): the estimate takes the head's classes off at their stored size."""
    from onnxmod.graph import Model
    from onnxmod.quantized import stored

    model = Model.load(fixture_path("surround", "ort_quantized/genre_lstm_maxpool_qdq.onnx"))
    w = stored(model.head.node, 1)
    assert w.dq is not None and w.raw.dtype == np.int8
    C = model.num_classes
    want = 4 * (model.original.ByteSize() - w.raw.nbytes * (C - 3) / C)
    assert module_files.estimate(model, 4) == int(want)
