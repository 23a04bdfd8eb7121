"""The command line as a user runs it: real subprocesses, exit codes, one-line errors."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from builders import build, random_stack


def onnxmod(*args, cwd=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "onnxmod", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def assert_one_line_error(res, code, *words):
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("onnxmod: error: "), lines[0]
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def _no_recurrent_model(path):
    w = numpy_helper.from_array(np.ones((3, 2), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["logits"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _peephole_model(path):
    spec = random_stack(np.random.default_rng(0), "LSTM", 1, 3, 1)
    proto = build(spec)
    node = next(n for n in proto.graph.node if n.op_type == "LSTM")
    proto.graph.input.append(helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, None, 3]))
    node.input.extend([""] * (5 - len(node.input)) + ["h_in"])
    onnx.save(proto, str(path))


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("case", ["not_onnx", "no_recurrent", "peepholes", "bad_data_shape", "missing_key",
                                  "label_out_of_range"])
def test_bad_input_gives_one_line_error_and_writes_nothing(case, tmp_path, math_lstm1):
    model, data = math_lstm1
    want = {"not_onnx": (3, ["not an ONNX model"]), "no_recurrent": (4, ["no recurrent op"]),
            "peepholes": (4, ["initial_h", "graph input", "LSTM"]), "bad_data_shape": (3, ["x_train", "shape", "40"]),
            "missing_key": (3, ["missing key", "y_test"]), "label_out_of_range": (3, ["y_train", "label"])}
    if case == "not_onnx":
        model = tmp_path / "notes.onnx"
        model.write_text("this is not a model\n")
    elif case == "no_recurrent":
        model = tmp_path / "dense.onnx"
        _no_recurrent_model(model)
    elif case == "peepholes":
        model = tmp_path / "peep.onnx"
        _peephole_model(model)
    else:
        z = dict(np.load(data))
        if case == "bad_data_shape":
            z["x_train"] = z["x_train"][:, :30]  # the 1:1 model reads exactly 40 tokens
        elif case == "missing_key":
            del z["y_test"]
        else:
            z["y_train"] = z["y_train"].copy()
            z["y_train"][0] = 99
        data = tmp_path / "bad.npz"
        np.savez(data, **z)
    before = _tree_digest(tmp_path)
    res = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "out")
    code, words = want[case]
    assert_one_line_error(res, code, *words)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert _tree_digest(tmp_path) == before


def test_decompose_prints_table_and_refuses_existing_output(math_lstm1, tmp_path):
    model, data = math_lstm1
    res = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "composed%" in res.stdout and "algebra" in res.stdout
    again = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o")
    assert_one_line_error(again, 2, "already exists", "--force")
    forced = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o", "--force", "--quiet")
    assert forced.returncode == 0, forced.stderr


def test_inspect_and_evaluate(math_lstm1, tmp_path):
    model, data = math_lstm1
    res = onnxmod("inspect", model)
    assert res.returncode == 0 and "1:1 model" in res.stdout and "LSTM" in res.stdout
    res = onnxmod("evaluate", model, "--data", data, "--json")
    assert res.returncode == 0, res.stderr
    import json

    assert 0.5 < json.loads(res.stdout)["accuracy"] <= 1


def test_usage_errors_are_one_line():
    assert_one_line_error(onnxmod("decompose"), 2, "required")
    assert_one_line_error(onnxmod("frobnicate"), 2, "invalid choice")


def test_decompose_without_evaluation_writes_the_same_modules(tmp_path):
    """--no-evaluate skips only the test-split scoring: the modules are byte-identical to a full
    run's, the report says nothing it did not measure, and `evaluate` scores the files later."""
    import json

    from conftest import fixture_path

    model, data = fixture_path("math_topics", "lstm1.onnx"), fixture_path("math_topics", "data.npz")
    full = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "full")
    quick = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "quick", "--no-evaluate")
    assert full.returncode == 0 and quick.returncode == 0, quick.stderr
    assert "—" in quick.stdout and "fused.onnx" in quick.stdout
    r = json.loads((tmp_path / "quick" / "report.json").read_text())
    assert r["delta"] is None and all(m["delta"] is None and m["params"] > 0 for m in r["modules"])
    for m in r["modules"]:
        assert (tmp_path / "quick" / m["file"]).read_bytes() == (tmp_path / "full" / m["file"]).read_bytes()
    later = onnxmod("evaluate", tmp_path / "quick" / "composed.onnx", "--data", data, "--json")
    assert later.returncode == 0, later.stderr
    assert abs(json.loads(later.stdout)["accuracy"] -
               json.loads((tmp_path / "full" / "report.json").read_text())["composed_accuracy"]) < 1e-12


def test_the_size_option_is_refused_for_translators(tmp_path):
    from conftest import fixture_path

    res = onnxmod("decompose", str(fixture_path("translation", "en_frdeit/lstm.onnx")), "--data",
                  str(fixture_path("translation", "en_frdeit/data.npz")), "--out", str(tmp_path / "t"),
                  "--max-loss", "0.8")
    assert_one_line_error(res, 2, "lstm.onnx", "--max-loss", "encoder-decoder")
    assert not (tmp_path / "t").exists()
