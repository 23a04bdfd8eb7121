"""``--labels model``: labels from the model's own answers (``onnxmod.labels``), CLI and API."""
import json

import numpy as np
import pytest
from conftest import fixture_path
from test_cli import assert_one_line_error, onnxmod

from onnxmod import api
from onnxmod import labels as L
from onnxmod.errors import UsageError
from onnxmod.io import load_data


def _x_only(src, dst, keep=("x_train", "x_test", "x_val", "class_names", "vocab"), rows=None):
    """A copy of ``src`` holding only ``keep`` (the first ``rows`` rows of each split)."""
    with np.load(src) as z:
        arrays = {k: (z[k][:rows] if rows and k.startswith("x_") else z[k]) for k in keep if k in z.files}
    np.savez(dst, **arrays)
    return dst


def test_label_rules_by_hand():
    pred = np.array([[3, 4, 5], [6, 7, 8]])
    x = np.array([[9, 9, 0], [0, 9, 9]])
    given = np.array([[1, -1, 2], [2, 2, -1]])
    # 1. the data's own padding wins
    assert L.label(pred, x, given, 0, False).tolist() == [[3, -1, 5], [6, 7, -1]]
    # 2. CTC: every step labelled
    assert L.label(pred, x, None, 0, True).tolist() == pred.tolist()
    # 3. aligned token inputs with a padding token
    assert L.label(pred, x, None, 0, False).tolist() == [[3, 4, -1], [-1, 7, 8]]
    # 4. no padding token, or steps that do not line up with the input (1:N)
    assert L.label(pred, x, None, None, False).tolist() == pred.tolist()
    assert L.label(pred[:, :2], x, None, 0, False).tolist() == pred[:, :2].tolist()
    # one output per sample: nothing to pad
    assert L.label(np.array([1, 2]), x, None, 0, False).tolist() == [1, 2]


def test_data_with_inputs_only_loads_only_with_model_labels(tmp_path):
    data = _x_only(fixture_path("math_topics", "data.npz"), tmp_path / "x.npz", rows=50)
    d = load_data(data, num_classes=8, many_output=False, labels=False)
    assert d.y_train is None and d.y_test is None and d.x_val.shape[0] == 50
    from onnxmod.errors import InputError

    with pytest.raises(InputError, match="missing key"):
        load_data(data, num_classes=8, many_output=False)


def test_the_model_agrees_with_itself_and_reports_say_agreement(math_lstm1, tmp_path):
    model, data = math_lstm1
    x = _x_only(data, tmp_path / "x.npz")
    r = api.decompose(model, x, tmp_path / "out", labels="model", config=None)
    assert r["labels"] == "model"
    assert r["monolithic_accuracy"] == 1.0
    assert all(m["monolithic_accuracy"] in (None, 1.0) for m in r["modules"])
    assert 0.97 < r["composed_accuracy"] <= 1.0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "agreement with the model" in md and "accuracy: model" not in md
    assert "agreement with the model" in (tmp_path / "out" / "report.html").read_text()
    # evaluate: the model against its own answers, the composition against the model's
    assert api.evaluate(model, x, labels="model")["accuracy"] == 1.0
    e = api.evaluate(tmp_path / "out" / "composed.onnx", x, labels=str(model))
    assert e["metric"] == "agreement with the model" and e["labels"] == str(model)
    assert e["accuracy"] == pytest.approx(r["composed_accuracy"])
    with pytest.raises(UsageError, match="name the model it came from"):
        api.evaluate(tmp_path / "out" / "composed.onnx", x, labels="model")


def test_cli_labels_model_prints_agreement(math_lstm1, tmp_path):
    model, data = math_lstm1
    x = _x_only(data, tmp_path / "x.npz", rows=600)
    res = onnxmod("decompose", model, "--data", x, "--labels", "model", "--out", tmp_path / "o", "--no-guard")
    assert res.returncode == 0, res.stderr
    assert "model agree%" in res.stdout and "so the model scores 100 %" in res.stdout
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["labels"] == "model" and rep["monolithic_accuracy"] == 1.0
    ev = onnxmod("evaluate", model, "--data", x, "--labels", "model", "--json")
    assert ev.returncode == 0 and json.loads(ev.stdout)["accuracy"] == 1.0
    ev = onnxmod("evaluate", tmp_path / "o" / "composed.onnx", "--data", x, "--labels", "model")
    assert_one_line_error(ev, 2, "--labels MODEL.onnx")
    # without --labels model the same data is missing its labels: one line naming them
    assert_one_line_error(onnxmod("decompose", model, "--data", x, "--out", tmp_path / "p"), 3, "y_train")


def test_many_output_padding_from_the_padding_token(tmp_path):
    model, data = fixture_path("brown_pos", "lstm1.onnx"), fixture_path("brown_pos", "data.npz")
    x = _x_only(data, tmp_path / "x.npz", rows=300)
    from onnxmod.graph import Model

    d = L.load(Model.load(model), x, "model")
    with np.load(x) as z:
        xt = z["x_test"]
    assert ((d.y_test == -1) == (xt == 0)).all()  # vocab[0] == "<pad>": padded steps unlabelled
    r = api.decompose(model, x, tmp_path / "out", labels="model", mode="unrolled", config=None, evaluate=True)
    assert r["monolithic_accuracy"] == 1.0 and r["shape"] == "M:N"


def test_one_to_many_labels_every_step_without_y(tmp_path):
    model, data = fixture_path("cmu_phones", "lstm1.onnx"), fixture_path("cmu_phones", "data.npz")
    x = _x_only(data, tmp_path / "x.npz", rows=200)
    from onnxmod.graph import Model

    m = Model.load(model)
    d = L.load(m, x, "model")
    assert m.shape == "1:N" and (d.y_test >= 0).all()
    # with y in the data, its padding is kept
    d = L.load(m, data, "model")
    with np.load(data) as z:
        assert ((d.y_test == -1) == (z["y_test"] == -1)).all()


def test_translators_are_refused_in_one_line(tmp_path):
    model = fixture_path("translation", "en_frdeit/lstm.onnx")
    data = fixture_path("translation", "en_frdeit/data.npz")
    res = onnxmod("decompose", model, "--data", data, "--labels", "model", "--out", tmp_path / "t")
    assert_one_line_error(res, 2, "does not apply to translators")
    assert not (tmp_path / "t").exists()
