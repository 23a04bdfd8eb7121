"""The Python API on a real fixture: decomposition end to end, determinism, reports."""
import hashlib
import json

import numpy as np
import onnx

from onnxmod import api, runtime
from onnxmod.graph import Model, count_parameters_proto


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_decompose_writes_modules_composition_and_reports(math_lstm1, tmp_path):
    model, data = math_lstm1
    r = api.decompose(model, data, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    for key in ("monolithic_accuracy", "composed_accuracy", "delta"):
        assert key in report
    assert abs(report["delta"] - (report["composed_accuracy"] - report["monolithic_accuracy"])) < 1e-12
    assert len(report["modules"]) == Model.load(model).num_classes
    mono_params = count_parameters_proto(onnx.load(str(model)))
    for m in report["modules"]:
        f = out / m["file"]
        proto = onnx.load(str(f))
        onnx.checker.check_model(proto, full_check=True)
        assert 0 < m["jaccard"] <= 1
        assert m["params"] == count_parameters_proto(proto) < mono_params  # physically smaller
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["onnxmod.kind"] == "module" and int(meta["onnxmod.class_index"]) == m["class"]
    assert (out / "report.md").read_text().startswith("# onnxmod decomposition")
    assert r["composed_accuracy"] == report["composed_accuracy"]


def test_composed_accuracy_is_recomputed_from_onnxruntime(math_lstm1, tmp_path):
    model, data = math_lstm1
    r = api.decompose(model, data, tmp_path / "o", progress=False)
    z = np.load(data)
    sess = runtime.session(str(tmp_path / "o" / "composed.onnx"))
    label = sess.run(["label"], {"tokens": z["x_test"]})[0]
    assert abs((label == z["y_test"]).mean() - r["composed_accuracy"]) < 1e-12
    mono = runtime.session(str(model)).run(None, {"tokens": z["x_test"]})[0].argmax(-1)
    assert abs((mono == z["y_test"]).mean() - r["monolithic_accuracy"]) < 1e-12


def test_same_inputs_and_seed_give_byte_identical_modules(math_lstm1, tmp_path):
    model, data = math_lstm1
    api.decompose(model, data, tmp_path / "a", seed=3, progress=False)
    api.decompose(model, data, tmp_path / "b", seed=3, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.onnx"))
    assert files
    for f in files:
        assert _digest(tmp_path / "a" / f) == _digest(tmp_path / "b" / f), f


def test_compose_subset_reuses_modules(math_lstm1, tmp_path):
    model, data = math_lstm1
    api.decompose(model, data, tmp_path / "o", progress=False)
    mods = sorted((tmp_path / "o" / "modules").glob("*.onnx"))[:2]
    r = api.compose(mods, tmp_path / "pair.onnx")
    assert len(r["modules"]) == 2
    e = api.evaluate(tmp_path / "pair.onnx", data)
    assert e["kind"] == "composition" and 0 <= e["accuracy"] <= 1
    # predictions only ever name the two composed classes
    z = np.load(data)
    label = runtime.session(str(tmp_path / "pair.onnx")).run(["label"], {"tokens": z["x_test"][:50]})[0]
    ids = {m["class_index"] for m in r["modules"]}
    assert set(label.tolist()) <= ids


def test_inspect_reports_shape_and_ops(math_lstm1):
    d = api.inspect(math_lstm1[0])
    assert d["kind"] == "model" and d["shape"] == "1:1"
    assert d["recurrences"][0]["op_type"] == "LSTM"


def test_keep_all_composition_reproduces_the_model_exactly(tmp_path):
    """Channeling + voting on log-odds is the model's own argmax when no unit is removed — even for
    a ReLU model whose logits saturate float32 softmax (voting on probabilities tied there)."""
    from conftest import fixture_path

    from onnxmod.concern import ConcernConfig

    model, data = fixture_path("math_topics", "rnn_relu2.onnx"), fixture_path("math_topics", "data.npz")
    r = api.decompose(model, data, tmp_path / "o", config=ConcernConfig(removal_cap=0.0), progress=False)
    assert r["delta"] == 0.0
    z = np.load(data)
    label = runtime.session(str(tmp_path / "o" / "composed.onnx")).run(["label"], {"tokens": z["x_test"]})[0]
    mono = runtime.session(str(model)).run(None, {"tokens": z["x_test"]})[0].argmax(-1)
    np.testing.assert_array_equal(label, mono)


def test_auto_mode_is_rolled_for_one_output_and_unrolled_for_many_output(tmp_path):
    from conftest import fixture_path

    r = api.decompose(fixture_path("math_topics", "lstm1.onnx"), fixture_path("math_topics", "data.npz"),
                      tmp_path / "a", progress=False)
    assert r["mode"] == "rolled"
    r = api.decompose(fixture_path("cmu_phones", "lstm1.onnx"), fixture_path("cmu_phones", "data.npz"),
                      tmp_path / "b", progress=False)
    assert r["mode"] == "unrolled" and r["shape"] == "1:N"
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "b" / r["modules"][0]["file"])).metadata_props}
    assert meta["onnxmod.mode"] == "unrolled" and meta["onnxmod.unrolled_semantics"] == "output"


def test_size_search_makes_smaller_modules_within_the_tolerance(math_lstm1, tmp_path):
    """The size option's promises, checked with onnxruntime on the written files: every module is
    no larger than keep-all, the held-out composition stays within the tolerance of keep-all and
    its loss bound holds, and the report's numbers are the files'."""
    model, data = math_lstm1
    small = api.decompose(model, data, tmp_path / "small", progress=False, max_loss=1.0)
    s = small["size_search"]
    assert s["kind"] == "size search" and s["max_loss_points"] == 1.0 and s["heldout_split"] == "x_val"
    assert any(t["accepted"] for t in s["trail"]) and any(not t["accepted"] for t in s["trail"])
    assert s["search_rows"] == 500 and s["heldout_rows"] == 1000
    assert s["heldout_keep_all_accuracy"] - s["heldout_accuracy"] <= 0.01
    assert all(t["loss_bound"] <= 0.01 for t in s["trail"] if t["accepted"])
    cert = s["certification"]
    assert cert[-1]["accepted"] and cert[-1]["loss_bound"] <= 0.01 and not any(c["accepted"] for c in cert[:-1])
    assert cert[0]["accepted_steps_kept"] == sum(t["accepted"] for t in s["trail"])
    assert all(m["params_ratio"] <= 1 for m in small["modules"])
    assert np.mean([m["params_ratio"] for m in small["modules"]]) < 0.9  # measured 0.74
    md = (tmp_path / "small" / "report.md").read_text()
    assert f"{cert[-1]['accepted_steps_kept']} kept after certification" in md
    assert md.count("\n| ") >= len(s["chosen"]) + len(small["modules"])
    z = np.load(data)
    label = runtime.session(str(tmp_path / "small" / "composed.onnx")).run(["label"], {"tokens": z["x_val"]})[0]
    assert abs((label == z["y_val"]).mean() - s["heldout_accuracy"]) < 1e-12
    for m, c in zip(small["modules"], s["chosen"]):
        proto = onnx.load(str(tmp_path / "small" / m["file"]))
        assert count_parameters_proto(proto) == m["params"]
        concern = json.loads({p.key: p.value for p in proto.metadata_props}["onnxmod.concern"])
        if c["vocabulary_removed"]:
            assert concern["vocabulary"]["kept"] == concern["vocabulary"]["rows"] - int(
                c["vocabulary_removed"] * concern["vocabulary"]["rows"])
        if c["embedding_features_removed"]:
            assert concern["embedding"] == {"features": 16,
                                            "kept": round(16 * (1 - c["embedding_features_removed"]))}
        else:
            assert "embedding" not in concern


def test_pruned_vocabulary_reads_removed_tokens_as_their_nearest_kept_row(math_lstm1):
    """A model with a pruned vocabulary equals the model on inputs of kept tokens, and on the
    others equals the model reading, for each removed token, the kept row nearest to its own."""
    model_path, data = math_lstm1
    model = Model.load(model_path)
    V = model.vocabulary_size()
    x = np.load(data)["x_test"][:64]
    keep = np.ones(V, dtype=bool)
    keep[np.setdiff1d(np.unique(x[32:]), np.unique(x[:32]))] = False
    keep[np.arange(V) % 3 == 0] = False
    keep[np.unique(x[:32])] = True
    m = model.fresh()
    m.prune_vocabulary(keep)
    pruned = runtime.session(m.export(outputs=[m.output])).run(None, {"tokens": x})[0]
    table = np.asarray(model.embedding().inputs[0].values)
    kept = np.flatnonzero(keep)
    nearest = kept[np.argmin(((table[:, None, :] - table[None, kept, :]) ** 2).sum(-1), axis=1)]
    remapped = np.where(keep[x], x, nearest[x])
    expect = runtime.session(str(model_path)).run(None, {"tokens": remapped})[0]
    np.testing.assert_allclose(pruned, expect, atol=1e-5)
    assert (remapped[:32] == x[:32]).all() and (remapped != x).any()
    assert count_parameters_proto(m.export(outputs=[m.output])) == model.parameter_count() - 16 * int((~keep).sum())


def test_gate_monitoring_end_to_end(math_lstm1, tmp_path):
    model, data = math_lstm1
    r = api.decompose(model, data, tmp_path / "g", progress=False, monitor="gates")
    assert r["monitor"] == "gates" and len(r["modules"]) == 8
    assert all(0 < m["jaccard"] <= 1 for m in r["modules"])


def test_guard_backs_off_and_reports_its_trail(tmp_path):
    """A vanilla tanh RNN read over ~60 steps loses badly when units leave its recurrence; the guard
    backs the cap off until the validation accuracy holds (and says so in the report)."""
    from conftest import fixture_path

    model, data = fixture_path("brown_genre", "rnn_tanh1.onnx"), fixture_path("brown_genre", "data.npz")
    guarded = api.decompose(model, data, tmp_path / "g", mode="rolled", progress=False)
    g = guarded["size_search"]
    assert g["kind"] == "guard" and g["trail"][0]["cap"] == 0.05
    assert [t["cap"] for t in g["trail"]][-1] == g["cap"]
    final = g["trail"][-1]
    assert final["accepted"] or g["cap"] == 0.0
    assert g["heldout_model_accuracy"] - final["heldout_accuracy"] <= 0.005 or g["cap"] == 0.0


def test_the_size_search_leaves_embedding_features_it_cannot_follow(tmp_path):
    """A general cell (DuRNN) has no single input weight to fold fewer features into: the features
    knob stays at 0 and the report says why, while the other knobs still search. (cmu_phones, which
    repeats its one-token input over time with Expand, is followed since the unit flow reads layouts
    by axes.)"""
    from conftest import fixture_path

    durnn = fixture_path("cells/brown_genre", "durnn1_loop.onnx")
    assert "general cell" in Model.load(durnn).why_not_reducible_embedding()
    assert Model.load(fixture_path("cmu_phones", "lstm1.onnx")).why_not_reducible_embedding() is None
    assert Model.load(fixture_path("brown_pos", "lstm1.onnx")).why_not_reducible_embedding() is None
    r = api.decompose(durnn, fixture_path("brown_genre", "data.npz"), tmp_path / "c", progress=False, max_loss=0.8,
                      evaluate=False)
    s = r["size_search"]
    assert "general cell" in s["embedding_features_fixed"]
    assert all(t["embedding_features_removed"] == 0 for t in s["trail"])
