"""Zoo search (onnxmod/zoo.py, `onnxmod zoo index|find`) and the zoo builder's pure parts, on the
committed zoo sample (fixtures/zoo)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxmod import api
from onnxmod import zoo as zs
from onnxmod.cli import main
from onnxmod.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "fixtures" / "zoo"


def small_zoo(tmp_path, n=8, bad=True) -> Path:
    z = tmp_path / "zoo"
    (z / "members").mkdir(parents=True)
    shutil.copytree(ZOO / "digits" / "data", z / "data")
    for p in sorted((ZOO / "digits" / "members").glob("*.onnx"))[:n]:
        shutil.copy(p, z / "members" / p.name)
    if bad:
        (z / "members" / "zz-corrupt.onnx").write_bytes(b"\x08\x07garbage")
        t = sorted((ZOO / "tomita" / "members").glob("*.onnx"))[0]
        shutil.copy(t, z / "members" / "zz-foreign.onnx")  # token input: a foreign signature
        meta = {p.key: p.value for p in onnx.load(str(t)).metadata_props}
        shutil.copy(ZOO / "tomita" / meta["zoo.data"], z / meta["zoo.data"])
    return z


def test_sample_members_carry_their_training_facts_and_the_accuracy_is_true():
    for name in ("digits", "tomita"):
        man = json.loads((ZOO / name / "zoo.json").read_text())
        assert len(man["members"]) == 40
        for e in man["members"][:8]:
            m = onnx.load(str(ZOO / name / e["file"]))
            meta = {p.key: p.value for p in m.metadata_props}
            assert meta["zoo.task"] == e["task"] and json.loads(meta["zoo.classes"]) == e["classes"]
            assert {"cell", "hidden", "lr", "epochs", "seed"} <= set(json.loads(meta["zoo.hparams"]))
            assert [n.op_type for n in m.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
            with np.load(ZOO / name / e["data"]) as d:
                x, y = d["x_test"], d["y_test"]
            keep = np.isin(y, e["classes"])
            x, y = x[keep], np.searchsorted(e["classes"], y[keep])
            s = ort.InferenceSession(str(ZOO / name / e["file"]), providers=["CPUExecutionProvider"])
            acc = float((s.run(None, {s.get_inputs()[0].name: x})[0].argmax(1) == y).mean())
            assert abs(acc - float(meta["zoo.test_accuracy"])) < 1e-5


def test_tomita_grammars():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_zoo as bz
    finally:
        sys.path.pop(0)
    cases = {1: (["1", "111"], ["10", "0"]), 2: (["10", "1010"], ["1", "0110", "101"]),
             3: (["1", "11", "100", "1100", "0"], ["10", "1110", "111000", "01110"]),
             4: (["1001", "00"], ["000", "11000"]),
             5: (["11", "0101", "00"], ["1", "011"]), 6: (["10", "0011", "111"], ["1", "0111"]),
             7: (["0011", "0101", "1"], ["10101", "01010"])}
    for g, (yes, no) in cases.items():
        assert all(bz.tomita(g, s) for s in yes), g
        assert not any(bz.tomita(g, s) for s in no), g


def test_index_skips_bad_members_with_one_warning_each_and_is_deterministic(tmp_path, capsys):
    z = small_zoo(tmp_path)
    rc = main(["zoo", "index", str(z), "--out", str(tmp_path / "i1"), "--probes", "32"])  # -q would hide warnings
    assert rc == 0
    out, err = capsys.readouterr()
    warns = [l for l in err.splitlines() if l.startswith("onnxmod: warning:")]
    assert len(warns) == 2 and "zz-corrupt" in warns[0] and "zz-foreign" in warns[1]
    assert "from 8 of 10 members (2 skipped)" in out
    with pytest.warns(UserWarning, match="skipped zoo member"):
        r = api.zoo_index(z, tmp_path / "i2", probes=32)
    assert r["indexed"] == 8 and len(r["skipped"]) == 2
    for f in ("index.json", "fingerprints.npz"):
        assert (tmp_path / "i1" / f).read_bytes() == (tmp_path / "i2" / f).read_bytes()
    index, table = zs.load_index(tmp_path / "i1")
    assert table.shape == (len(index["modules"]), 32) and np.isfinite(table).all()
    # every module's row is its log-odds on the stored probes
    e = index["modules"][3]
    with np.load(tmp_path / "i1" / "fingerprints.npz") as f:
        probes = f["probes"]
    s = ort.InferenceSession(str(tmp_path / "i1" / e["file"]), providers=["CPUExecutionProvider"])
    lg = s.run(["logits"], {s.get_inputs()[0].name: probes})[0]
    np.testing.assert_allclose(table[3], lg[:, 1] - lg[:, 0], rtol=1e-5, atol=1e-5)


def test_find_ranks_compatible_modules_of_the_class(tmp_path, capsys):
    z = small_zoo(tmp_path, n=12, bad=False)
    api.zoo_index(z, tmp_path / "idx", probes=64)
    index, _ = zs.load_index(tmp_path / "idx")
    names = [e["class_name"] for e in index["modules"]]
    c = max(set(names), key=lambda n: (names.count(n), n))
    ref = sorted((z / "members").glob("*.onnx"))[0]
    r = api.zoo_find(tmp_path / "idx", c, ref, top=2)
    assert r["candidates"] == names.count(c) and len(r["top"]) == min(2, r["candidates"])
    assert all(Path(m["file"]).parent.name.startswith("digits-") and Path(m["file"]).stem == c for m in r["ranking"])
    s = [m["score"] for m in r["ranking"]]
    assert s == sorted(s, reverse=True)
    assert main(["zoo", "find", "--index", str(tmp_path / "idx"), "--class", c, "--signature-of", str(ref)]) == 0
    assert f"class {c}:" in capsys.readouterr().out
    with pytest.raises(InputError, match="no module of class"):
        api.zoo_find(tmp_path / "idx", "nope", ref)
    tom = sorted((ZOO / "tomita" / "members").glob("*.onnx"))[0]
    with pytest.raises(InputError, match="compatible"):
        api.zoo_find(tmp_path / "idx", c, tom)
    task = r["ranking"][0]["task"]
    t = api.zoo_find(tmp_path / "idx", c, ref, top=50, task=task)
    assert t["ranking"] and all(m["task"] == task for m in t["ranking"])
    assert t["candidates"] == sum(m["task"] == task for m in r["ranking"])
    with pytest.raises(InputError, match="of task 'no-such-task'"):
        api.zoo_find(tmp_path / "idx", c, ref, task="no-such-task")


def test_consensus_quality_orders_by_agreement():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal(200)
    noise = np.array([0.1, 0.5, 1.0, 2.0, 4.0])
    scale = np.array([1, 3, 0.5, 2, 1])  # log-odds scales differ between models: ranks ignore them
    rows = truth[None, :] * scale[:, None] + noise[:, None] * rng.standard_normal((5, 200))
    q = zs.consensus_quality(rows)
    assert list(np.argsort(-q)) == list(np.argsort(-(scale / noise)))  # by signal-to-noise: 0, 1, 3, 2, 4
    assert zs.consensus_quality(rows[:1]).tolist() == [0.0]
    # decisiveness: the same agreement, a larger spread of log-odds ranks higher
    p = zs.predicted_quality(np.vstack([rows[:3], 0.1 * rows[:1]]))
    assert p[0] > p[3]


@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in ("torch", "sklearn")),
                    reason="rebuilding members needs torch and scikit-learn (pip install -e '.[zoo]')")
def test_rebuilt_members_are_byte_identical_to_the_committed_sample():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_zoo as bz
    finally:
        sys.path.pop(0)
    for zoo, i in (("digits", 3), ("tomita", 5)):
        spec = bz.member_spec(zoo, i)
        data = bz.digits_data() if zoo == "digits" else bz.tomita_data(spec["grammar"])
        blob = bz._npz_bytes(data)
        assert blob == (ZOO / zoo / spec["data"]).read_bytes()
        r = bz.build_member((zoo, i, 0, blob))
        assert r["onnx"] == (ZOO / zoo / "members" / f"{zoo}-{i:04d}.onnx").read_bytes()
