"""CTC heads (``onnxmod.ctc``): greedy decoding, string accuracy and CER by hand; modules keep the
blank; compositions vote over it; decompose, evaluate, compose and replace on the CTC fixture."""
import json

import numpy as np
import onnx
import pytest
from conftest import fixture_path
from test_cli import assert_one_line_error, onnxmod

from onnxmod import api, ctc, runtime
from onnxmod.errors import IncompatibleError
from onnxmod.modularize import channeled


@pytest.fixture(scope="module")
def crnn():
    return fixture_path("ctc", "crnn_batch_first.onnx"), fixture_path("ctc", "data.npz")


@pytest.fixture(scope="module")
def whole(crnn, tmp_path_factory):
    """The fixture decomposed with every unit kept (removal cap 0), labels from the model."""
    out = tmp_path_factory.mktemp("ctc") / "whole"
    from onnxmod.concern import ConcernConfig

    r = api.decompose(*crnn, out, labels="model", config=ConcernConfig(removal_cap=0.0, guard=None))
    return out, r


def test_greedy_decoding_by_hand():
    labels = np.array([[0, 3, 3, 0, 3, 5, 5, 0, 0],
                       [7, 7, 7, 7, 0, 0, 0, 0, 7],
                       [0, 0, 0, 0, 0, 0, 0, 0, 0],
                       [2, -1, 2, 0, 4, 0, -1, 4, 4]])
    assert ctc.decode(labels, 0) == [(3, 3, 5), (7, 7), (), (2, 2, 4, 4)]
    assert ctc.decode(labels, 7)[1] == (0,)


def test_string_accuracy_and_cer_by_hand():
    assert ctc.edit_distance("kitten", "sitting") == 3
    assert ctc.edit_distance("", "abc") == 3 and ctc.edit_distance("abc", "abc") == 0
    assert ctc.edit_distance((1, 2, 3), (1, 3)) == 1
    pred = [tuple("1234"), tuple("125"), tuple("")]
    ref = [tuple("1234"), tuple("1235"), tuple("77")]
    assert ctc.string_accuracy(pred, ref) == pytest.approx(1 / 3)
    assert ctc.cer(pred, ref) == pytest.approx((0 + 1 + 2) / (4 + 4 + 2))


def test_the_ctc_vote_keeps_the_blank():
    ids = np.array([3, 5, 9])
    margins = np.array([[-1.0, -0.5, -2.0],   # nobody claims the step: blank
                        [-1.0, 0.5, 2.0],     # two claim it: the larger log-odds wins
                        [0.0, -1.0, 0.0],     # a tie with the blank goes to the blank
                        [0.3, 0.1, -4.0]])
    assert ctc.vote(ids, margins, 0).tolist() == [0, 9, 0, 3]


def test_channeled_ctc_head_layout():
    w = np.arange(20, dtype=np.float32).reshape(5, 4)  # 5 classes along axis 0, blank 0
    out = channeled(w, 0, [3], blank=0)
    assert out.shape == (3, 4)
    assert np.allclose(out[0], w[[1, 2, 4]].mean(axis=0))  # rest: not the class, not the blank
    assert np.allclose(out[1], w[3]) and np.allclose(out[2], w[0])
    assert np.allclose(channeled(w, 0, [3]), np.stack([w[[0, 1, 2, 4]].mean(axis=0), w[3]]))


def test_whole_modules_and_their_composition_answer_as_the_model(crnn, whole):
    model, data = crnn
    out, r = whole
    with np.load(data) as z:
        x = z["x_test"][:64]
    logits = runtime.run_batched(runtime.session(str(model)), x, ["logits"])[0]
    for name in ("3", "7"):
        proto = onnx.load(str(out / "modules" / f"{name}.onnx"))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["onnxmod.ctc_blank"] == "0"
        got = runtime.run_batched(runtime.session(proto), x, ["logits"])[0]
        c = 1 + int(name)
        assert got.shape == logits.shape[:-1] + (3,)
        np.testing.assert_allclose(got[..., 1], logits[..., c], atol=1e-4)
        np.testing.assert_allclose(got[..., 2], logits[..., 0], atol=1e-4)
        others = [i for i in range(11) if i not in (0, c)]
        np.testing.assert_allclose(got[..., 0], logits[..., others].mean(axis=-1), atol=1e-4)
    comp = onnx.load(str(out / "composed.onnx"))
    label = runtime.run_batched(runtime.session(comp), x, ["label"])[0]
    assert (label == logits.argmax(-1)).all()  # blank steps stay blank, every character's step its own
    assert (label == 0).mean() > 0.5
    assert r["ctc"]["delta_string_accuracy"] == 0 and r["ctc"]["reference"] == "the true text"
    assert {p.key: p.value for p in comp.metadata_props}["onnxmod.ctc_blank"] == "0"


def test_decompose_judges_strings(crnn, tmp_path):
    model, data = crnn
    r = api.decompose(model, data, tmp_path / "o", labels="model", ctc_blank=0)
    assert r["labels"] == "model" and r["ctc"]["blank"] == 0
    assert r["size_search"]["metric"] == "string accuracy"
    assert len(r["modules"]) == 10 and "blank" not in [m["name"] for m in r["modules"]]
    with np.load(data) as z:
        texts = list(z["text_test"])
    logits = runtime.run_batched(runtime.session(str(model)), np.load(data)["x_test"], ["logits"])[0]
    cs = [""] + [str(d) for d in range(10)]
    decoded = ["".join(cs[i] for i in s) for s in ctc.decode(logits.argmax(-1), 0)]
    assert r["ctc"]["monolithic_string_accuracy"] == pytest.approx(np.mean([a == b for a, b in zip(decoded, texts)]))
    assert r["ctc"]["strings"] == 500 and r["ctc"]["delta_string_accuracy"] >= -0.01
    md = (tmp_path / "o" / "report.md").read_text()
    assert "string accuracy (greedy CTC decoding" in md and "points of string accuracy" in md
    assert r["fused"]["file"] is None


def test_size_search_judges_strings(crnn, tmp_path):
    model, data = crnn
    r = api.decompose(model, data, tmp_path / "o", labels="model", mode="rolled", max_loss=1.0)
    s = r["size_search"]
    assert s["metric"] == "string accuracy" and s["kind"] == "size search"
    assert r["ctc"]["delta_string_accuracy"] >= -0.02  # certified within 1 point on validation strings


def test_compose_character_subsets_and_replace(crnn, whole, tmp_path):
    model, data = crnn
    out, _ = whole
    low = [out / "modules" / f"{d}.onnx" for d in "01234"]
    api.compose(low, tmp_path / "low.onnx")
    e = api.evaluate(tmp_path / "low.onnx", data)
    assert e["metric"] == "string accuracy" and "use only the 5 characters" in e["classes_note"]
    with np.load(data) as z:
        only = sum(set(t) <= set("01234") for t in z["text_test"])
    assert e["samples"] == only > 0 and e["accuracy"] > 0.7
    full = api.evaluate(tmp_path / "low.onnx", data, classes="all")
    assert full["samples"] == 500 and full["accuracy"] < e["accuracy"]
    # replace one character's module by the same character's module of another decomposition
    other = api.decompose(model, data, tmp_path / "other", labels="model", mode="rolled")
    assert other["ctc"]["blank"] == 0
    r = api.replace(tmp_path / "low.onnx", tmp_path / "other" / "modules" / "3.onnx", tmp_path / "swapped.onnx")
    assert r["replaced"] == "3"
    e2 = api.evaluate(tmp_path / "swapped.onnx", data)
    assert e2["samples"] == only and abs(e2["accuracy"] - e["accuracy"]) < 0.05
    # a module without a CTC blank does not vote with these
    api.decompose(fixture_path("math_topics", "lstm1.onnx"), fixture_path("math_topics", "data.npz"),
                  tmp_path / "m", config=None, evaluate=False, classes=["algebra"])
    with pytest.raises(IncompatibleError, match="no CTC blank"):
        api.compose([low[0], tmp_path / "m" / "modules" / "algebra.onnx"], tmp_path / "mixed.onnx",
                    allow_mismatch=True)


def test_cli_ctc_blank_and_its_refusals(crnn, tmp_path):
    model, data = crnn
    res = onnxmod("decompose", model, "--data", data, "--labels", "model", "--ctc-blank", "0", "--no-guard",
                  "--out", tmp_path / "o", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["ctc"]["blank"] == 0 and r["ctc"]["monolithic_string_accuracy"] > 0.8
    ev = onnxmod("evaluate", tmp_path / "o" / "composed.onnx", "--data", data)
    assert ev.returncode == 0 and "string accuracy" in ev.stdout and "character error rate" in ev.stdout
    assert_one_line_error(onnxmod("decompose", model, "--data", data, "--labels", "model", "--ctc-blank", "11",
                                  "--out", tmp_path / "p"), 2, "--ctc-blank 11")
    assert_one_line_error(onnxmod("decompose", model, "--data", data, "--labels", "model", "--classes", "blank",
                                  "--out", tmp_path / "q"), 2, "CTC blank")
    m, d = fixture_path("math_topics", "lstm1.onnx"), fixture_path("math_topics", "data.npz")
    assert_one_line_error(onnxmod("decompose", m, "--data", d, "--ctc-blank", "0", "--out", tmp_path / "r"), 2,
                          "per-step outputs")


def test_a_charset_names_the_characters_and_guards_replacement(crnn, whole, tmp_path):
    """Modules remember their model's charset (``onnxmod.output_vocab_sha256``): a module of a
    model whose class indices mean other characters is refused by compose and replace, naming it."""
    model, data = crnn
    out, r = whole
    meta = {p.key: p.value for p in onnx.load(str(out / "modules" / "3.onnx")).metadata_props}
    assert len(meta["onnxmod.output_vocab_sha256"]) == 64
    with np.load(data) as z:
        arrays = {k: z[k] for k in z.files if k != "class_names"}
    arrays["charset"] = np.array(["", "9", "8", "7", "6", "5", "4", "3", "2", "1", "0"])  # another order
    np.savez(tmp_path / "other.npz", **arrays)
    o = api.decompose(model, tmp_path / "other.npz", tmp_path / "o", labels="model", evaluate=False,
                      classes=["7"])
    assert [m["class"] for m in o["modules"]] == [8]  # the model's own class names win over a charset
    with pytest.raises(IncompatibleError, match="output vocabularies"):
        api.replace(out / "composed.onnx", tmp_path / "o" / "modules" / "7.onnx", tmp_path / "r.onnx",
                    class_name="7")
