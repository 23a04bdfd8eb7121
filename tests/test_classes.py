"""``--classes`` and wide heads (``onnxmod.classes``): modules for some classes only, classes
absent from the data cost nothing and change nothing."""
import json

import numpy as np
import onnx
import pytest
from conftest import fixture_path
from onnx import numpy_helper
from test_cli import assert_one_line_error, onnxmod

from onnxmod import api
from onnxmod.errors import UsageError


def _without_training_rows_of(src, dst, cls: int):
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    keep = arrays["y_train"] != cls
    arrays["x_train"], arrays["y_train"] = arrays["x_train"][keep], arrays["y_train"][keep]
    np.savez(dst, **arrays)
    return dst


def wide_head(src, dst, width: int = 8210, below: float = 50.0):
    """``src`` (a one-output model whose head is a Gemm with transB) with its head widened to
    ``width`` classes: the new classes copy the old weights with their bias ``below`` lower, so the
    model answers exactly as before and the data holds none of them (mechanics, not a real head)."""
    proto = onnx.load(str(src))
    inits = {t.name: t for t in proto.graph.initializer}
    w, b = numpy_helper.to_array(inits["out.weight"]), numpy_helper.to_array(inits["out.bias"])
    C = w.shape[0]
    reps = -(-width // C)
    w2 = np.tile(w, (reps, 1))[:width]
    b2 = np.concatenate([b] + [b - below] * (reps - 1))[:width]
    inits["out.weight"].CopyFrom(numpy_helper.from_array(w2.astype(np.float32), "out.weight"))
    inits["out.bias"].CopyFrom(numpy_helper.from_array(b2.astype(np.float32), "out.bias"))
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = width
    meta = {p.key: p for p in proto.metadata_props}
    if "onnxmod.class_names" in meta:
        names = json.loads(meta["onnxmod.class_names"].value)
        meta["onnxmod.class_names"].value = json.dumps(names + [f"extra{i}" for i in range(C, width)])
    onnx.save(proto, str(dst))
    return dst


def test_classes_by_name_and_index_and_absent_ones(math_lstm1, tmp_path):
    model, data = math_lstm1
    data = _without_training_rows_of(data, tmp_path / "d.npz", 7)  # probability: test rows only
    with pytest.warns(UserWarning) as record:
        r = api.decompose(model, data, tmp_path / "o", classes=["algebra", "probability", "3"], config=None)
    lines = [str(w.message) for w in record if "training samples" in str(w.message)]
    assert len(lines) == 1 and "'probability' has no training samples" in lines[0]
    assert [m["name"] for m in r["modules"]] == ["algebra", "comparison"]
    assert r["classes"] == [0, 3, 7] and r["skipped"] == ["probability"]
    assert sorted(p.name for p in (tmp_path / "o" / "modules").iterdir()) == ["algebra.onnx", "comparison.onnx"]
    # scored on the test samples of the two classes built, as evaluate scores the composition
    e = api.evaluate(tmp_path / "o" / "composed.onnx", fixture_path("math_topics", "data.npz"))
    assert e["accuracy"] == pytest.approx(r["composed_accuracy"])
    with pytest.raises(UsageError, match="no class 'geometry'"):
        api.decompose(model, data, tmp_path / "p", classes=["geometry"])


def test_cli_classes_one_warning_line_for_many_absent(tmp_path):
    model = wide_head(fixture_path("math_topics", "lstm1.onnx"), tmp_path / "wide.onnx", width=300)
    data = fixture_path("math_topics", "data.npz")
    res = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o", "--no-guard", "--no-evaluate")
    assert res.returncode == 0, res.stderr
    warn = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(warn) == 1 and "292 of 300 classes have no training samples" in warn[0], res.stderr
    assert len(list((tmp_path / "o" / "modules").iterdir())) == 8
    res = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "p", "--classes", "calculus,0",
                  "--no-guard", "--no-evaluate")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert sorted(p.name for p in (tmp_path / "p" / "modules").iterdir()) == ["algebra.onnx", "calculus.onnx"]
    assert_one_line_error(onnxmod("decompose", model, "--data", data, "--out", tmp_path / "q", "--classes", "nope"),
                          2, "--classes", "'nope'")


def test_a_wide_head_decomposes_as_the_narrow_one(math_lstm1, tmp_path):
    """8 classes present of 8,210: the concerns are those of the 8-class model (sampling and
    scoring never see the 8,202 absent classes)."""
    model, data = math_lstm1
    wide = wide_head(model, tmp_path / "wide.onnx")
    kw = dict(config=None, evaluate=False)
    with pytest.warns(UserWarning, match="8,202 of 8,210 classes"):
        r_wide = api.decompose(wide, data, tmp_path / "w", **kw)
    r_narrow = api.decompose(model, data, tmp_path / "n", **kw)
    assert [m["kept_units"] for m in r_wide["modules"]] == [m["kept_units"] for m in r_narrow["modules"]]
    assert r_wide["size_search"]["cap"] == r_narrow["size_search"]["cap"]
    assert len(r_wide["skipped"]) == 8202
