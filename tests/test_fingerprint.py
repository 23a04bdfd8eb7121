"""Fingerprints (onnxmod/fingerprint.py, api.fingerprint, `onnxmod fingerprint`) on the committed
zoo sample (fixtures/zoo: sklearn digits classifiers and Tomita acceptors)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxmod import api
from onnxmod import fingerprint as fp
from onnxmod.cli import main
from onnxmod.errors import IncompatibleError, InputError, UsageError

ZOO = Path(__file__).resolve().parents[1] / "fixtures" / "zoo"
DIGITS = sorted((ZOO / "digits" / "members").glob("*.onnx"))
TOMITA = sorted((ZOO / "tomita" / "members").glob("*.onnx"))
DIGITS_DATA = ZOO / "digits" / "data" / "digits.npz"


def ort_logits(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_functional_rows_are_the_models_outputs_on_the_probes():
    r = fp.fingerprint_rows(DIGITS[:3], "functional", probes=32, probe_data=DIGITS_DATA, seed=3)
    assert r["files"] == [str(p) for p in DIGITS[:3]]
    for i, p in enumerate(DIGITS[:3]):
        want = ort_logits(p, r["probes"]).reshape(-1)
        assert r["widths"][i] == want.size
        np.testing.assert_allclose(r["fingerprints"][i, :want.size], want, rtol=1e-6, atol=1e-6)
        assert np.isnan(r["fingerprints"][i, want.size:]).all()


def test_probes_come_from_x_arrays_only_and_are_seeded(tmp_path):
    with np.load(DIGITS_DATA) as z:
        x = z["x_test"][:50]
    f = tmp_path / "probe.npz"
    # y_* is an object array: reading it would need pickle and fail; x_* alone must be read
    np.savez(f, x_only=x, y_train=np.array([{"not": "read"}], dtype=object))
    sig = fp.signature(onnx.load(str(DIGITS[0])))
    a = fp.draw_probes(sig, 20, seed=1, probe_data=f)
    b = fp.draw_probes(sig, 20, seed=1, probe_data=f)
    c = fp.draw_probes(sig, 20, seed=2, probe_data=f)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rows = {r.tobytes() for r in x}
    assert all(p.tobytes() in rows for p in a) and len({p.tobytes() for p in a}) == 20  # no repeats
    np.savez(tmp_path / "none.npz", y_train=np.zeros(3))
    with pytest.raises(InputError, match="no x_"):
        fp.draw_probes(sig, 5, probe_data=tmp_path / "none.npz")


def test_signature_probes_token_ids_within_the_embedding_and_normal_floats():
    sig = fp.signature(onnx.load(str(TOMITA[0])))
    assert sig["vocab"] == 3 and sig["shape"] == [10]
    p = fp.draw_probes(sig, 400, seed=0)
    assert p.dtype == np.int64 and p.min() == 0 and p.max() == 2
    q = fp.draw_probes(fp.signature(onnx.load(str(DIGITS[0]))), 400, seed=0)
    assert q.dtype == np.float32 and q.shape == (400, 8, 8) and abs(float(q.mean())) < 0.05 and 0.9 < q.std() < 1.1


def test_npz_is_byte_identical_and_rows_follow_the_order_given(tmp_path):
    files = [str(p) for p in TOMITA[:4]]
    api.fingerprint(files, tmp_path / "a.npz", probes=16)
    api.fingerprint(files, tmp_path / "b.npz", probes=16)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    api.fingerprint(files[::-1], tmp_path / "r.npz", probes=16)
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "r.npz") as r:
        np.testing.assert_array_equal(a["fingerprints"][::-1], r["fingerprints"])
        assert list(a["files"]) == files and str(a["kind"]) == "functional"
    api.fingerprint(files, tmp_path / "s.npz", probes=16, seed=1)
    assert (tmp_path / "s.npz").read_bytes() != (tmp_path / "a.npz").read_bytes()


def test_interactive_feeds_the_answer_back_as_a_token():
    r = fp.fingerprint_rows(TOMITA[:1], "interactive", probes=6, chains=2, seed=0)
    x = r["probes"].copy()  # the chains' starts
    answers = []
    for _ in range(3):
        lg = ort_logits(TOMITA[0], x)
        answers.append(lg)
        x = np.concatenate([x[:, 1:], (1 + lg.argmax(1) % 2)[:, None]], axis=1)
    want = np.stack(answers, axis=1).reshape(-1)
    np.testing.assert_allclose(r["fingerprints"][0], want, rtol=1e-6, atol=1e-6)
    with pytest.raises(UsageError, match="token-id inputs"):
        fp.fingerprint_rows(DIGITS[:1], "interactive", probes=8)


def _permute_hidden(src, dst, perm):
    """The same function with hidden units renumbered: W/R/B gate rows, R columns, head columns."""
    m = onnx.load(str(src))
    inits = {t.name: t for t in m.graph.initializer}
    rec = next(n for n in m.graph.node if n.op_type in ("LSTM", "GRU", "RNN"))
    H = next(a.i for a in rec.attribute if a.name == "hidden_size")
    W = numpy_helper.to_array(inits[rec.input[1]])
    G = W.shape[1] // H
    rows = np.concatenate([g * H + perm for g in range(G)])
    for i, f in ((1, lambda a: a[:, rows]), (2, lambda a: a[:, rows][:, :, perm]),
                 (3, lambda a: a[:, np.concatenate([rows, G * H + rows])])):
        t = inits[rec.input[i]]
        t.CopyFrom(numpy_helper.from_array(f(numpy_helper.to_array(t)), t.name))
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    t = inits[gemm.input[1]]
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[:, perm], t.name))
    onnx.save(m, str(dst))


def test_mechanistic_rows_ignore_unit_permutation_and_tell_models_apart(tmp_path):
    src = DIGITS[0]
    H = next(a.i for n in onnx.load(str(src)).graph.node if n.op_type in ("LSTM", "GRU", "RNN")
             for a in n.attribute if a.name == "hidden_size")
    perm = np.random.default_rng(0).permutation(H)
    _permute_hidden(src, tmp_path / "perm.onnx", perm)
    x = fp.draw_probes(fp.signature(onnx.load(str(src))), 20, probe_data=DIGITS_DATA)
    np.testing.assert_allclose(ort_logits(src, x), ort_logits(tmp_path / "perm.onnx", x), atol=1e-5)
    r = fp.fingerprint_rows([src, tmp_path / "perm.onnx", DIGITS[1]], "mechanistic")
    a, b, c = r["fingerprints"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert r["widths"][0] == r["widths"][1]
    w = min(r["widths"][0], r["widths"][2])
    assert not np.allclose(a[:w], c[:w])


def test_module_rows_are_log_odds(tmp_path):
    member = TOMITA[0]
    meta = {p.key: p.value for p in onnx.load(str(member)).metadata_props}
    api.decompose(str(member), str(ZOO / "tomita" / meta["zoo.data"]), str(tmp_path / "d"), mode="rolled",
                  progress=False, evaluate=False)
    mod = sorted((tmp_path / "d" / "modules").glob("*.onnx"))[0]
    r = fp.fingerprint_rows([mod], "functional", probes=24, probe_data=ZOO / "tomita" / meta["zoo.data"])
    so = ort.SessionOptions()
    s = ort.InferenceSession(str(mod), so, providers=["CPUExecutionProvider"])
    lg = s.run(["logits"], {s.get_inputs()[0].name: r["probes"]})[0]
    np.testing.assert_allclose(r["fingerprints"][0], lg[:, 1] - lg[:, 0], rtol=1e-5, atol=1e-5)


def test_mixed_signatures_are_refused_and_bad_files_exit_3(tmp_path, capsys):
    with pytest.raises(IncompatibleError, match="differs"):
        fp.fingerprint_rows([DIGITS[0], TOMITA[0]], "functional", probes=4)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    assert main(["fingerprint", str(TOMITA[0]), str(bad), "--out", str(tmp_path / "f.npz"), "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.onnx" in err[0] and not (tmp_path / "f.npz").exists()
    assert main(["fingerprint", str(TOMITA[0]), "--out", str(tmp_path / "f.npz"), "--probes", "8", "--quiet",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["width"] == 16
