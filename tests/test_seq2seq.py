"""onnxmod.seq2seq against the translation fixtures (onnxruntime only; no torch needed).

The fixtures and their manifest are built by tools/build_translation_fixtures.py.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parents[1]
try:
    from onnxmod import seq2seq
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, str(REPO))
    from onnxmod import seq2seq

FIX = REPO / "fixtures" / "translation"
MANIFEST = json.loads((FIX / "manifest.json").read_text(encoding="utf-8"))
MODELS = sorted(MANIFEST["models"])
MAX_LEN = MANIFEST["max_decode_len"]

_sessions: dict = {}
_data: dict = {}


def session(label):
    if label not in _sessions:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        path = FIX / MANIFEST["models"][label]["file"]
        _sessions[label] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return _sessions[label]


def data(variant):
    if variant not in _data:
        with np.load(FIX / variant / "data.npz") as z:
            _data[variant] = {k: z[k] for k in z.files}
    return _data[variant]


def eos_id(d):
    return int(np.flatnonzero(d["tgt_vocab"] == seq2seq.EOS)[0])


@pytest.mark.parametrize("label", MODELS)
def test_greedy_equals_stored_torch_greedy(label):
    entry = MANIFEST["models"][label]
    d = data(entry["variant"])
    want = d[entry["torch_greedy_key"]]
    n = len(want)
    assert n == min(64, len(d["x_test"]))
    got = seq2seq.greedy_decode(
        session(label), d["x_test"][:n], d["y_test"][:n, 0], MAX_LEN, eos_id=eos_id(d)
    )
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("label", MODELS)
def test_bleu_equals_manifest(label):
    entry = MANIFEST["models"][label]
    d = data(entry["variant"])
    ids = seq2seq.greedy_decode(
        session(label), d["x_test"], d["y_test"][:, 0], MAX_LEN, eos_id=eos_id(d)
    )
    hyps = seq2seq.detokenize(ids, d["tgt_vocab"])
    bleu = seq2seq.bleu_by_language(hyps, list(d["ref_test"]), d["lang_test"], d["languages"])
    assert set(bleu) == set(entry["bleu"]) == set(entry["languages"])
    for lang, value in entry["bleu"].items():
        assert bleu[lang] == pytest.approx(value, abs=1e-9), lang
        assert value > 0


@pytest.mark.parametrize("label", ["en_frdeit/lstm", "en_frdeit/gru", "et_endeit/lstm"])
def test_batch_size_does_not_change_output(label):
    entry = MANIFEST["models"][label]
    d = data(entry["variant"])
    x, lang = d["x_test"][:24], d["y_test"][:24, 0]
    outs = [
        seq2seq.greedy_decode(session(label), x, lang, MAX_LEN, eos_id=eos_id(d), batch_size=b)
        for b in (1, 7, 24)
    ]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    # one sentence alone, and an int language token for all
    one = seq2seq.greedy_decode(session(label), x[3:4], int(lang[3]), MAX_LEN, eos_id=eos_id(d))
    np.testing.assert_array_equal(one[0], outs[0][3])


def test_greedy_output_format():
    d = data("en_frdeit")
    ids = seq2seq.greedy_decode(session("en_frdeit/lstm"), d["x_test"][:64], d["y_test"][:64, 0], MAX_LEN)
    eos = eos_id(d)
    lang_tokens = {i for i, w in enumerate(d["tgt_vocab"]) if w.startswith("<2")}
    for row in ids:
        ends = np.flatnonzero(row == eos)
        if ends.size:  # after <eos> only padding
            assert (row[ends[0] + 1 :] == 0).all()
        assert not lang_tokens & set(row.tolist())


def test_path_and_session_give_the_same_result():
    d = data("et_en_s2")
    path = FIX / MANIFEST["models"]["et_en_s2/lstm"]["file"]
    a = seq2seq.greedy_decode(path, d["x_test"][:8], d["y_test"][:8, 0], MAX_LEN)
    b = seq2seq.greedy_decode(session("et_en_s2/lstm"), d["x_test"][:8], d["y_test"][:8, 0], MAX_LEN)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("label", MODELS)
def test_model_metadata_and_io(label):
    entry = MANIFEST["models"][label]
    d = data(entry["variant"])
    m = onnx.load(str(FIX / entry["file"]), load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["onnxmod.task"] == "translation"
    assert meta["onnxmod.shape"] == "enc-dec"
    assert json.loads(meta["onnxmod.languages"]) == list(d["languages"]) == entry["languages"]
    for key in ("src_vocab", "tgt_vocab"):
        digest = hashlib.sha256("\n".join(d[key].tolist()).encode("utf-8")).hexdigest()
        assert meta[f"onnxmod.{key}_sha256"] == digest
    assert [i.name for i in m.graph.input] == ["src", "tgt_in"]
    assert [o.name for o in m.graph.output] == ["logits"]
    ops = [n.op_type for n in m.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert ops == [{"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}[entry["cell"]]] * 2


@pytest.mark.parametrize("variant", sorted(MANIFEST["variants"]))
def test_data_layout(variant):
    d = data(variant)
    langs = list(d["languages"])
    tv = list(d["tgt_vocab"])
    assert tv[:3] == ["<pad>", "<unk>", "<eos>"] and list(d["src_vocab"][:2]) == ["<pad>", "<unk>"]
    for split in ("train", "test"):
        x, y = d[f"x_{split}"], d[f"y_{split}"]
        assert x.dtype == y.dtype == np.int64
        assert (x[:, -1] != 0).all()  # pre-padded source: last step is a real token
        lang_tok = np.array([tv.index(f"<2{lang}>") for lang in langs])
        np.testing.assert_array_equal(y[:, 0], lang_tok[d[f"lang_{split}"]])
        assert ((y == eos_id(d)).sum(1) == 1).all()
    assert len(d["ref_test"]) == len(d["x_test"]) == len(d["lang_test"])


@pytest.mark.parametrize("group", [("en_frdeit", "en_frdeitua"), ("et_endeit", "et_en_s2")])
def test_groups_share_vocabularies_and_split(group):
    a, b = data(group[0]), data(group[1])
    for key in ("src_vocab", "tgt_vocab"):
        np.testing.assert_array_equal(a[key], b[key])
    # no test source sentence of one variant is a training source sentence of the other
    # (rows with <unk> can stand for several sentences, so only rows without it are compared)
    def rows(x):
        return {r.tobytes() for r in x if not (r == 1).any()}

    for p, q in ((a, b), (b, a)):
        assert not (rows(p["x_train"]) | rows(q["x_train"])) & rows(q["x_test"])


def test_detokenize_inverts_tokenize():
    texts = [
        "Je n'aime pas ça.",
        "Don't do it, Tom!",
        "C'est peut-être vrai ?",
        "Il a 3.5 kg et 1,000 livres.",
        "„Hallo“, sagte er.",
        "Він — лікар (мабуть).",
        "Vorrei un po' d'acqua.",
    ]
    vocab = ["<pad>", "<unk>", "<eos>", "<2fr>"]
    for text in texts:
        toks = seq2seq.tokenize(text)
        vocab += [t for t in dict.fromkeys(toks) if t not in vocab]
        ids = np.array([[3] + [vocab.index(t) for t in toks] + [2, 0, 5]])
        out = seq2seq.detokenize(ids, vocab)[0]
        assert seq2seq.tokenize(out) == toks
        assert seq2seq.corpus_bleu([out], [seq2seq.normalize(text)]) == pytest.approx(100.0)


def test_corpus_bleu_and_by_language():
    refs = ["the cat is here .", "a dog", "il est là ."]
    assert seq2seq.corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert seq2seq.corpus_bleu(["x y z", "q", "w"], refs) < 5
    by = seq2seq.bleu_by_language(refs, refs, np.array([0, 0, 2]), ["en", "de", "fr"])
    assert set(by) == {"en", "fr"}
    with pytest.raises(ValueError):
        seq2seq.corpus_bleu(["a"], ["a", "b"])


def test_seq2seq_does_not_import_torch():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('s2s', {str(REPO / 'onnxmod' / 'seq2seq.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "import numpy as np\n"
        f"m.greedy_decode({str(FIX / 'et_en_s2' / 'lstm.onnx')!r}, np.ones((2, 10), np.int64), 3, 4)\n"
        "m.corpus_bleu(['a b'], ['a b'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
