"""Reliability: onnxmod in a deployment pipeline never crashes, never leaves half an output and never
touches its inputs.

Every bad input runs the real CLI as a subprocess (as a pipeline would, without PYTHONWARNINGS
games) and must give: the documented exit code, exactly one stderr line ``onnxmod: error: ...``
naming the file/node/field, no traceback, and a working directory byte-identical to before (no
output, no temporary ``.name.*`` sibling, inputs unchanged). Interruptions (SIGTERM/SIGINT, or an
exception midway through the API) must leave no output either.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import build, random_stack
from conftest import FIXTURES
from onnx import TensorProto, helper, numpy_helper

from onnxmod import api
from onnxmod.errors import OutputError

# ---- helpers ----------------------------------------------------------------------------------


def _env():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return env


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "onnxmod", *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def stderr_lines(res):
    return [ln for ln in res.stderr.splitlines() if ln.strip()]


def assert_refused(res, code, *words):
    """The exact exit code, exactly one stderr line ``onnxmod: error:`` holding ``words``, no traceback."""
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = stderr_lines(res)
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("onnxmod: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its content hash: equal snapshots mean nothing was written,
    removed or modified (a temporary ``.out.*`` sibling shows up as a new name)."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_dir():
            out[key] = "dir"
            continue
        try:
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        except PermissionError:  # the chmod 000 case as a normal user
            st = p.stat()
            out[key] = ("unreadable", st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def refuse(tmp: Path, args, code, *words, outputs=("out",)):
    """Run the CLI and check it refused cleanly and left ``tmp`` exactly as it was."""
    before = snapshot(tmp)
    res = cli(*args)
    assert_refused(res, code, *words)
    for name in outputs:
        assert not (tmp / name).exists(), name
        assert not [p.name for p in tmp.iterdir() if p.name.startswith(f".{name}.")], name
    assert snapshot(tmp) == before
    return res


def real_fixture(name: str) -> Path:
    """A fixture file; another job may be rebuilding fixtures, so wait for it (up to 4 min)."""
    p = FIXTURES / "math_topics" / name
    deadline = time.monotonic() + 240
    while True:
        if p.exists():
            size = p.stat().st_size
            time.sleep(0.2)
            if size > 0 and p.exists() and p.stat().st_size == size:
                return p
        if time.monotonic() > deadline:
            pytest.fail(f"fixture {p} is missing; rebuild with python tools/build_fixtures.py")
        time.sleep(5)


@pytest.fixture
def real(tmp_path):
    """Private copies of the real 1:1 LSTM fixture and its data (so hashing them is race-free)."""
    model, data = tmp_path / "lstm1.onnx", tmp_path / "data.npz"
    shutil.copyfile(real_fixture("lstm1.onnx"), model)
    shutil.copyfile(real_fixture("data.npz"), data)
    return model, data


def float_model(path: Path, op="LSTM", classes=4, features=5, hidden=6, many_output=False, seed=0) -> Path:
    onnx.save(build(random_stack(np.random.default_rng(seed), op, 1, hidden, 1, features=features,
                                 classes=classes, many_output=many_output)), str(path))
    return path


def float_data(path: Path, n=60, steps=7, features=5, classes=4, many_output=False, seed=1, **override) -> Path:
    rng = np.random.default_rng(seed)
    z = {}
    for split, rows in (("train", n), ("test", max(8, n // 3))):
        z[f"x_{split}"] = rng.normal(size=(rows, steps, features)).astype(np.float32)
        shape = (rows, steps) if many_output else (rows,)
        y = rng.integers(0, classes, shape).astype(np.int64)
        y.reshape(-1)[:classes] = np.arange(classes)  # every class present
        z[f"y_{split}"] = y
    z.update(override)
    np.savez(path, **{k: v for k, v in z.items() if v is not None})
    return path


def _fuzz():
    """tools/fuzz.py, whose generators (IR 3, computed heads, folding and zip bombs) these tests reuse."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import fuzz

    return fuzz


def lstm_proto(hidden=3):
    return build(random_stack(np.random.default_rng(0), "LSTM", 1, hidden, 1))


def edited_lstm(path: Path, edit) -> Path:
    proto = lstm_proto()
    node = next(n for n in proto.graph.node if n.op_type == "LSTM")
    edit(proto, node)
    onnx.save(proto, str(path))
    return path


def scan_rnn(path: Path, F=4, H=3, C=3, backwards=False) -> Path:
    """A tanh RNN written as a Scan whose body is the cell (what tf2onnx emits for Keras SimpleRNN),
    batch-major; ``backwards``: scanning the sequence from its end (go_backwards)."""
    rng = np.random.default_rng(0)
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_t", "W"], ["xw"]), helper.make_node("MatMul", ["h_in", "R"], ["hr"]),
         helper.make_node("Add", ["xw", "hr"], ["s"]), helper.make_node("Add", ["s", "b"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["h_out"]), helper.make_node("Identity", ["h_out"], ["y_t"])],
        "cell", [helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["B", H]),
                 helper.make_tensor_value_info("x_t", TensorProto.FLOAT, ["B", F])],
        [helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["B", H]),
         helper.make_tensor_value_info("y_t", TensorProto.FLOAT, ["B", H])],
        [numpy_helper.from_array(rng.normal(size=(F, H)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.normal(size=(H, H)).astype(np.float32), "R"),
         numpy_helper.from_array(rng.normal(size=(H,)).astype(np.float32), "b")])
    nodes = [helper.make_node("Shape", ["x"], ["xs"]),
             helper.make_node("Gather", ["xs", "zero"], ["batch"], axis=0),
             helper.make_node("Concat", ["batch", "hsz"], ["h0shape"], axis=0),
             helper.make_node("ConstantOfShape", ["h0shape"], ["h0"]),
             helper.make_node("Scan", ["h0", "x"], ["h_last", "Y"], body=body, num_scan_inputs=1,
                              scan_input_axes=[1], scan_output_axes=[1], name="rnn_scan",
                              **({"scan_input_directions": [1]} if backwards else {})),
             helper.make_node("Gemm", ["h_last", "hw", "hb"], ["logits"], transB=1, name="head")]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([H], np.int64), "hsz"),
             numpy_helper.from_array(rng.normal(size=(C, H)).astype(np.float32), "hw"),
             numpy_helper.from_array(rng.normal(size=(C,)).astype(np.float32), "hb")]
    g = helper.make_graph(nodes, "scan_rnn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", F])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", C])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return path


def _read_npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# ---- bad model files -----------------------------------------------------------------------


def test_missing_model_file(tmp_path, real):
    _, data = real
    refuse(tmp_path, ["decompose", tmp_path / "nope.onnx", "--data", data, "--out", tmp_path / "out"],
           3, "nope.onnx", "no such file")


def test_missing_data_file(tmp_path, real):
    model, _ = real
    refuse(tmp_path, ["decompose", model, "--data", tmp_path / "nope.npz", "--out", tmp_path / "out"],
           3, "nope.npz", "no such file")


def test_unreadable_model_file(tmp_path, real):
    model, data = real
    os.chmod(model, 0)
    try:
        if os.access(model, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop root from reading the file, so an "
                        "unreadable input cannot be made here (test_unreadable_model_api covers the path)")
        refuse(tmp_path, ["decompose", model, "--data", data, "--out", tmp_path / "out"],
               3, "lstm1.onnx", "cannot read")
    finally:
        os.chmod(model, 0o644)


def test_unreadable_model_api(tmp_path, real, monkeypatch):
    """The same refusal in-process, whoever runs the tests: opening the file fails with EACCES."""
    import builtins

    from onnxmod import io
    from onnxmod.errors import InputError

    model, _ = real
    real_open = builtins.open

    def no_access(file, *a, **k):
        if Path(str(file)) == model:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", no_access)
    with pytest.raises(InputError, match="lstm1.onnx: cannot read .*Permission denied"):
        io.load_onnx(model)


def test_empty_model_file(tmp_path, real):
    _, data = real
    (tmp_path / "empty.onnx").write_bytes(b"")
    refuse(tmp_path, ["decompose", tmp_path / "empty.onnx", "--data", data, "--out", tmp_path / "out"],
           3, "empty.onnx", "empty file")


def test_truncated_model_file(tmp_path, real):
    model, data = real
    raw = model.read_bytes()
    (tmp_path / "half.onnx").write_bytes(raw[: len(raw) // 2])
    refuse(tmp_path, ["decompose", tmp_path / "half.onnx", "--data", data, "--out", tmp_path / "out"],
           3, "half.onnx", "not an ONNX model")


def test_corrupt_model_file(tmp_path, real):
    model, data = real
    raw = bytearray(model.read_bytes())
    raw[:64] = np.random.default_rng(7).integers(0, 256, 64, dtype=np.uint8).tobytes()  # smash the header
    (tmp_path / "corrupt.onnx").write_bytes(bytes(raw))
    refuse(tmp_path, ["decompose", tmp_path / "corrupt.onnx", "--data", data, "--out", tmp_path / "out"],
           3, "corrupt.onnx")


def test_garbage_model_file(tmp_path, real):
    _, data = real
    (tmp_path / "garbage.onnx").write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    refuse(tmp_path, ["decompose", tmp_path / "garbage.onnx", "--data", data, "--out", tmp_path / "out"],
           3, "garbage.onnx")


@pytest.mark.parametrize("command", ["inspect", "evaluate", "compose"])
def test_every_command_refuses_a_garbage_model(tmp_path, real, command):
    _, data = real
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07\x12junk" * 20)
    args = {"inspect": ["inspect", tmp_path / "junk.onnx"],
            "evaluate": ["evaluate", tmp_path / "junk.onnx", "--data", data],
            "compose": ["compose", tmp_path / "junk.onnx", "--out", tmp_path / "out.onnx"]}[command]
    refuse(tmp_path, args, 3, "junk.onnx", outputs=("out.onnx",))


def test_directory_as_model(tmp_path, real):
    _, data = real
    (tmp_path / "adir.onnx").mkdir()
    refuse(tmp_path, ["decompose", tmp_path / "adir.onnx", "--data", data, "--out", tmp_path / "out"],
           3, "adir.onnx", "is a directory")


def test_model_without_recurrent_op(tmp_path, real):
    _, data = real
    w = numpy_helper.from_array(np.ones((3, 2), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["logits"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "dense.onnx"))
    refuse(tmp_path, ["decompose", tmp_path / "dense.onnx", "--data", data, "--out", tmp_path / "out"],
           4, "dense.onnx", "no recurrent op")


def _peepholes(proto, node):
    proto.graph.initializer.append(numpy_helper.from_array(np.ones((1, 9), np.float32), "P0"))
    node.input.extend([""] * (7 - len(node.input)) + ["P0"])


def _clip(proto, node):
    node.attribute.append(helper.make_attribute("clip", 5.0))


def _input_forget(proto, node):
    node.attribute.append(helper.make_attribute("input_forget", 1))


def _initial_h(proto, node):
    """A learned initial state: a constant [1, 1, H] broadcast over the batch by Expand."""
    proto.graph.initializer.append(numpy_helper.from_array(np.full((1, 1, 3), 0.5, np.float32), "h0"))
    proto.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    proto.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "two"))
    proto.graph.initializer.append(numpy_helper.from_array(np.array([3], np.int64), "H3"))
    nodes = list(proto.graph.node)
    at = nodes.index(node)
    nodes[at:at] = [helper.make_node("Shape", [node.input[0]], ["x_shape"]),
                    helper.make_node("Slice", ["x_shape", "one", "two"], ["batch"]),
                    helper.make_node("Concat", ["one", "batch", "H3"], ["h0_shape"], axis=0),
                    helper.make_node("Expand", ["h0", "h0_shape"], ["h0_b"])]
    node.input.extend(["", "h0_b"])
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def _sequence_lens(proto, node):
    proto.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int32), "lens"))
    node.input.extend(["lens"])


def _layout(proto, node):
    """The same LSTM written batch-major: it reads x [B, T, F] as is, and Y is [B, T, D, H]."""
    node.attribute.append(helper.make_attribute("layout", 1))
    node.input[0] = "x"
    ax = next(i for i in proto.graph.initializer if i.name == "ax0")
    ax.CopyFrom(numpy_helper.from_array(np.array([2], np.int64), "ax0"))
    for n in proto.graph.node:
        if n.op_type == "Transpose" and n.input[0] == "S0":
            n.attribute[0].CopyFrom(helper.make_attribute("perm", [0, 1, 2]))


def _streaming_h(proto, node):
    proto.graph.input.append(helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, None, 3]))
    node.input.extend(["", "h_in"])


@pytest.mark.parametrize("edit", [_peepholes, _clip, _input_forget, _initial_h, _layout],
                         ids=["peepholes", "clip", "input_forget", "initial_h", "layout"])
def test_the_whole_lstm_spec_decomposes(tmp_path, edit):
    """Peepholes, clip, a coupled forget gate, a constant non-zero initial state and the
    batch-major layout are part of the op's spec: the model decomposes (exactness is in
    tests/test_cells.py)."""
    model = edited_lstm(tmp_path / "feature.onnx", edit)
    data = float_data(tmp_path / "d.npz")
    res = cli("decompose", model, "--data", data, "--out", tmp_path / "out", "--quiet")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "composed.onnx").exists()


def test_streaming_state_input_is_refused_naming_it(tmp_path):
    model = edited_lstm(tmp_path / "feature.onnx", _streaming_h)
    data = float_data(tmp_path / "d.npz")
    refuse(tmp_path, ["decompose", model, "--data", data, "--out", tmp_path / "out"],
           4, "feature.onnx", "'rnn0'", "LSTM", "initial_h", "graph input", "not supported")


def test_recurrence_inside_a_backward_scan(tmp_path):
    """A Scan cell is a general cell (tests/recurrence); one that scans backwards is refused."""
    model = scan_rnn(tmp_path / "scan.onnx", backwards=True)
    data = float_data(tmp_path / "d.npz", features=4, classes=3)
    res = refuse(tmp_path, ["decompose", model, "--data", data, "--out", tmp_path / "out"],
                 4, "scan.onnx", "'rnn_scan'", "Scan", "not supported yet")
    assert "native" in res.stderr  # says why, and what to do: export native LSTM/GRU/RNN ops


def test_external_data_file_deleted(tmp_path):
    proto = build(random_stack(np.random.default_rng(0), "LSTM", 1, 8, 1, features=16))
    (tmp_path / "ext").mkdir()
    onnx.save(proto, str(tmp_path / "ext" / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    (tmp_path / "ext" / "weights.bin").unlink()
    data = float_data(tmp_path / "d.npz", features=16)
    refuse(tmp_path, ["decompose", tmp_path / "ext" / "m.onnx", "--data", data, "--out", tmp_path / "out"],
           3, "m.onnx", "weights.bin", "missing")


# ---- bad data files ------------------------------------------------------------------------


def _bad_data(tmp_path, data, change) -> Path:
    z = _read_npz(data)
    change(z)
    out = tmp_path / "bad.npz"
    np.savez(out, **z)
    return out


def _y_out_of_range(z):
    z["y_test"] = z["y_test"].copy()
    z["y_test"][5] = 8  # the model has 8 classes: 0..7


def _y_negative(z):
    z["y_train"] = z["y_train"].copy()
    z["y_train"][3] = -1  # padding exists only for many-output data


@pytest.mark.parametrize("change, words", [
    (lambda z: z.pop("y_test"), ["missing key", "y_test"]),
    (lambda z: [z.pop("x_train"), z.pop("y_train")], ["missing key", "x_train", "y_train"]),
    (lambda z: z.update(x_train=z["x_train"].astype(np.float32)), ["x_train", "float32", "integer token ids"]),
    (lambda z: z.update(x_test=z["x_test"][:, :30]), ["x_test", "[2359, 30]", "40"]),
    (lambda z: z.update(y_train=np.stack([z["y_train"]] * 2, axis=1)), ["y_train", "one-output"]),
    (lambda z: z.update(y_test=z["y_test"][:, None, None]), ["y_test", "shape"]),
    (lambda z: z.update(y_train=z["y_train"].astype(np.float64)), ["y_train", "float64", "integer class ids"]),
    (_y_out_of_range, ["y_test", "label 8", "8 classes"]),
    (_y_negative, ["y_train", "label -1", ">= 0"]),
    (lambda z: z.update(x_test=z["x_test"][:10]), ["x_test", "10 rows", "y_test"]),
], ids=["missing_y_test", "missing_train", "float_token_ids", "x_wrong_length", "y_wrong_rank_2d",
        "y_wrong_rank_3d", "float_labels", "label_out_of_range", "negative_label_one_output", "row_mismatch"])
def test_bad_data(tmp_path, real, change, words):
    model, data = real
    bad = _bad_data(tmp_path, data, change)
    refuse(tmp_path, ["decompose", model, "--data", bad, "--out", tmp_path / "out"], 3, "bad.npz", *words)


def test_token_ids_beyond_the_vocabulary(tmp_path, real):
    """Data encoded with another vocabulary: refused up front, not as an onnxruntime failure mid-run
    (whose log line would also break the one-line contract)."""
    model, data = real
    z = _read_npz(data)
    z["x_test"] = z["x_test"].copy()
    z["x_test"][3, 5] = 99999
    bad = tmp_path / "bad.npz"
    np.savez(bad, **z)
    refuse(tmp_path, ["evaluate", model, "--data", bad], 3, "bad.npz", "x_test", "token id 99999", "1934",
           outputs=())


@pytest.mark.parametrize("content", [b"x_train,y_train\n1,2\n", b"PK\x03\x04 truncated zip", b""],
                         ids=["text", "broken_zip", "empty"])
def test_data_not_an_npz(tmp_path, real, content):
    model, _ = real
    (tmp_path / "bad.npz").write_bytes(content)
    refuse(tmp_path, ["decompose", model, "--data", tmp_path / "bad.npz", "--out", tmp_path / "out"],
           3, "bad.npz", "npz")


def test_data_is_a_single_npy_array(tmp_path, real):
    model, _ = real
    with open(tmp_path / "bad.npz", "wb") as f:
        np.save(f, np.zeros((3, 40), np.int64))
    refuse(tmp_path, ["decompose", model, "--data", tmp_path / "bad.npz", "--out", tmp_path / "out"],
           3, "bad.npz", "npz")


def test_nan_in_float_features(tmp_path):
    model = float_model(tmp_path / "f.onnx")
    data = float_data(tmp_path / "d.npz")
    z = _read_npz(data)
    z["x_train"][4, 2, 1] = np.nan
    np.savez(data, **z)
    refuse(tmp_path, ["decompose", model, "--data", data, "--out", tmp_path / "out"], 3, "d.npz", "x_train", "NaN")


def test_class_without_training_samples_warns_and_is_skipped(tmp_path):
    model = float_model(tmp_path / "f.onnx", classes=4)
    data = float_data(tmp_path / "d.npz", classes=4)
    z = _read_npz(data)
    z["y_train"] = np.where(z["y_train"] == 3, 0, z["y_train"])  # class 3: test samples only
    np.savez(data, **z)
    inputs = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (model, data)}
    res = cli("decompose", model, "--data", data, "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    lines = stderr_lines(res)
    assert all(ln.startswith("onnxmod: warning: ") for ln in lines), res.stderr
    # this 6-unit model's modules keep every unit at cap 0.05 (said in a line of its own)
    assert len([ln for ln in lines if "whole model" not in ln]) == 1, res.stderr
    assert "d.npz" in lines[0] and "'3'" in lines[0] and "no training samples" in lines[0]
    modules = sorted(p.name for p in (tmp_path / "out" / "modules").iterdir())
    assert modules == ["0.onnx", "1.onnx", "2.onnx"]
    # the warning is part of the output contract: shown even when the environment ignores warnings
    quiet = subprocess.run([sys.executable, "-m", "onnxmod", "decompose", model, "--data", data, "--out",
                            tmp_path / "out2"], capture_output=True, text=True,
                           env=dict(_env(), PYTHONWARNINGS="ignore"), timeout=300)
    assert quiet.returncode == 0 and stderr_lines(quiet) == lines, quiet.stderr
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs} == inputs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


# ---- outputs -------------------------------------------------------------------------------


def test_existing_output_is_refused_unless_forced(tmp_path):
    model = float_model(tmp_path / "f.onnx")
    data = float_data(tmp_path / "d.npz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious\n")
    refuse(tmp_path, ["decompose", model, "--data", data, "--out", tmp_path / "out"], 2,
           "out", "already exists", "--force", outputs=())
    # a folder onnxmod did not write is never replaced, --force or not
    refuse(tmp_path, ["decompose", model, "--data", data, "--out", tmp_path / "out", "--force"], 2,
           "out", "not a previous onnxmod output", ".onnxmod-output", outputs=())
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious\n"
    res = cli("decompose", model, "--data", data, "--out", tmp_path / "new", "--quiet")
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    res = cli("decompose", model, "--data", data, "--out", tmp_path / "new", "--force", "--quiet")
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    assert (tmp_path / "new" / "composed.onnx").exists() and (tmp_path / "new" / ".onnxmod-output").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "f.onnx", "new", "out"]


def _inputs_in(folder: Path):
    folder.mkdir()
    model = float_model(folder / "f.onnx", classes=3)
    data = float_data(folder / "d.npz", classes=3)
    (folder / "notes.txt").write_text("unrelated\n")
    return model, data


@pytest.mark.parametrize("where", ["same", "parent", "symlink", "dotdot"])
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_output_folder_holding_the_inputs_is_refused(tmp_path, where, force):
    """Issue 12 (data loss): --out equal to, or a parent of, the inputs' folder (symlinks and '..'
    resolved) is refused before anything is touched, --force or not."""
    model, data = _inputs_in(tmp_path / "IN")
    (tmp_path / "IN" / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "IN")
    out = {"same": tmp_path / "IN", "parent": tmp_path, "symlink": tmp_path / "link",
           "dotdot": tmp_path / "IN" / "sub" / ".."}[where]
    args = ["decompose", model, "--data", data, "--out", out, "--quiet"] + (["--force"] if force else [])
    refuse(tmp_path, args, 2, "holds the input", outputs=())


def test_force_replaces_a_previous_output_only_if_it_holds_nothing_else(tmp_path):
    model, data = _inputs_in(tmp_path / "IN")
    out = tmp_path / "out"
    api.decompose(model, data, out, progress=False, evaluate=False)
    (out / "modules" / "mine.txt").write_text("mine\n")
    refuse(tmp_path, ["decompose", model, "--data", data, "--out", out, "--force"], 2,
           "modules/mine.txt", "did not write", outputs=())
    (out / "modules" / "mine.txt").unlink()
    (out / "extra").mkdir()
    refuse(tmp_path, ["decompose", model, "--data", data, "--out", out, "--force"], 2, "'extra'", outputs=())
    (out / "extra").rmdir()
    api.decompose(model, data, out, force=True, progress=False, evaluate=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IN", "out"]


@pytest.mark.parametrize("target", ["module", "hardlink", "symlink", "foreign", "foreign-force"])
def test_compose_never_writes_over_an_input_or_a_foreign_file(tmp_path, decomposed, target):
    for k in (0, 1):
        shutil.copy(decomposed / "out" / "modules" / f"{k}.onnx", tmp_path / f"m{k}.onnx")
    (tmp_path / "notes.onnx").write_text("not ours\n")
    os.link(tmp_path / "m0.onnx", tmp_path / "hard.onnx")
    (tmp_path / "sym.onnx").symlink_to(tmp_path / "m1.onnx")
    out, code, words = {"module": (tmp_path / "m1.onnx", 2, ["overwrite the input"]),
                        "hardlink": (tmp_path / "hard.onnx", 2, ["overwrite the input"]),
                        "symlink": (tmp_path / "sym.onnx", 2, ["overwrite the input"]),
                        "foreign": (tmp_path / "notes.onnx", 2, ["already exists"]),
                        "foreign-force": (tmp_path / "notes.onnx", 2, ["not an ONNX file written by onnxmod"])}[target]
    args = ["compose", tmp_path / "m0.onnx", tmp_path / "m1.onnx", "--out", out]
    refuse(tmp_path, args + ["--force"] if target != "foreign" else args, code, *words, outputs=())


def test_replace_never_writes_over_its_inputs(tmp_path, decomposed):
    shutil.copy(decomposed / "out" / "composed.onnx", tmp_path / "c.onnx")
    shutil.copy(decomposed / "out" / "modules" / "1.onnx", tmp_path / "m1.onnx")
    for out in ("c.onnx", "m1.onnx"):
        refuse(tmp_path, ["replace", tmp_path / "c.onnx", "--with", tmp_path / "m1.onnx", "--out", tmp_path / out,
                          "--force"], 2, "overwrite the input", outputs=())


def test_output_file_in_place_of_directory(tmp_path):
    model = float_model(tmp_path / "f.onnx")
    data = float_data(tmp_path / "d.npz")
    (tmp_path / "out").write_text("a file\n")
    refuse(tmp_path, ["decompose", model, "--data", data, "--out", tmp_path / "out", "--force"], 2,
           "out", "not a directory", outputs=())


def test_output_that_cannot_be_created(tmp_path):
    """--out under a regular file (not a directory, whoever runs it): exit 73, nothing written."""
    model = float_model(tmp_path / "f.onnx")
    data = float_data(tmp_path / "d.npz")
    (tmp_path / "plain").write_text("a file\n")
    refuse(tmp_path, ["decompose", model, "--data", data, "--out", tmp_path / "plain" / "out"], 73,
           "plain", "not a directory", outputs=())


def test_compose_output_that_cannot_be_created(tmp_path, decomposed):
    shutil.copy(decomposed / "out" / "modules" / "0.onnx", tmp_path / "m0.onnx")
    shutil.copy(decomposed / "out" / "modules" / "1.onnx", tmp_path / "m1.onnx")
    (tmp_path / "plain").write_text("a file\n")
    refuse(tmp_path, ["compose", tmp_path / "m0.onnx", tmp_path / "m1.onnx", "--out", tmp_path / "plain" / "c.onnx"],
           73, "c.onnx", outputs=())


def test_output_write_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    """A full disk while the modules are written: OutputError, the partial directory is removed."""
    from onnxmod import io

    model = float_model(tmp_path / "f.onnx", classes=3)
    data = float_data(tmp_path / "d.npz", classes=3)
    real_fsync, calls = os.fsync, []

    def full_disk(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(io.atomic.os, "fsync", full_disk)
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="No space left on device"):
        api.decompose(model, data, tmp_path / "out", progress=False)
    assert snapshot(tmp_path) == before


# ---- compose and evaluate ------------------------------------------------------------------


@pytest.fixture(scope="module")
def decomposed(tmp_path_factory):
    """Modules of a small float-input LSTM whose data carries a vocabulary fingerprint."""
    root = tmp_path_factory.mktemp("decomposed")
    model = float_model(root / "f.onnx", classes=3)
    data = float_data(root / "d.npz", classes=3, vocab=np.array(["<pad>", "a", "b"]))
    api.decompose(model, data, root / "out", progress=False)
    return root


def test_compose_of_a_plain_model(tmp_path, decomposed):
    shutil.copy(decomposed / "out" / "modules" / "0.onnx", tmp_path / "m0.onnx")
    shutil.copy(decomposed / "f.onnx", tmp_path / "f.onnx")
    refuse(tmp_path, ["compose", tmp_path / "m0.onnx", tmp_path / "f.onnx", "--out", tmp_path / "pair.onnx"],
           3, "f.onnx", "not an onnxmod module", outputs=("pair.onnx",))


def test_compose_of_garbage(tmp_path, decomposed):
    shutil.copy(decomposed / "out" / "modules" / "0.onnx", tmp_path / "m0.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01junk" * 10)
    refuse(tmp_path, ["compose", tmp_path / "m0.onnx", tmp_path / "junk.onnx", "--out", tmp_path / "pair.onnx"],
           3, "junk.onnx", outputs=("pair.onnx",))


def test_compose_of_two_modules_of_one_class(tmp_path, decomposed):
    shutil.copy(decomposed / "out" / "modules" / "1.onnx", tmp_path / "a.onnx")
    shutil.copy(decomposed / "out" / "modules" / "1.onnx", tmp_path / "b.onnx")
    refuse(tmp_path, ["compose", tmp_path / "a.onnx", tmp_path / "b.onnx", "--out", tmp_path / "pair.onnx"],
           5, "a.onnx", "b.onnx", "class '1'", outputs=("pair.onnx",))


def test_compose_of_modules_with_different_vocabularies(tmp_path, decomposed):
    shutil.copy(decomposed / "out" / "modules" / "0.onnx", tmp_path / "m0.onnx")
    other = onnx.load(str(decomposed / "out" / "modules" / "1.onnx"))
    entry = next(p for p in other.metadata_props if p.key == "onnxmod.vocab_sha256")
    assert entry.value  # the data carried a vocabulary
    entry.value = hashlib.sha256(b"another vocabulary").hexdigest()
    onnx.save(other, str(tmp_path / "m1.onnx"))
    refuse(tmp_path, ["compose", tmp_path / "m0.onnx", tmp_path / "m1.onnx", "--out", tmp_path / "pair.onnx"],
           5, "m0.onnx", "m1.onnx", "vocabularies", outputs=("pair.onnx",))


def test_compose_with_incomplete_module_metadata(tmp_path, decomposed):
    proto = onnx.load(str(decomposed / "out" / "modules" / "0.onnx"))
    keep = [p for p in proto.metadata_props if p.key != "onnxmod.input_signature"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.save(proto, str(tmp_path / "m0.onnx"))
    shutil.copy(decomposed / "out" / "modules" / "1.onnx", tmp_path / "m1.onnx")
    refuse(tmp_path, ["compose", tmp_path / "m0.onnx", tmp_path / "m1.onnx", "--out", tmp_path / "pair.onnx"],
           3, "m0.onnx", "input_signature", outputs=("pair.onnx",))


@pytest.mark.parametrize("key, value", [("onnxmod.classes", '[{"class_index": 0, "class_'),
                                        ("onnxmod.max_steps", "many"), ("onnxmod.kind", "modul")])
def test_evaluate_of_a_composition_with_damaged_metadata(tmp_path, decomposed, key, value):
    proto = onnx.load(str(decomposed / "out" / "composed.onnx"))
    meta = {e.key: e.value for e in proto.metadata_props}
    meta[key] = value
    del proto.metadata_props[:]
    proto.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in meta.items())
    onnx.save(proto, str(tmp_path / "c.onnx"))
    data = float_data(tmp_path / "d.npz", classes=3)
    refuse(tmp_path, ["evaluate", tmp_path / "c.onnx", "--data", data], 3, "c.onnx", key, outputs=())


@pytest.fixture(scope="module")
def unrolled(tmp_path_factory):
    """A small M:N GRU decomposed in unrolled mode on 5-step sequences."""
    root = tmp_path_factory.mktemp("unrolled")
    model = float_model(root / "mn.onnx", op="GRU", classes=3, many_output=True)
    data = float_data(root / "d.npz", steps=5, classes=3, many_output=True)
    api.decompose(model, data, root / "out", mode="unrolled", progress=False)
    return root


@pytest.mark.parametrize("target", ["composed.onnx", "modules/0.onnx"])
def test_evaluate_unrolled_on_longer_sequences(tmp_path, unrolled, target):
    model = tmp_path / "m.onnx"
    shutil.copy(unrolled / "out" / target, model)
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert meta["onnxmod.max_steps"] == "5"
    ok = float_data(tmp_path / "ok.npz", steps=5, classes=3, many_output=True, seed=4)
    res = cli("evaluate", model, "--data", ok)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    data = float_data(tmp_path / "long.npz", steps=9, classes=3, many_output=True, seed=5)
    refuse(tmp_path, ["evaluate", model, "--data", data], 3, "length 9", "5 steps", outputs=())


def test_evaluate_of_a_module_on_data_of_the_wrong_dtype(tmp_path, unrolled):
    shutil.copy(unrolled / "out" / "modules" / "0.onnx", tmp_path / "m.onnx")
    z = _read_npz(float_data(tmp_path / "d.npz", steps=5, classes=3, many_output=True))
    z["x_test"] = (z["x_test"] * 10).astype(np.int64)
    np.savez(tmp_path / "d.npz", **z)
    refuse(tmp_path, ["evaluate", tmp_path / "m.onnx", "--data", tmp_path / "d.npz"], 3, "d.npz", "x_test",
           "float", outputs=())


# ---- interruption --------------------------------------------------------------------------


def _catches(pid: int, sig: int) -> bool:
    """True once the process has installed a handler for ``sig`` (Linux /proc SigCgt mask)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except OSError:
        pass
    return False


def _wait_for(pred, proc, timeout=120.0, what=""):
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


_SLOW_TRACE = textwrap.dedent("""
    import sys, time
    from onnxmod import cli
    from onnxmod.pipeline import identify
    real = identify.run_trace
    def slow(*a, **k):
        time.sleep(3)  # decompose of the fixture takes well under a second on an idle machine
        return real(*a, **k)
    identify.run_trace = slow
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to see the handler")
def test_sigterm_during_decompose_of_the_fixture(tmp_path, real):
    model, data = real
    before = snapshot(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_TRACE, "decompose", model, "--data", data, "--out",
                             tmp_path / "out", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    _wait_for(lambda: _catches(proc.pid, signal.SIGTERM), proc, what="the SIGTERM handler")
    time.sleep(0.5)  # into the work (loading, tracing), well before the run ends
    if proc.poll() is not None:
        pytest.fail(f"decompose ended (rc {proc.returncode}) before it could be interrupted: lengthen the run")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_refused(res, 130, "interrupted", "SIGTERM")
    assert snapshot(tmp_path) == before


_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from onnxmod import cli
    from onnxmod.pipeline import write
    real = write.save_model_atomic
    def slow(proto, path):
        real(proto, path)
        time.sleep(0.4)  # hold the temporary directory open long enough to be seen
    write.save_model_atomic = slow
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_the_output_is_being_written(tmp_path, sig):
    """Deterministic: wait until the temporary ``.out.*.partial`` directory exists, then signal."""
    model = float_model(tmp_path / "f.onnx", classes=4)
    data = float_data(tmp_path / "d.npz", classes=4)
    before = snapshot(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, "decompose", model, "--data", data, "--out",
                             tmp_path / "out", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())

    def partial():
        return [p for p in tmp_path.iterdir() if p.name.startswith(".out.") and p.name.endswith(".partial")]

    _wait_for(lambda: partial() and list(partial()[0].glob("modules/*.onnx")), proc,
              what="the partial output directory")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_refused(res, 130, "interrupted", sig.name)
    assert not (tmp_path / "out").exists()
    assert not partial()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("step", ["save_model_atomic", "write_bytes_atomic", "Stitcher"])  # Stitcher: composing
def test_exception_midway_through_decompose_leaves_no_output(tmp_path, monkeypatch, step):
    from onnxmod.pipeline import build, write

    model = float_model(tmp_path / "f.onnx", classes=3)
    data = float_data(tmp_path / "d.npz", classes=3)
    where = build if step == "Stitcher" else write  # the pipeline step that calls it
    real = getattr(where, step)
    calls = []

    def fail_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2 or step == "Stitcher":
            raise RuntimeError(f"simulated failure in {step}")
        return real(*a, **k)

    monkeypatch.setattr(where, step, fail_on_second)
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError, match="simulated"):
        api.decompose(model, data, tmp_path / "out", progress=False)
    assert snapshot(tmp_path) == before


def test_failure_leaves_no_folders_it_created_for_the_output(tmp_path, monkeypatch):
    """--out in folders that do not exist yet: a failure while writing removes them again."""
    from onnxmod.pipeline import write

    model = float_model(tmp_path / "f.onnx", classes=3)
    data = float_data(tmp_path / "d.npz", classes=3)

    def fail(*a, **k):
        raise RuntimeError("simulated failure while writing")

    monkeypatch.setattr(write, "write_bytes_atomic", fail)
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError, match="simulated"):
        api.decompose(model, data, tmp_path / "new" / "deeper" / "out", progress=False)
    assert snapshot(tmp_path) == before


def test_failed_forced_replacement_keeps_the_previous_output(tmp_path, monkeypatch):
    """--force over an existing output: if the final swap fails, the old output is put back."""
    from onnxmod import io

    model = float_model(tmp_path / "f.onnx", classes=3)
    data = float_data(tmp_path / "d.npz", classes=3)
    api.decompose(model, data, tmp_path / "out", progress=False)
    before = snapshot(tmp_path)
    real_replace = os.replace

    def fail_into_place(src, dst):
        if Path(dst) == tmp_path / "out" and ".partial" in str(src):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(io.atomic.os, "replace", fail_into_place)
    with pytest.raises(OutputError, match="No space left on device"):
        api.decompose(model, data, tmp_path / "out", force=True, progress=False)
    assert snapshot(tmp_path) == before


# ---- module file names (issue 12) ------------------------------------------------------------

NASTY_NAMES = ["x", "2_x", "x", ".", "", "数学", "a/../b", "X"]


def test_module_file_names_are_unique_whatever_the_class_names(tmp_path):
    """Names that collide once made safe (x, 2_x, x; '.', '', unicode, path separators, case)
    give one file per class, and report.json points each class at its own file."""
    import json

    model = float_model(tmp_path / "f.onnx", classes=len(NASTY_NAMES))
    data = float_data(tmp_path / "d.npz", n=120, classes=len(NASTY_NAMES), class_names=np.array(NASTY_NAMES))
    res = cli("decompose", model, "--data", data, "--out", tmp_path / "out", "--quiet", "--no-guard")
    assert res.returncode == 0, res.stderr
    files = sorted(p.name for p in (tmp_path / "out" / "modules").iterdir())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(files) == len(NASTY_NAMES) == len(report["modules"])
    pointed = [m["file"] for m in report["modules"]]
    assert len({p.lower() for p in pointed}) == len(pointed)
    assert sorted(Path(p).name for p in pointed) == files
    for m in report["modules"]:  # each file holds its class's module
        meta = {e.key: e.value for e in onnx.load(str(tmp_path / "out" / m["file"])).metadata_props}
        assert int(meta["onnxmod.class_index"]) == m["class"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "f.onnx", "out"]


def test_module_file_name_rule():
    from onnxmod.api import module_file_names

    names = module_file_names(list(enumerate(NASTY_NAMES + ["7", "algebra", "y" * 300])))
    assert names[:2] == ["0_x", "1_2_x"] and names[8:10] == ["7", "algebra"] and names[3] == "3_class"
    assert len(names[10]) == 100 and all("/" not in n and not n.startswith(".") for n in names)
    assert len({n.lower() for n in names}) == len(names)


# ---- metadata read strictly, nested too (issue 12) ------------------------------------------


def _set_meta(proto, **changes):
    meta = {e.key: e.value for e in proto.metadata_props}
    meta.update({k.replace("__", "."): v for k, v in changes.items()})
    del proto.metadata_props[:]
    proto.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in sorted(meta.items()))
    return proto


def _nested(src: Path, dst: Path, key: str, value: str) -> Path:
    import json

    proto = onnx.load(str(src))
    mods = json.loads({e.key: e.value for e in proto.metadata_props}["onnxmod.modules"])
    mods[1][key] = value
    onnx.save(_set_meta(proto, onnxmod__modules=json.dumps(mods)), str(dst))
    return dst


NESTED = [("onnxmod.input_signature", "5"), ("onnxmod.input_signature", "[{\"name\": 1}]"),
          ("onnxmod.class_index", "1" * 30), ("onnxmod.class_index", "-7"), ("onnxmod.class_index", "1_000"),
          ("onnxmod.class_index", " 3 "), ("onnxmod.class_index", "+1"), ("onnxmod.class_index", "01"),
          ("onnxmod.kind", "model"), ("onnxmod.max_steps", "0"), ("onnxmod.lang_token", "9" * 40)]


@pytest.mark.parametrize("key, value", NESTED, ids=[f"{k[8:]}={v[:12]}" for k, v in NESTED])
@pytest.mark.parametrize("command", ["replace", "evaluate", "inspect"])
def test_damaged_nested_module_metadata_is_refused(tmp_path, decomposed, key, value, command):
    """A composition whose nested onnxmod.modules entry is damaged: exit 3 naming the entry and the
    key, for every command that reads it (replace used to crash or write a file evaluate refused)."""
    comp = _nested(decomposed / "out" / "composed.onnx", tmp_path / "c.onnx", key, value)
    shutil.copy(decomposed / "out" / "modules" / "1.onnx", tmp_path / "m1.onnx")
    data = float_data(tmp_path / "d.npz", classes=3)
    args = {"replace": ["replace", comp, "--with", tmp_path / "m1.onnx", "--out", tmp_path / "new.onnx"],
            "evaluate": ["evaluate", comp, "--data", data], "inspect": ["inspect", comp]}[command]
    refuse(tmp_path, args, 3, "c.onnx", "onnxmod.modules", "entry 1", key, outputs=("new.onnx",))


@pytest.mark.parametrize("value", ["1_000", " 3 ", "1" * 30, "-7", "+2", "02", "٣"])
def test_module_class_index_must_be_a_plain_decimal(tmp_path, decomposed, value):
    proto = onnx.load(str(decomposed / "out" / "modules" / "0.onnx"))
    onnx.save(_set_meta(proto, onnxmod__class_index=value), str(tmp_path / "m0.onnx"))
    shutil.copy(decomposed / "out" / "modules" / "1.onnx", tmp_path / "m1.onnx")
    refuse(tmp_path, ["compose", tmp_path / "m0.onnx", tmp_path / "m1.onnx", "--out", tmp_path / "pair.onnx"],
           3, "m0.onnx", "onnxmod.class_index", "plain decimal", outputs=("pair.onnx",))


# ---- models that used to crash (issue 12) -----------------------------------------------------


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_ir_version_3_model_decomposes_like_its_ir_8_twin(tmp_path, op):
    """IR 3 / opset 7 (weights also listed as graph inputs) used to crash in build_module (exit 70).
    It is read as IR 4: its composition computes what the IR 8 twin's composition computes."""
    import onnxruntime as ort

    fuzz = _fuzz()
    proto = build(random_stack(np.random.default_rng(0), op, 1, 6, 1, features=5, classes=4))
    onnx.save(proto, str(tmp_path / "ir8.onnx"))
    onnx.save(fuzz.ir3(proto), str(tmp_path / "ir3.onnx"))
    data = float_data(tmp_path / "d.npz")
    for name in ("ir8", "ir3"):
        res = cli("decompose", tmp_path / f"{name}.onnx", "--data", data, "--out", tmp_path / name, "--quiet",
                  "--no-guard", "--mode", "rolled")
        assert res.returncode == 0, res.stderr
    x = _read_npz(data)["x_test"]
    got = [ort.InferenceSession(str(tmp_path / n / "composed.onnx")).run(None, {"x": x}) for n in ("ir8", "ir3")]
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_allclose(got[0][1], got[1][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("command", ["inspect", "decompose"])
def test_gemm_head_with_a_computed_bias(tmp_path, command):
    fuzz = _fuzz()

    onnx.save(fuzz.computed_head(lstm_proto(), "ReduceSum"), str(tmp_path / "m.onnx"))
    data = float_data(tmp_path / "d.npz")
    if command == "inspect":  # a readable model: inspect describes it and says why decompose refuses (exit 0)
        res = cli("inspect", tmp_path / "m.onnx")
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        assert "'head'" in res.stdout and "bias" in res.stdout and "computed" in res.stdout
        return
    args = ["decompose", tmp_path / "m.onnx", "--data", data, "--out", tmp_path / "out"]
    refuse(tmp_path, args, 4, "m.onnx", "'head'", "bias", "computed", outputs=("out",))


@pytest.mark.parametrize("n", [20000, 60000])
@pytest.mark.parametrize("command", ["inspect", "decompose"])
def test_folding_bomb_is_refused_before_it_runs(tmp_path, command, n):
    """ConstantOfShape [n, n] -> ReduceSum -> Add into the head's bias: folding used to take 1.7 GB
    (n = 20000), or fail silently (n = 60000: inspect 0, decompose 70). Refused with the node named;
    the memory bound itself is measured by tools/fuzz.py --memory."""
    fuzz = _fuzz()

    onnx.save(fuzz.folding_bomb(lstm_proto(), n), str(tmp_path / "m.onnx"))
    data = float_data(tmp_path / "d.npz")
    args = ["inspect", tmp_path / "m.onnx"] if command == "inspect" else \
        ["decompose", tmp_path / "m.onnx", "--data", data, "--out", tmp_path / "out"]
    refuse(tmp_path, args, 4, "m.onnx", "'fz_big'", "ConstantOfShape", f"{4 * n * n:,} bytes", outputs=("out",))


def test_small_folded_constant_still_folds(tmp_path):
    fuzz = _fuzz()
    from onnxmod.graph import Model

    m = Model(fuzz.folding_bomb(lstm_proto(), 100))
    assert m.head.bias_node is not None and m.head.node.op == "Gemm"


# ---- the smaller ones (issue 12) ----------------------------------------------------------------


def _external_at(tmp_path: Path, location: str) -> Path:
    proto = build(random_stack(np.random.default_rng(0), "LSTM", 1, 8, 1, features=16))
    (tmp_path / "ext").mkdir(exist_ok=True)
    onnx.save(proto, str(tmp_path / "ext" / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    proto = onnx.load(str(tmp_path / "ext" / "m.onnx"), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(proto, str(tmp_path / "ext" / "m.onnx"))
    return tmp_path / "ext" / "m.onnx"


def test_external_data_outside_the_model_folder_is_no_existence_oracle(tmp_path):
    """A missing and an existing path outside the model's folder get the same answer."""
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    answers = []
    for loc in ("../secret.bin", "../nothing-here.bin", str(tmp_path / "secret.bin"), "/nonexistent/x.bin"):
        model = _external_at(tmp_path, loc)
        res = refuse(tmp_path, ["inspect", model], 3, "m.onnx", "outside the model's folder", outputs=())
        answers.append(res.stderr.replace(loc, "LOC"))
    assert len(set(answers)) == 1, answers


def test_control_characters_in_class_names_are_escaped(tmp_path):
    """Class names with ANSI escapes, line breaks and carriage returns are printed escaped by
    decompose, compose and inspect: no raw control character, no forged error line on stdout."""
    import json

    names = np.array(["\x1b[31mred", "a\nonnxmod: error: forged", "b\rc", "\u202eevil"])
    model = float_model(tmp_path / "f.onnx", classes=4)
    data = float_data(tmp_path / "d.npz", classes=4, class_names=names)
    runs = [cli("decompose", model, "--data", data, "--out", tmp_path / "out", "--quiet", "--no-guard")]
    assert runs[0].returncode == 0, runs[0].stderr
    files = [m["file"] for m in json.loads((tmp_path / "out" / "report.json").read_text())["modules"]]
    runs.append(cli("compose", *[tmp_path / "out" / f for f in files], "--out", tmp_path / "c.onnx"))
    runs.append(cli("inspect", tmp_path / "out" / files[1]))
    runs.append(cli("inspect", tmp_path / "c.onnx"))
    runs.append(cli("evaluate", tmp_path / "c.onnx", "--data", data))
    for res in runs:
        assert res.returncode == 0, res.stderr
        for stream in (res.stdout, res.stderr):
            assert not any(c in stream for c in "\x1b\r\u202e"), stream
            assert not any(line.startswith("onnxmod: error") for line in stream.splitlines()), stream
    assert "\\x1b[31mred" in runs[1].stdout and "a\\x0aonnxmod: error: forged" in runs[2].stdout


def test_control_characters_in_a_path_are_escaped_in_errors(tmp_path):
    res = cli("inspect", tmp_path / "no\x1b[2Jsuch\n.onnx")
    assert_refused(res, 3, "no\\x1b[2Jsuch .onnx", "no such file")  # line breaks in messages become spaces


def test_stale_leftovers_of_a_killed_run_are_removed(tmp_path):
    """A killed decompose leaves .out.PID.*.partial, a killed compose .c.onnx.PID.*.tmp: the next run
    into the same folder removes those whose pid is dead, and nothing that merely looks alike."""
    model = float_model(tmp_path / "f.onnx", classes=3)
    data = float_data(tmp_path / "d.npz", classes=3)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid = dead.pid
    code = ("import os, sys, time; from onnxmod import api; import onnxmod.io.atomic as atomic; "
            "atomic.os.fsync = lambda fd: os.kill(os.getpid(), 9); "
            f"api.decompose({str(model)!r}, {str(data)!r}, {str(tmp_path / 'out')!r}, progress=False)")
    killed = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True)
    assert killed.returncode == -9
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert left and all(p.endswith(".partial") for p in left), left
    stale_tmp = tmp_path / f".c.onnx.{pid}.abc123.tmp"
    stale_tmp.write_bytes(b"half a model")
    alike = [tmp_path / f".out.{os.getpid()}.live.partial", tmp_path / f".out.{pid}.nomark.partial",
             tmp_path / ".out.notapid.x.partial", tmp_path / f".c.onnx.{os.getpid()}.live1.tmp"]
    for p in alike:
        p.mkdir() if p.suffix == ".partial" else p.write_bytes(b"x")
    res = cli("decompose", model, "--data", data, "--out", tmp_path / "out", "--quiet")
    assert res.returncode == 0, res.stderr
    assert not [n for n in left if (tmp_path / n).exists()]
    assert all(p.exists() for p in alike)
    for k in (0, 1):
        shutil.copy(tmp_path / "out" / "modules" / f"{k}.onnx", tmp_path / f"m{k}.onnx")
    res = cli("compose", tmp_path / "m0.onnx", tmp_path / "m1.onnx", "--out", tmp_path / "c.onnx")
    assert res.returncode == 0, res.stderr
    assert not stale_tmp.exists() and all(p.exists() for p in alike)


def test_stale_leftovers_of_another_output_are_removed(tmp_path):
    """Issue 22: a SIGKILLed ``decompose --out out/a`` leaves ``.a.PID.*.partial`` and a killed compose
    ``.a.onnx.PID.*.tmp``; the next run into the same folder for another output (``--out out/b``,
    ``--out out/c.onnx``) removes them, and never a live writer's."""
    model = float_model(tmp_path / "f.onnx", classes=3)
    data = float_data(tmp_path / "d.npz", classes=3)
    out = tmp_path / "out"
    out.mkdir()
    code = ("import os, sys, time; from onnxmod import api; import onnxmod.io.atomic as atomic; "
            "atomic.os.fsync = lambda fd: os.kill(os.getpid(), 9); "
            f"api.decompose({str(model)!r}, {str(data)!r}, {str(out / 'a')!r}, progress=False)")
    killed = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True)
    assert killed.returncode == -9
    left = [p for p in out.iterdir() if p.name.startswith(".a.") and p.name.endswith(".partial")]
    assert left, list(out.iterdir())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_tmp = out / f".a.onnx.{dead.pid}.q8x_2kd0.tmp"
    stale_tmp.write_bytes(b"half a model")
    live = [out / f".a.{os.getpid()}.live.partial", out / f".a.onnx.{os.getpid()}.live1.tmp"]
    for p in live:
        p.mkdir() if p.suffix == ".partial" else p.write_bytes(b"x")
    res = cli("decompose", model, "--data", data, "--out", out / "b", "--quiet")
    assert res.returncode == 0, res.stderr
    assert not [p for p in left if p.exists()] and not stale_tmp.exists()
    assert all(p.exists() for p in live)
    stale_tmp.write_bytes(b"half a model")
    res = cli("compose", out / "b" / "modules" / "0.onnx", out / "b" / "modules" / "1.onnx", "--out", out / "c.onnx")
    assert res.returncode == 0, res.stderr
    assert not stale_tmp.exists() and all(p.exists() for p in live)


def test_onnxruntime_failure_names_the_files(tmp_path):
    """A model that fixes its sequence length in a Reshape, fed longer sequences: onnxruntime fails
    mid-run; decompose and evaluate name the model and the data (decompose used to name nothing)."""
    proto = lstm_proto()
    g = proto.graph
    g.initializer.append(numpy_helper.from_array(np.array([-1, 7, 5], np.int64), "fixed"))
    for n in g.node:
        n.input[:] = ["x_fixed" if v == "x" else v for v in n.input]
    g.node.insert(0, helper.make_node("Reshape", ["x", "fixed"], ["x_fixed"], name="fixed_len"))
    onnx.save(proto, str(tmp_path / "m.onnx"))
    data = float_data(tmp_path / "d.npz", steps=9)
    refuse(tmp_path, ["decompose", tmp_path / "m.onnx", "--data", data, "--out", tmp_path / "out"], 3,
           "m.onnx", "d.npz", "onnxruntime", "fixed_len")
    refuse(tmp_path, ["evaluate", tmp_path / "m.onnx", "--data", data], 3, "m.onnx", "d.npz", "onnxruntime",
           outputs=())


def test_closed_stdout_exits_quietly(tmp_path, decomposed):
    """`onnxmod evaluate ... | head -2`: the reader went away; exit 141 (SIGPIPE's), nothing on stderr."""
    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run([sys.executable, "-m", "onnxmod", "evaluate", decomposed / "out" / "composed.onnx",
                              "--data", decomposed / "d.npz"], stdout=w, stderr=subprocess.PIPE, text=True,
                             env=_env(), timeout=300)
    finally:
        os.close(w)
    assert res.returncode == 141 and res.stderr == "", (res.returncode, res.stderr)


def _zip_bomb(path: Path, base: dict, key: str, n: int, declared: int | None = None):
    _fuzz().write_npz_bomb(path, base, key, n, declared)
    return path


def test_unused_npz_key_is_never_decompressed(tmp_path, monkeypatch):
    """An unused key of 1.2 GB of zeros (5 MB compressed) is never read: evaluate reads x_test and
    y_test only, and decompose never asks for the key."""
    from onnxmod import io

    model = float_model(tmp_path / "f.onnx", classes=3)
    base = _read_npz(float_data(tmp_path / "d0.npz", classes=3))
    data = _zip_bomb(tmp_path / "d.npz", base, "junk", 150_000_000)
    read = []
    real_get = io.NpzArrays.__getitem__

    def spy(self, key):
        read.append(key)
        return real_get(self, key)

    monkeypatch.setattr(io.NpzArrays, "__getitem__", spy)
    api.evaluate(model, data)
    assert sorted(read) == ["x_test", "y_test"]
    read.clear()
    api.decompose(model, data, tmp_path / "out", progress=False, evaluate=False)
    assert "junk" not in read and {"x_train", "y_train", "x_test", "y_test"} <= set(read)


@pytest.mark.parametrize("declared", [None, 10 ** 12], ids=["inflates", "lying-header"])
def test_npz_member_above_the_cap_is_refused_before_it_is_read(tmp_path, declared):
    model = float_model(tmp_path / "f.onnx", classes=3)
    base = _read_npz(float_data(tmp_path / "d0.npz", classes=3))
    base.pop("x_test")
    n = 40_000_000 if declared is None else 1000
    data = _zip_bomb(tmp_path / "d.npz", base, "x_test", n, declared)
    refuse(tmp_path, ["evaluate", model, "--data", data], 3, "d.npz", "'x_test'", "bytes", outputs=())
