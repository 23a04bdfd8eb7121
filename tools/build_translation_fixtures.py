#!/usr/bin/env python
"""Rebuild the encoder-decoder translation fixtures in ``fixtures/translation/``.

    .venv/bin/python tools/build_translation_fixtures.py [--data-root ../shared/data/tatoeba]

Reads the Tatoeba sentence files (``main/``, ``ukrainian/``, ``estonian/``), tokenises them,
splits them once, trains small PyTorch encoder-decoder translators (CPU, one thread), exports
them to ONNX (opset 20, native LSTM/GRU/RNN ops), checks every export against torch, decodes the
test split greedily with onnxruntime (``onnxmod.seq2seq``) and writes per variant:

* ``<variant>/<cell>.onnx``  -- model, inputs ``src`` [batch, S] and ``tgt_in`` [batch, T]
  (int64), output ``logits`` [batch, T, V_tgt];
* ``<variant>/data.npz``     -- token ids, vocabularies, references, torch greedy outputs;
* ``manifest.json`` and ``README.md`` -- sizes, BLEU per language, how they were built.

Variants (see README.md, written by this script):
  en_frdeit   English -> fr, de, it      (tatoeba/main)       lstm, gru, rnn_tanh
  en_frdeitua English -> fr, de, it, ua  (tatoeba/ukrainian)  lstm
  et_endeit   Estonian -> en, de, it     (tatoeba/estonian)   lstm (the "faulty" model)
  et_en_s2    Estonian -> en             (estonian/*_s2)      lstm (the "better" model)
The en_* variants share source and target vocabularies, and so do the et_* variants; each
group is split once by source sentence, so no test sentence of one variant is trained on by
the other variant of its group. A full build takes about 16 minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tatoeba"
DEFAULT_OUT = REPO / "fixtures" / "translation"


def _load_seq2seq():
    """onnxmod/seq2seq.py, loaded by path: the package's __init__ is not needed (nor run)."""
    spec = importlib.util.spec_from_file_location("_onnxmod_seq2seq", REPO / "onnxmod" / "seq2seq.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


s2s = _load_seq2seq()

SEED = 20261122
MAX_TOKENS = 10  # words + punctuation per sentence, both sides
SRC_LEN = MAX_TOKENS  # source width; pre-padded with 0
TGT_LEN = MAX_TOKENS + 2  # language token, <= 10 tokens, <eos>; post-padded with 0
MAX_DECODE = TGT_LEN - 1  # greedy steps (tokens + <eos>)
N_GREEDY = 64  # test sentences decoded with torch and stored
SPECIALS_SRC = [s2s.PAD, s2s.UNK]
SPECIALS_TGT = [s2s.PAD, s2s.UNK, s2s.EOS]
ONNX_META_TASK = {"onnxmod.task": "translation", "onnxmod.shape": "enc-dec"}


# ----------------------------------------------------------------------------------------------
# data


def read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


@dataclass
class Pair:
    key: str  # the tokenised source sentence (the split unit)
    src: list[str]
    tgt: list[str]
    ref: str  # normalised target sentence (the BLEU reference)
    lang: str


def make_pairs(src_lines, tgt_by_lang: dict[str, list[str]]) -> list[Pair]:
    pairs = []
    for i, s in enumerate(src_lines):
        st = s2s.tokenize(s)
        key = " ".join(st)
        if not st or len(st) > MAX_TOKENS:
            continue
        for lang, lines in tgt_by_lang.items():
            tt = s2s.tokenize(lines[i])
            if tt and len(tt) <= MAX_TOKENS:
                pairs.append(Pair(key, st, tt, s2s.normalize(lines[i]), lang))
    return pairs


def split_keys(keys: set[str], test_fraction: float, seed: int) -> set[str]:
    """The test side of a split by source sentence (seeded permutation of the sorted keys)."""
    keys = sorted(keys)
    perm = np.random.default_rng(seed).permutation(len(keys))
    return {keys[i] for i in perm[: round(test_fraction * len(keys))]}


def top_tokens(sentences, k: int, min_count: int = 1) -> list[str]:
    """The k most frequent tokens (ties by token), counted once per distinct sentence."""
    counts = collections.Counter(t for s in set(map(tuple, sentences)) for t in s)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [t for t, c in ranked if c >= min_count][:k]


def build_vocabs(train_pairs: list[Pair], languages, src_size, tgt_per_lang, min_count):
    src = SPECIALS_SRC + top_tokens([p.src for p in train_pairs], src_size - 2, min_count)
    tgt = SPECIALS_TGT + [f"<2{lang}>" for lang in languages]
    seen = set(tgt)
    for lang in languages:
        for t in top_tokens([p.tgt for p in train_pairs if p.lang == lang], tgt_per_lang, min_count):
            if t not in seen:
                seen.add(t)
                tgt.append(t)
    return src, tgt


def encode(pairs: list[Pair], src_vocab, tgt_vocab, languages):
    si = {w: i for i, w in enumerate(src_vocab)}
    ti = {w: i for i, w in enumerate(tgt_vocab)}
    n = len(pairs)
    x = np.zeros((n, SRC_LEN), dtype=np.int64)
    y = np.zeros((n, TGT_LEN), dtype=np.int64)
    for r, p in enumerate(pairs):
        ids = [si.get(t, 1) for t in p.src]
        x[r, SRC_LEN - len(ids) :] = ids  # pre-padding: the encoder ends on a real token
        ids = [ti[f"<2{p.lang}>"]] + [ti.get(t, 1) for t in p.tgt] + [ti[s2s.EOS]]
        y[r, : len(ids)] = ids
    lang = np.array([languages.index(p.lang) for p in pairs], dtype=np.int64)
    return x, y, lang


def covered(p: Pair, src_set, tgt_set) -> bool:
    return all(t in src_set for t in p.src) and all(t in tgt_set for t in p.tgt)


def vocab_sha256(vocab) -> str:
    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------
# model


class EncDec(nn.Module):
    """Embedding -> encoder RNN -> final state -> decoder RNN (teacher forcing) -> Linear."""

    def __init__(self, cell: str, n_src: int, n_tgt: int, emb: int, hidden: int, dropout: float):
        super().__init__()
        rnn = {
            "lstm": nn.LSTM,
            "gru": nn.GRU,
            "rnn_tanh": lambda i, h, **kw: nn.RNN(i, h, nonlinearity="tanh", **kw),
        }[cell]
        self.src_emb = nn.Embedding(n_src, emb, padding_idx=0)
        self.tgt_emb = nn.Embedding(n_tgt, emb, padding_idx=0)
        self.encoder = rnn(emb, hidden, batch_first=True)
        self.decoder = rnn(emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_tgt)
        self.dropout = dropout

    def _drop(self, t):
        # a Python branch, so the eval-mode export holds no Dropout node
        return F.dropout(t, self.dropout, training=True) if self.training and self.dropout else t

    def forward(self, src, tgt_in):
        _, state = self.encoder(self._drop(self.src_emb(src)))
        y, _ = self.decoder(self._drop(self.tgt_emb(tgt_in)), state)
        return self.out(self._drop(y))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_model(model, x, y, *, epochs, batch, lr, seed, label):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    t0 = time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        tot, cnt = 0.0, 0
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            yb = yt[idx]
            width = int((yb != 0).sum(1).max())  # drop all-padding target columns
            logits = model(xt[idx], yb[:, : width - 1])
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                yb[:, 1:width].reshape(-1),
                ignore_index=0,
                label_smoothing=0.1,
            )
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            cnt += len(idx)
        print(f"  [{label}] epoch {ep + 1}/{epochs} loss {tot / cnt:.3f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    return time.time() - t0


@torch.no_grad()
def torch_greedy(model, src, lang_ids, max_len, eos_id):
    """The same algorithm as onnxmod.seq2seq.greedy_decode, in torch (prefix re-run per step)."""
    model.eval()
    src = torch.from_numpy(np.ascontiguousarray(src))
    prefix = torch.from_numpy(np.asarray(lang_ids, dtype=np.int64)).reshape(-1, 1)
    out = torch.zeros((len(src), max_len), dtype=torch.int64)
    done = torch.zeros(len(src), dtype=torch.bool)
    for t in range(max_len):
        nxt = model(src, prefix)[:, -1].argmax(-1)
        nxt[done] = 0
        out[:, t] = nxt
        done |= nxt == eos_id
        if bool(done.all()):
            break
        prefix = torch.cat([prefix, nxt[:, None]], 1)
    return out.numpy()


RECURRENT_OPS = {"LSTM", "GRU", "RNN"}
PLAIN_RESHAPES = {"Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten"}


def check_structure(model: onnx.ModelProto, cell: str):
    """Exactly two native recurrent ops; encoder Y_h (Y_c) -> decoder initial_h (initial_c)
    directly or through plain reshapes only."""
    nodes = model.graph.node
    producer = {o: (n, k) for n in nodes for k, o in enumerate(n.output)}
    rec = [n for n in nodes if n.op_type in RECURRENT_OPS]
    want = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}[cell]
    if len(rec) != 2 or any(n.op_type != want for n in rec):
        raise RuntimeError(f"expected two {want} ops, found {[n.op_type for n in rec]}")

    def source(name):
        """(recurrent op, output slot) that `name` is, through plain reshapes; else None."""
        while name in producer:
            n, k = producer[name]
            if n.op_type in RECURRENT_OPS:
                return n, k
            if n.op_type not in PLAIN_RESHAPES:
                return None
            name = n.input[0]
        return None

    def state_input(n, slot):
        return n.input[slot] if len(n.input) > slot and n.input[slot] else None

    decs = [n for n in rec if state_input(n, 5) and source(state_input(n, 5))]
    if len(decs) != 1:
        raise RuntimeError(f"{len(decs)} recurrent ops take initial_h from another one (want 1)")
    dec = decs[0]
    enc = next(n for n in rec if n is not dec)
    for slot, out_slot in [(5, 1)] + ([(6, 2)] if cell == "lstm" else []):
        name = state_input(dec, slot)
        found = source(name) if name else None
        if found is None or found[0] is not enc or found[1] != out_slot:
            raise RuntimeError(
                f"decoder input {slot} is not encoder output {out_slot} through plain reshapes"
            )
    for n in rec:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if attrs.get("layout", 0) != 0 or attrs.get("direction", b"forward") not in (b"forward", "forward"):
            raise RuntimeError(f"unexpected attributes on {n.name}: {attrs}")
        acts = attrs.get("activations", [b"Tanh"])
        if cell == "rnn_tanh" and [a.lower() for a in map(bytes.decode, acts)] != ["tanh"]:
            raise RuntimeError(f"RNN activations {attrs.get('activations')}")


def export_onnx(model, path: Path, cell: str, meta: dict[str, str], n_src: int, n_tgt: int):
    model.eval()
    ex = (torch.randint(1, n_src, (2, SRC_LEN)), torch.randint(1, n_tgt, (2, 4)))
    torch.onnx.export(
        model,
        ex,
        str(path),
        input_names=["src", "tgt_in"],
        output_names=["logits"],
        dynamic_axes={
            "src": {0: "batch", 1: "src_len"},
            "tgt_in": {0: "batch", 1: "tgt_len"},
            "logits": {0: "batch", 1: "tgt_len"},
        },
        opset_version=20,
        dynamo=False,
    )
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    check_structure(m, cell)
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    m.producer_name = "onnxmod tools/build_translation_fixtures.py"
    onnx.save(m, str(path))

    # verify at other batch sizes and lengths against torch
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(7)
    for b, s, t in [(5, SRC_LEN, TGT_LEN - 1), (1, 6, 3), (9, 13, 8)]:
        src = torch.randint(1, n_src, (b, s), generator=g)
        src[0, : s // 2] = 0  # some pre-padding
        tgt = torch.randint(1, n_tgt, (b, t), generator=g)
        with torch.no_grad():
            want = model(src, tgt).numpy()
        got = sess.run(None, {"src": src.numpy(), "tgt_in": tgt.numpy()})[0]
        err = float(np.abs(got - want).max())
        if got.shape != want.shape or err > 1e-4:
            raise RuntimeError(f"{path}: ONNX differs from torch at batch {b}, S {s}, T {t}: {err}")
    return sess


# ----------------------------------------------------------------------------------------------
# variants


@dataclass
class Variant:
    name: str
    languages: list[str]
    train: list[Pair]
    test: list[Pair]
    cells: list[str]
    epochs: int
    lr: float
    dropout: float
    group: str
    notes: str = ""


def shuffled(pairs, seed):
    perm = np.random.default_rng(seed).permutation(len(pairs))
    return [pairs[i] for i in perm]


def train_test(pairs, test_keys, seed):
    """(train, test) pairs of one variant, each shuffled with its own seed."""
    return (shuffled([p for p in pairs if p.key not in test_keys], SEED + seed),
            shuffled([p for p in pairs if p.key in test_keys], SEED + 10 + seed))


def english_group(root: Path, cfg):
    main_langs, ua_langs = ["fr", "de", "it"], ["fr", "de", "it", "ua"]
    main = {l: read_lines(root / "main" / f"{l}.txt") for l in ["en"] + main_langs}
    ukr = {l: read_lines(root / "ukrainian" / f"{l}.txt") for l in ["en"] + ua_langs}
    p_main = make_pairs(main["en"], {l: main[l] for l in main_langs})
    p_ua = make_pairs(ukr["en"], {l: ukr[l] for l in ua_langs})
    test_keys = split_keys({p.key for p in p_main + p_ua}, cfg.test_fraction, SEED)
    tr_main = [p for p in p_main if p.key not in test_keys]
    tr_ua = [p for p in p_ua if p.key not in test_keys]
    src_vocab, tgt_vocab = build_vocabs(
        tr_main + tr_ua, ua_langs, cfg.en_src_vocab, cfg.en_tgt_per_lang, min_count=1
    )
    ss, ts = set(src_vocab), set(tgt_vocab)
    variants = []
    for name, pairs, langs, cells, epochs, seed in [
        ("en_frdeit", p_main, main_langs, ["lstm", "gru", "rnn_tanh"], cfg.epochs_en, 1),
        ("en_frdeitua", p_ua, ua_langs, ["lstm"], cfg.epochs_en, 2),
    ]:
        keep = [p for p in pairs if covered(p, ss, ts)]
        variants.append(
            Variant(
                name,
                langs,
                *train_test(keep, test_keys, seed),
                cells,
                epochs,
                cfg.lr,
                cfg.dropout,
                "en",
                notes=f"{len(pairs)} pairs of <= {MAX_TOKENS} tokens; kept the {len(keep)} "
                "whose tokens are all in the vocabularies",
            )
        )
    return variants, src_vocab, tgt_vocab


def estonian_group(root: Path, cfg):
    d = root / "estonian"
    langs = ["en", "de", "it"]
    et = {l: read_lines(d / f"{l}.txt") for l in ["et"] + langs}
    s2 = {l: read_lines(d / f"{l}_s2.txt") for l in ["et", "en"]}
    p_et = make_pairs(et["et"], {l: et[l] for l in langs})
    p_s2 = make_pairs(s2["et"], {"en": s2["en"]})
    test_keys = split_keys({p.key for p in p_et + p_s2}, cfg.et_test_fraction, SEED + 1)
    tr = [p for p in p_et + p_s2 if p.key not in test_keys]
    src_vocab, tgt_vocab = build_vocabs(
        tr, langs, cfg.et_src_vocab, cfg.et_tgt_per_lang, min_count=2
    )
    variants = []
    for name, pairs, ls, seed in [("et_endeit", p_et, langs, 3), ("et_en_s2", p_s2, ["en"], 4)]:
        variants.append(
            Variant(
                name,
                ls,
                *train_test(pairs, test_keys, seed),
                ["lstm"],
                cfg.epochs_et,
                cfg.et_lr,
                cfg.et_dropout,
                "et",
                notes=f"{len(pairs)} pairs of <= {MAX_TOKENS} tokens, all kept "
                "(out-of-vocabulary tokens become <unk>)",
            )
        )
    return variants, src_vocab, tgt_vocab


def build_variant(v: Variant, src_vocab, tgt_vocab, out: Path, cfg, manifest, others=()):
    vdir = out / v.name
    vdir.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, l_tr = encode(v.train, src_vocab, tgt_vocab, v.languages)
    x_te, y_te, l_te = encode(v.test, src_vocab, tgt_vocab, v.languages)
    refs = [p.ref for p in v.test]
    eos = tgt_vocab.index(s2s.EOS)
    oracle = s2s.bleu_by_language(s2s.detokenize(y_te, tgt_vocab), refs, l_te, v.languages)
    print(f"{v.name}: {len(v.train)} train / {len(v.test)} test pairs; "
          f"detokeniser round trip BLEU {oracle}", flush=True)
    arrays = dict(
        x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
        src_vocab=np.array(src_vocab), tgt_vocab=np.array(tgt_vocab),
        languages=np.array(v.languages), lang_train=l_tr, lang_test=l_te,
        ref_test=np.array(refs),
    )
    meta = dict(ONNX_META_TASK)
    meta["onnxmod.languages"] = json.dumps(v.languages)
    meta["onnxmod.src_vocab_sha256"] = vocab_sha256(src_vocab)
    meta["onnxmod.tgt_vocab_sha256"] = vocab_sha256(tgt_vocab)
    for k, cell in enumerate(v.cells):
        label = f"{v.name}/{cell}"
        torch.manual_seed(SEED + 100 * k + len(v.name))
        hidden = cfg.hidden
        vanilla = cell == "rnn_tanh"
        dropout = cfg.dropout_rnn if vanilla else v.dropout
        lr = cfg.lr_rnn if vanilla else v.lr
        epochs = cfg.epochs_rnn if vanilla else v.epochs
        model = EncDec(cell, len(src_vocab), len(tgt_vocab), cfg.emb, hidden, dropout)
        if vanilla:  # orthogonal recurrent weights: +3 BLEU for the tanh RNN in trials
            for rnn in (model.encoder, model.decoder):
                nn.init.orthogonal_(rnn.weight_hh_l0)
        secs = train_model(model, x_tr, y_tr, epochs=epochs, batch=cfg.batch, lr=lr,
                           seed=SEED + k, label=label)
        path = vdir / f"{cell}.onnx"
        sess = export_onnx(model, path, cell, meta, len(src_vocab), len(tgt_vocab))
        n = min(N_GREEDY, len(x_te))
        tg = torch_greedy(model, x_te[:n], y_te[:n, 0], MAX_DECODE, eos)
        t0 = time.time()
        og = s2s.greedy_decode(sess, x_te, y_te[:, 0], MAX_DECODE, eos_id=eos)
        dec_s = time.time() - t0
        if not np.array_equal(og[:n], tg):
            bad = np.flatnonzero((og[:n] != tg).any(1))
            raise RuntimeError(f"{label}: ONNX greedy differs from torch greedy on rows {bad}")
        arrays[f"torch_greedy_test_{cell}"] = tg
        bleu = s2s.bleu_by_language(s2s.detokenize(og, tgt_vocab), refs, l_te, v.languages)
        print(f"  [{label}] BLEU {bleu} (decode {dec_s:.1f}s)", flush=True)
        for i in range(3):
            print(f"    {refs[i]!r} -> {s2s.detokenize(og[i:i+1], tgt_vocab)[0]!r}")
        cross = {}
        for o in others:  # the other variant of the group: its test pairs in our languages
            pairs = [p for p in o.test if p.lang in v.languages]
            xo, yo, lo = encode(pairs, src_vocab, tgt_vocab, v.languages)
            ho = s2s.detokenize(s2s.greedy_decode(sess, xo, yo[:, 0], MAX_DECODE, eos_id=eos), tgt_vocab)
            cross[o.name] = s2s.bleu_by_language(ho, [p.ref for p in pairs], lo, v.languages)
        manifest["models"][label] = {
            "file": f"{v.name}/{cell}.onnx",
            "variant": v.name,
            "cell": cell,
            "hidden_size": hidden,
            "embedding_size": cfg.emb,
            "params": n_params(model),
            "file_bytes": path.stat().st_size,
            "src_vocab_size": len(src_vocab),
            "tgt_vocab_size": len(tgt_vocab),
            "languages": v.languages,
            "train_pairs": len(x_tr),
            "test_pairs": len(x_te),
            "epochs": epochs,
            "learning_rate": lr,
            "dropout": dropout,
            "train_seconds": round(secs, 1),
            "torch_greedy_key": f"torch_greedy_test_{cell}",
            "bleu": bleu,
            "bleu_mean": float(np.mean(list(bleu.values()))),
            "bleu_on_other_test_splits": cross,
        }
    np.savez_compressed(vdir / "data.npz", **arrays)
    manifest["variants"][v.name] = {
        "data": f"{v.name}/data.npz",
        "languages": v.languages,
        "vocab_group": v.group,
        "train_pairs": len(x_tr),
        "test_pairs": len(x_te),
        "test_pairs_per_language": {l: int((l_te == i).sum()) for i, l in enumerate(v.languages)},
        "detokenizer_roundtrip_bleu": oracle,
        "notes": v.notes,
    }


# ----------------------------------------------------------------------------------------------
# README


def write_readme(out: Path, manifest, cmd: str, wall: float):
    m = manifest
    total_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and f.name != "README.md") / 1e6
    rows = []
    for e in m["models"].values():
        langs = " · ".join(f"{l} {b:.1f}" for l, b in e["bleu"].items())
        rows.append(
            f"| `{e['file']}` | {e['cell']} | {e['hidden_size']} | {e['params']:,} | "
            f"{e['file_bytes'] / 1e6:.2f} MB | {e['train_pairs']:,} / {e['test_pairs']:,} | "
            f"{langs} | {e['bleu_mean']:.1f} |"
        )
    et_cmp = ""
    try:
        faulty = m["models"]["et_endeit/lstm"]["bleu"]["en"]
        better = m["models"]["et_en_s2/lstm"]["bleu_on_other_test_splits"]["et_endeit"]["en"]
        et_cmp = f"; on `et_endeit`'s English test pairs it scores {better:.1f} BLEU to {faulty:.1f}"
    except KeyError:
        pass
    xrows = []
    for e in m["models"].values():
        for other, bl in e.get("bleu_on_other_test_splits", {}).items():
            langs = " · ".join(f"{l} {x:.1f}" for l, x in bl.items())
            xrows.append(f"| `{e['file']}` | `{other}` test | {langs} |")
    vrows = []
    for name, v in m["variants"].items():
        rt = " · ".join(f"{l} {b:.1f}" for l, b in v["detokenizer_roundtrip_bleu"].items())
        vrows.append(f"| `{name}` | {', '.join(v['languages'])} | {v['vocab_group']} | "
                     f"{v['train_pairs']:,} | {v['test_pairs']:,} | {rt} |")
    c = m["config"]
    text = f"""# Translation fixtures (encoder-decoder)

Small encoder-decoder translators in ONNX and their data, for onnxmod's translation scenarios
(decompose a multi-language translator into one module per target language; add a language;
replace a faulty language). Built by `tools/build_translation_fixtures.py`; everything in this
folder is its output.

## Source and licence
Sentences from **Tatoeba** (https://tatoeba.org), licence **CC-BY 2.0 FR**, attribution:
tatoeba.org and its contributors. The aligned files were assembled by the MIT-licensed
replication package of Imtiaz et al., "Decomposing a Recurrent Neural Network into Modules for
Enabling Reusability and Replacement" (ICSE 2023), and read here from `shared/data/tatoeba`:
`main/{{en,fr,de,it}}.txt` (50,744 lines), `ukrainian/{{en,fr,de,it,ua}}.txt` (24,246),
`estonian/{{et,en,de,it}}.txt` (1,153) and `estonian/{{et,en}}_s2.txt` (3,123). What is stored
here is derived from them: lowercased, tokenised sentences as vocabulary ids, and the lowercased
reference sentences of the test split; the models were trained on them (so they are CC-BY 2.0
FR derived data too).

## What was converted
- **Tokens**: lowercase; zero-width spaces and soft hyphens removed, every run of whitespace
  (the French no-break spaces too) made one space (`onnxmod.seq2seq.normalize`); split by the regex
  `\\w+|[^\\w\\s]` (words, and each punctuation mark on its own) -- `onnxmod.seq2seq.tokenize`.
  Pairs where either side has more than {MAX_TOKENS} tokens are dropped.
- **Split**: once per vocabulary group, by source sentence: a seeded permutation (seed {SEED})
  of the distinct tokenised source sentences puts {c['test_fraction']:.0%} (English) /
  {c['et_test_fraction']:.0%} (Estonian) of them in the test split. All pairs of a source
  sentence (one per target language) are on the same side, and the split is shared by the two
  variants of a group: `en_frdeit` never trained on an English sentence that is in
  `en_frdeitua`'s test split and vice versa; likewise `et_endeit` / `et_en_s2` (the `_s2` file
  contains all of `et.txt`/`en.txt`).
- **Vocabularies** (from the training split only; index 0 `<pad>`, 1 `<unk>`; target also 2
  `<eos>`, then the language tokens `<2xx>`):
  - English group (`en_frdeit`, `en_frdeitua`: identical vocabularies): the {c['en_src_vocab'] - 2}
    most frequent English tokens; target = union of the {c['en_tgt_per_lang']} most frequent
    tokens of each of fr, de, it, ua (one target vocabulary, so the two models' logits line
    up). Only pairs whose tokens are all in the vocabularies are kept (train and test), so the
    English fixtures contain no `<unk>`; their BLEU is on in-vocabulary sentences.
  - Estonian group (`et_endeit`, `et_en_s2`: identical vocabularies, same `<2en>` token):
    at most {c['et_src_vocab'] - 2} Estonian tokens and {c['et_tgt_per_lang']} per target language,
    each seen at least twice; all pairs are kept (rarer tokens become `<unk>`) because the
    Estonian data is small.
- **Padding**: source ids `[N, {SRC_LEN}]` **pre-padded** with 0 (the encoder's last step is
  always a real token; no `sequence_lens`); target ids `[N, {TGT_LEN}]` = language token, tokens,
  `<eos>`, then 0. Models are trained on exactly this layout, so decode with the stored width.
- **Models**: `src` → Embedding({c['emb']}) → encoder (1 layer) → final h (and c) =
  `initial_h` (`initial_c`) of the decoder (1 layer), whose input is the embedded `tgt_in`
  (teacher forcing; `tgt_in[:, 0]` is the language token) → Linear over the target vocabulary.
  Hidden size {c['hidden']}. Trained with Adam (one-cycle schedule), batch {c['batch']}, label
  smoothing 0.1, dropout on embeddings and decoder outputs, torch {m['versions']['torch']} on one
  CPU thread: English LSTM/GRU {c['epochs_en']} epochs, lr {c['lr']}, dropout {c['dropout']};
  vanilla RNN {c['epochs_rnn']} epochs, lr {c['lr_rnn']}, dropout {c['dropout_rnn']}, orthogonal
  initial recurrent weights; Estonian {c['epochs_et']} epochs, lr {c['et_lr']}, dropout
  {c['et_dropout']}. The first {N_GREEDY} test pairs are decoded with torch and with onnxruntime
  and must agree token for token.
  Exported with `torch.onnx.export(dynamo=False, opset_version=20)`: native `LSTM`/`GRU`
  (`linear_before_reset=1`)/`RNN` (Tanh) ops; inputs `src` int64 `[batch, S]`, `tgt_in` int64
  `[batch, T]` (all four axes dynamic), output `logits` float32 `[batch, T, V_tgt]`. The
  build checks that the encoder's `Y_h`/`Y_c` feed the decoder's `initial_h`/`initial_c`
  directly or through plain reshapes only, and that onnxruntime matches torch (atol 1e-4) at
  three other batch sizes and lengths. Metadata: `onnxmod.task=translation`,
  `onnxmod.shape=enc-dec`, `onnxmod.languages` (JSON), `onnxmod.src_vocab_sha256`,
  `onnxmod.tgt_vocab_sha256` (sha256 of the vocabulary joined by "\\n").

## Files
- `<variant>/<cell>.onnx` -- the models; `manifest.json` -- per model: file, cell, sizes,
  params, BLEU per language; per variant: data file, pair counts.
- `<variant>/data.npz` (`np.load`): `x_train`, `x_test` int64 `[N, {SRC_LEN}]`; `y_train`,
  `y_test` int64 `[N, {TGT_LEN}]`; `src_vocab`, `tgt_vocab`, `languages` (unicode);
  `lang_train`, `lang_test` (int64 index into `languages` per pair; also `y[:, 0]` is the
  language token); `ref_test` (unicode: the lowercased reference sentence of each test pair);
  `torch_greedy_test_<cell>` (int64 `[{N_GREEDY}, {MAX_DECODE}]`: torch's greedy decoding of
  the first {N_GREEDY} test pairs by `<cell>.onnx`'s model, in `onnxmod.seq2seq.greedy_decode`'s
  format: no language token, `<eos>`, then 0). Training pairs are shuffled; so are test pairs
  (languages mixed).

## Data

| variant | target languages | vocab group | train pairs | test pairs | detokeniser round-trip BLEU |
|---|---|---|---|---|---|
{chr(10).join(vrows)}

The round-trip column scores the detokenised stored targets against the references: the
ceiling that tokenisation and detokenisation leave (100 = lossless).

## BLEU (test split, greedy, from the ONNX models)
Corpus BLEU per target language, sacrebleu {m['versions']['sacrebleu']} defaults (13a), of
`onnxmod.seq2seq.detokenize(greedy_decode(...))` (lowercase) against the lowercase
references; max {MAX_DECODE} generated tokens.

| model | cell | hidden | params | size | train / test pairs | BLEU per language | mean |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

BLEU of each model on the other variant's test split (its languages only; never trained on):

| model | on | BLEU per language |
|---|---|---|
{chr(10).join(xrows)}

`et_endeit` is the deliberately faulty model (about 1,100 Estonian sentences, so about 950
training pairs per language); `et_en_s2` has about 2.5 times as many Estonian→English training
pairs{et_cmp} (the
"replace" scenario: swap `et_endeit`'s `en` module for `et_en_s2`'s). Both Estonian models are
weak in absolute terms: a few thousand pairs are too few for a translator without attention,
and out-of-vocabulary words cap what any output can score (see the round-trip column above);
their output is mostly sentence frames (`warum <unk>?`, `i saw <unk> <unk>.`). \
`en_frdeitua` is the "add a language" scenario's
comparison model and the source of the `ua` module.

## Rebuild

    {cmd}

(`--data-root` points to the `tatoeba` folder; default `../shared/data/tatoeba` next to the
repository.) Last build: {wall / 60:.1f} min wall on 2 shared CPU cores, one torch thread;
{total_mb:.1f} MB in this folder.
Training is seeded; a rebuild on another machine or torch version can differ in the last bits
and hence in some greedy outputs and BLEU, and rewrites `manifest.json` and the models together.
"""
    (out / "README.md").write_text(text, encoding="utf-8")


# ----------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="the tatoeba folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="*", help="build only these variants (for development; "
                    "keeps the other variants' manifest entries)")
    ap.add_argument("--epochs-en", type=int, default=12)
    ap.add_argument("--epochs-et", type=int, default=80)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--emb", type=int, default=64)
    ap.add_argument("--en-src-vocab", type=int, default=1000)
    ap.add_argument("--en-tgt-per-lang", type=int, default=450)
    ap.add_argument("--et-src-vocab", type=int, default=800)
    ap.add_argument("--et-tgt-per-lang", type=int, default=350)
    ap.add_argument("--test-fraction", type=float, default=0.10)
    ap.add_argument("--et-test-fraction", type=float, default=0.15)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-rnn", type=float, default=2e-3)
    ap.add_argument("--epochs-rnn", type=int, default=30)
    ap.add_argument("--dropout-rnn", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--et-lr", type=float, default=2e-3)
    ap.add_argument("--et-dropout", type=float, default=0.3)
    cfg = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    manifest = {"models": {}, "variants": {}}
    if cfg.only and mpath.exists():
        manifest = json.loads(mpath.read_text())
        for key in ("models", "variants"):
            manifest[key] = {k: v for k, v in manifest[key].items()
                             if k.split("/")[0] not in cfg.only}
    import sacrebleu

    manifest["versions"] = {"torch": torch.__version__, "onnx": onnx.__version__,
                            "onnxruntime": ort.__version__, "sacrebleu": sacrebleu.__version__}
    manifest["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()
                          if k not in ("data_root", "out", "only")}
    manifest["max_decode_len"] = MAX_DECODE
    manifest["bleu"] = ("sacrebleu corpus_bleu (13a) of lowercase detokenised greedy output vs lowercase references, "
                        "test split")
    for builder in (english_group, estonian_group):
        variants, sv, tv = builder(cfg.data_root, cfg)
        for v in variants:
            if cfg.only and v.name not in cfg.only:
                continue
            build_variant(v, sv, tv, out, cfg, manifest, [o for o in variants if o is not v])
    order = ["en_frdeit", "en_frdeitua", "et_endeit", "et_en_s2"]
    manifest["models"] = dict(sorted(manifest["models"].items(),
                                     key=lambda kv: (order.index(kv[1]["variant"]), kv[0])))
    manifest["variants"] = dict(sorted(manifest["variants"].items(), key=lambda kv: order.index(kv[0])))
    wall = time.time() - t0
    manifest["build_wall_seconds"] = round(wall)
    mpath.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_readme(out, manifest, ".venv/bin/python tools/build_translation_fixtures.py", wall)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"done in {wall / 60:.1f} min; {out} holds {total / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    main()
