"""Composition, splitting and replacement of modules."""
import numpy as np
import onnx
import pytest

from onnxmod import api, runtime
from onnxmod.compose import compose, replace, split
from onnxmod.errors import IncompatibleError


@pytest.fixture
def decomposed(math_lstm1, tmp_path_factory):
    model, data = math_lstm1
    out = tmp_path_factory.mktemp("dec") / "o"
    api.decompose(model, data, out, progress=False)
    return out, data


def _scores(proto, x):
    return runtime.session(proto).run(["scores"], {"tokens": x})[0]


def test_split_inverts_compose(decomposed):
    out, data = decomposed
    composed = onnx.load(str(out / "composed.onnx"))
    mods = split(composed)
    assert len(mods) == 8
    for m in mods:  # each is a valid standalone model even though the composition shares nodes
        onnx.checker.check_model(m, full_check=True)
    own = [n for n in composed.graph.node if not n.name.startswith("onnxmod/")]
    assert len(own) < sum(len(m.graph.node) for m in mods)  # common nodes computed once
    x = np.load(data)["x_test"][:64]
    again = compose(mods)
    np.testing.assert_array_equal(_scores(again, x), _scores(composed, x))
    original = onnx.load(str(sorted((out / "modules").glob("*.onnx"))[0]))
    first = [m for m in mods if m.metadata_props == original.metadata_props]
    assert first, "module identity survives split"
    np.testing.assert_allclose(runtime.session(first[0]).run(None, {"tokens": x})[0],
                               runtime.session(original).run(None, {"tokens": x})[0], atol=0)


def test_replace_changes_only_the_replaced_module(decomposed, math_lstm1, tmp_path):
    out, data = decomposed
    other_model = math_lstm1[0].parent / "gru1.onnx"
    api.decompose(other_model, data, tmp_path / "gru", progress=False)
    new = tmp_path / "gru" / "modules" / "calculus.onnx"
    r = api.replace(out / "composed.onnx", new, tmp_path / "new.onnx", class_name="calculus")
    assert r["replaced"] == "calculus"
    x = np.load(data)["x_test"][:200]
    before = _scores(onnx.load(str(out / "composed.onnx")), x)
    after = _scores(onnx.load(str(tmp_path / "new.onnx")), x)
    names = [c["class_name"] for c in r["modules"]]
    k = names.index("calculus")
    others = [i for i in range(len(names)) if i != k]
    np.testing.assert_array_equal(after[:, others], before[:, others])  # bit-identical
    assert not np.array_equal(after[:, k], before[:, k])
    want = runtime.session(str(new)).run(None, {"tokens": x})[0][:, 1]
    np.testing.assert_allclose(after[:, k], want, atol=1e-6)


def test_duplicate_class_refused_unless_preferred(decomposed, tmp_path):
    out, _ = decomposed
    m = out / "modules" / "algebra.onnx"
    protos = [onnx.load(str(m)), onnx.load(str(m))]
    with pytest.raises(IncompatibleError, match="algebra"):
        compose(protos, ["a.onnx", "b.onnx"])
    assert len(split(compose(protos, ["a.onnx", "b.onnx"], prefer=["b.onnx"]))) == 1


def test_different_vocabulary_refused_unless_allowed(decomposed):
    out, _ = decomposed
    a = onnx.load(str(out / "modules" / "algebra.onnx"))
    b = onnx.load(str(out / "modules" / "calculus.onnx"))
    for p in b.metadata_props:
        if p.key == "onnxmod.vocab_sha256":
            p.value = "0" * 64
    with pytest.raises(IncompatibleError, match="vocabularies"):
        compose([a, b], ["a.onnx", "b.onnx"])
    assert len(split(compose([a, b], ["a.onnx", "b.onnx"], allow_mismatch=True))) == 2


def test_replace_refuses_wrong_class(decomposed):
    out, _ = decomposed
    composed = onnx.load(str(out / "composed.onnx"))
    new = onnx.load(str(out / "modules" / "algebra.onnx"))
    with pytest.raises(IncompatibleError, match="not 'calculus'"):
        replace(composed, new, "calculus")


def test_identical_modules_share_nodes_and_still_split_and_replace(decomposed):
    """Modules that keep every unit are identical up to their head: composing and splitting them
    must still work (regression: replace failed on a guarded translator composition)."""
    out, data = decomposed
    from onnxmod import api as _api  # noqa: F401
    a = onnx.load(str(out / "modules" / "algebra.onnx"))
    b = onnx.load(str(out / "modules" / "algebra.onnx"))
    for p in b.metadata_props:
        if p.key == "onnxmod.class_name":
            p.value = "algebra2"
        if p.key == "onnxmod.class_index":
            p.value = "99"
    comp = compose([a, b])
    mods = split(comp)
    assert len(mods) == 2
    for m in mods:
        onnx.checker.check_model(m, full_check=True)
    x = np.load(data)["x_test"][:20]
    np.testing.assert_array_equal(runtime.session(mods[1]).run(["score"], {"tokens": x})[0],
                                  runtime.session(a).run(["score"], {"tokens": x})[0])
    again = replace(comp, a, "algebra")
    assert len(split(again)) == 2
