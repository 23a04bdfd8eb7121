"""General-cell modules (DuRNN) work with the rest of onnxmod as any other module does (issue 14,
item 4): unrolled mode in both semantics, compose, split, replace and the fused composition; and
what a general cell cannot do is refused in one line."""
import numpy as np
import onnx
import pytest

from onnxmod import api, runtime
from onnxmod.cli import main as cli_main
from onnxmod.compose import split
from onnxmod.concern import ConcernConfig

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
DATA = ROOT / "fixtures" / "digits" / "data.npz"
LOOP = ROOT / "fixtures" / "cells" / "digits" / "durnn1_loop.onnx"
UNROLLED = ROOT / "fixtures" / "cells" / "digits" / "durnn2_unrolled.onnx"
LSTM = ROOT / "fixtures" / "cells" / "digits" / "lstm1_native.onnx"
NO_GUARD = ConcernConfig(guard=None)


def _run(proto, x):
    proto = proto if isinstance(proto, onnx.ModelProto) else onnx.load(proto)
    sess = runtime.session(proto)
    return sess.run(None, {"x": x})


@pytest.fixture(scope="module")
def durnn(tmp_path_factory):
    out = tmp_path_factory.mktemp("durnn") / "out"
    r = api.decompose(LOOP, DATA, out, mode="rolled", config=NO_GUARD, progress=False)
    return out, r


def test_fused_composition_votes_as_the_modules_do(durnn):
    """One copy of the DuRNN trunk at batch K*B, each module's removed units held at 0 on its rows."""
    out, r = durnn
    assert r["fused"]["file"] == "fused.onnx"
    x = np.load(DATA)["x_test"]
    composed, fused = _run(out / "composed.onnx", x), _run(out / "fused.onnx", x)
    np.testing.assert_array_equal(fused[0], composed[0])
    np.testing.assert_allclose(fused[1], composed[1], atol=1e-5)


def test_split_recovers_the_modules(durnn):
    out, r = durnn
    x = np.load(DATA)["x_test"][:40]
    parts = split(onnx.load(out / "composed.onnx"))
    assert len(parts) == len(r["modules"])
    for part, m in zip(parts, r["modules"]):
        want = _run(out / m["file"], x)
        got = _run(part, x)
        np.testing.assert_array_equal(got[0], want[0])


def test_replace_with_another_models_module(durnn, tmp_path):
    """Class 8's DuRNN module swapped for the LSTM's: every other module's outputs are bit-identical."""
    out, _ = durnn
    lstm = api.decompose(LSTM, DATA, tmp_path / "lstm", mode="rolled", progress=False)
    new = tmp_path / "lstm" / next(m["file"] for m in lstm["modules"] if m["name"] == "8")
    r = api.replace(out / "composed.onnx", new, tmp_path / "replaced.onnx", class_name="8")
    assert r["replaced"] == "8"
    x = np.load(DATA)["x_test"][:40]
    before, after = split(onnx.load(out / "composed.onnx")), split(onnx.load(tmp_path / "replaced.onnx"))
    for a, b in zip(before, after):
        name = {p.key: p.value for p in b.metadata_props}["onnxmod.class_name"]
        if name != "8":
            np.testing.assert_array_equal(_run(a, x)[0], _run(b, x)[0])
    scores = api.evaluate(tmp_path / "replaced.onnx", DATA)
    assert scores["accuracy"] > 0.8


@pytest.mark.parametrize("semantics", ["output", "state"])
def test_unrolled_modules_of_a_two_layer_unrolled_durnn(semantics, tmp_path):
    cfg = ConcernConfig(guard=None, unrolled=semantics)
    r = api.decompose(UNROLLED, DATA, tmp_path / "out", mode="unrolled", config=cfg, progress=False)
    assert r["delta"] >= -0.05
    assert all(m["params"] < r["model_params"] for m in r["modules"])
    x = np.load(DATA)["x_test"][:16]
    assert _run(tmp_path / "out" / r["modules"][0]["file"], x)[0].shape == (16, 2)


@pytest.mark.parametrize("flags,what", [(["--monitor", "gates"], "no named gates"),
                                        (["--compensate"], "no single input weight")])
def test_what_a_general_cell_cannot_do_is_refused_in_one_line(flags, what, tmp_path, capsys):
    code = cli_main(["decompose", str(LOOP), "--data", str(DATA), "--out", str(tmp_path / "out"), "-q", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and what in err[0] and "general cell" in err[0], err
    assert not (tmp_path / "out").exists()


def test_same_inputs_same_bytes(tmp_path):
    a = api.decompose(UNROLLED, DATA, tmp_path / "a", mode="rolled", config=NO_GUARD, progress=False)
    api.decompose(UNROLLED, DATA, tmp_path / "b", mode="rolled", config=NO_GUARD, progress=False)
    for m in a["modules"]:
        assert (tmp_path / "a" / m["file"]).read_bytes() == (tmp_path / "b" / m["file"]).read_bytes()
    assert (tmp_path / "a" / "composed.onnx").read_bytes() == (tmp_path / "b" / "composed.onnx").read_bytes()


def test_size_search_keeps_the_embedding_whole_before_a_general_cell(tmp_path):
    """--max-loss prunes units and vocabulary; the embedding's features stay (no input weight to
    fold them into), and the report says why."""
    brown = ROOT / "fixtures" / "cells" / "brown_genre" / "durnn1_loop.onnx"
    r = api.decompose(brown, ROOT / "fixtures" / "brown_genre" / "data.npz", tmp_path / "out", mode="rolled",
                      max_loss=1.0, progress=False)
    assert "general cell" in r["size_search"]["embedding_features_fixed"]
    assert all(m["params"] < r["model_params"] for m in r["modules"])


def test_mechanistic_fingerprints_read_a_general_cells_parameters():
    """The same DuRNN in its two exports has one mechanistic fingerprint; another cell another."""
    from onnxmod.fingerprint import mechanistic_row

    loop = mechanistic_row(onnx.load(LOOP))
    unrolled = mechanistic_row(onnx.load(ROOT / "fixtures" / "cells" / "digits" / "durnn1_unrolled.onnx"))
    lstm = mechanistic_row(onnx.load(LSTM))
    assert loop.shape == unrolled.shape and np.allclose(loop, unrolled, rtol=1e-4, atol=1e-4)
    assert loop.shape != lstm.shape or not np.allclose(loop, lstm)
