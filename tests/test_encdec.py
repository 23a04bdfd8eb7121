"""Translators (encoder-decoder models) on the real Tatoeba fixture: per-language concerns,
translator modules, routing composition."""
import numpy as np
import onnx
import pytest
from conftest import fixture_path

from onnxmod import encdec, runtime
from onnxmod.compose import compose, split
from onnxmod.concern import ConcernConfig
from onnxmod.errors import IncompatibleError
from onnxmod.graph import Model


@pytest.fixture(scope="module")
def translator():
    path = fixture_path("translation", "en_frdeit/lstm.onnx")
    model = Model.load(path)
    data = encdec.load_translation_data(fixture_path("translation", "en_frdeit/data.npz"), model)
    scores = encdec.score_languages(model, data, ConcernConfig())
    return model, data, scores


def _logits(proto, model, data, n=48):
    sess = runtime.session(proto)
    return sess.run(["logits"], encdec.feeds(model, data.x_test[:n], data.y_test[:n]))[0]


def test_translator_is_detected_and_scored_per_language(translator):
    model, data, scores = translator
    assert model.shape == "enc-dec" and model.recurrent[1].state_from == 0
    assert [s.class_name for s in scores] == data.languages == ["fr", "de", "it"]


def test_keep_all_routing_composition_reproduces_the_model(translator):
    model, data, scores = translator
    cfg = ConcernConfig()
    mods = [encdec.build_translator(model, s.concern(cfg, 0.0), data, "d") for s in scores]
    comp = compose(mods)
    np.testing.assert_allclose(_logits(comp, model, data), _logits(model.original, model, data), atol=1e-5)


def test_each_sentence_is_routed_to_its_language_module(translator):
    model, data, scores = translator
    cfg = ConcernConfig()
    mods = [encdec.build_translator(model, s.concern(cfg, 0.05), data, "d") for s in scores]
    for m in mods:
        onnx.checker.check_model(m, full_check=True)
        meta = {p.key: p.value for p in m.metadata_props}
        assert int(meta["onnxmod.lang_token"]) in data.tokens
    comp = compose(mods)
    got = _logits(comp, model, data)
    lang = data.lang_test[:48]
    for k, m in enumerate(mods):
        sel = lang == k
        if sel.any():
            np.testing.assert_allclose(got[sel], _logits(m, model, data)[sel], atol=1e-5)
    assert len(split(comp)) == 3
    # a batch missing languages, and a batch of one sentence: the router still feeds every module
    names = [i.name for i in comp.graph.input]
    sess = runtime.session(comp)
    for rows in (np.flatnonzero(lang == 1)[:5], np.flatnonzero(lang == 2)[:1]):
        x, y = data.x_test[:48][rows], data.y_test[:48][rows]
        part = sess.run(["logits"], {names[0]: x, names[1]: y[:, :-1]})[0]
        np.testing.assert_allclose(part, got[rows], atol=1e-5)
    # modules are physically smaller once units go (the bridge adds no weights)
    whole = sum(i.ByteSize() for i in model.original.graph.initializer)
    assert all(sum(i.ByteSize() for i in m.graph.initializer) < whole for m in mods)


def test_translators_with_different_output_vocabularies_are_refused(translator):
    model, data, scores = translator
    m = encdec.build_translator(model, scores[0].concern(ConcernConfig()), data, "d")
    other = onnx.ModelProto()
    other.CopyFrom(encdec.build_translator(model, scores[1].concern(ConcernConfig()), data, "d"))
    for p in other.metadata_props:
        if p.key == "onnxmod.output_vocab_sha256":
            p.value = "f" * 64
    with pytest.raises(IncompatibleError, match="output vocabularies"):
        compose([m, other])


def test_the_translator_guard_validates_on_x_val_and_says_when_it_cannot(tmp_path):
    """Issue 22: the guard read 600 held-out *training* pairs even when the data had pairs the model
    never trained on (validation BLEU 54.77 against 2.71 on test for et_endeit), unflagged. With
    x_val/y_val it reads those; without, the report says it validated on training pairs."""
    import warnings

    from onnxmod import api

    model, data = fixture_path("translation", "et_endeit/lstm.onnx"), fixture_path("translation", "et_endeit/data.npz")
    z = dict(np.load(data))
    z["x_val"], z["y_val"] = z["x_test"][:300], z["y_test"][:300]  # mechanics: any pairs it never trained on
    np.savez(tmp_path / "val.npz", **z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = api.decompose(model, tmp_path / "val.npz", tmp_path / "a", progress=False, evaluate=False)
        plain = api.decompose(model, data, tmp_path / "b", progress=False, evaluate=False)
    g = r["size_search"]
    assert g["heldout_split"] == "x_val" and g["heldout_rows"] == 300, g
    assert "no x_val" not in (tmp_path / "a" / "report.md").read_text()
    held = encdec.holdout(encdec.load_translation_data(tmp_path / "val.npz"), 0)[1]
    assert np.array_equal(held.x_test, z["x_test"][:300])  # the pairs the guard decoded
    p = plain["size_search"]
    assert p["heldout_split"] != "x_val" and "training split" in p["heldout_split"]
    md = (tmp_path / "b" / "report.md").read_text()
    assert "no x_val/y_val" in md and "optimistic" in md
    assert "no x_val/y_val" in (tmp_path / "b" / "report.html").read_text()
