"""Reuse and replacement benchmark (the paper's RQ2/RQ3, Tables III and IV), on the fixtures.

    pip install -e '.[torch]'
    python tools/reuse_benchmark.py [--tasks math_topics brown_genre brown_pos] [--variants lstm1]
                                    [--max-pairs 8] [--seed 0] [--json out/reuse.json]

* **intra-reuse**: for pairs of classes (all, or a seeded --max-pairs sample) of each task and
  variant: the 2-module composition (modules from one decomposition) vs a model of the same
  architecture and training recipe trained *from scratch* on only those two classes (tools/
  fixturelib + the recipe in tools/build_fixtures.py). Accuracy on the test samples of the two
  classes (for aligned many-output tasks: the tokens labelled with either class; every other
  token is padding for both). delta = composed - scratch.
* **intra-replace**: per task, the weakest and the strongest variant by test accuracy (from
  fixtures/manifest.json); for every class, the weakest model's composition with that class's
  module replaced by the strongest model's module. delta = replaced composition - weakest
  monolithic model (what a fix buys); delta vs the strongest model is printed too.
* **inter-reuse / inter-replace** (modules of different shapes) are not run: a one-output module
  votes once per sequence and a many-output module once per step, so their votes do not compare;
  see the README.

Prints tables like the paper's (mean and median delta per task and cell type) and writes JSON.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from onnxmod import api, runtime  # noqa: E402
from onnxmod.compose import compose, replace  # noqa: E402
from onnxmod.io import load_onnx, read_npz  # noqa: E402


def _acc(pred, y):
    valid = y >= 0
    return float((pred[valid] == y[valid]).mean()) if valid.any() else float("nan")


def _pair_data(x, y, a, b):
    """Rows/tokens of classes a and b, relabelled 0/1 (other tokens -1)."""
    if y.ndim == 1:
        rows = np.flatnonzero((y == a) | (y == b))
        return x[rows], (y[rows] == b).astype(np.int64)
    yy = np.where(y == a, 0, np.where(y == b, 1, -1))
    rows = np.flatnonzero((yy >= 0).any(axis=1))
    return x[rows], yy[rows]


def train_scratch(task: str, stem: str, x, y, seed: int):
    import build_fixtures as bf
    import fixturelib as fl
    import torch

    spec = bf.TASKS[task]
    manifest = json.loads((ROOT / "fixtures" / "manifest.json").read_text())["tasks"][task]
    cell, layers, bi = stem.rstrip("_bi").rstrip("0123456789"), int(stem.rstrip("_bi")[-1]), stem.endswith("_bi")
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = fl.RecurrentClassifier(shape=manifest["shape"], vocab_size=manifest["vocab_size"], emb_dim=spec["emb"],
                                   cell=cell, layers=layers, hidden=spec["hidden"], n_classes=2, bidirectional=bi,
                                   t_in=manifest.get("t_in"), t_out=manifest.get("t_out"),
                                   dropout=spec.get("dropout", 0.0))
    cfg = spec["cfg_for"](cell, layers) if "cfg_for" in spec else spec["cfg"]
    fl.train_model(model, x, y, cfg, seed=seed, log=lambda *a: None)
    return lambda xs: fl.predict_logits(model, xs).argmax(-1)


def intra_reuse(task, stem, max_pairs, seed, tmp):
    folder = ROOT / "fixtures" / task
    z = read_npz(folder / "data.npz", "a data file")
    r = api.decompose(folder / f"{stem}.onnx", folder / "data.npz", Path(tmp) / f"{task}-{stem}", progress=False,
                      seed=seed)
    files = {m["class"]: Path(tmp) / f"{task}-{stem}" / m["file"] for m in r["modules"]}
    pairs = list(itertools.combinations(sorted(files), 2))
    if max_pairs and len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), max_pairs, replace=False))]
    rows = []
    for a, b in pairs:
        x_te, y_te = _pair_data(z["x_test"], z["y_test"], a, b)
        comp = compose([load_onnx(files[a]), load_onnx(files[b])])
        label = runtime.run_batched(runtime.session(comp), x_te, ["label"])[0]
        composed = _acc(np.where(label == b, 1, 0), y_te)
        x_tr, y_tr = _pair_data(z["x_train"], z["y_train"], a, b)
        t = time.perf_counter()
        scratch = _acc(train_scratch(task, stem, x_tr, y_tr, seed)(x_te), y_te)
        rows.append({"task": task, "model": stem, "classes": [int(a), int(b)], "composed": composed,
                     "scratch": scratch, "delta": composed - scratch, "train_s": time.perf_counter() - t})
        print(f"  reuse {task}/{stem} classes {a},{b}: composed {100 * composed:.2f} scratch {100 * scratch:.2f} "
              f"delta {100 * (composed - scratch):+.2f}", flush=True)
    return rows


def intra_replace(task, seed, tmp):
    manifest = json.loads((ROOT / "fixtures" / "manifest.json").read_text())["tasks"][task]
    models = sorted(manifest["models"], key=lambda m: m["test_accuracy"])
    weak, strong = Path(models[0]["file"]).stem, Path(models[-1]["file"]).stem
    folder = ROOT / "fixtures" / task
    z = read_npz(folder / "data.npz", "a data file")
    out = {}
    for stem in (weak, strong):
        out[stem] = api.decompose(folder / f"{stem}.onnx", folder / "data.npz", Path(tmp) / f"r-{task}-{stem}",
                                  progress=False, seed=seed)
    weak_mono, strong_mono = out[weak]["monolithic_accuracy"], out[strong]["monolithic_accuracy"]
    composed = load_onnx(Path(tmp) / f"r-{task}-{weak}" / "composed.onnx")
    rows = []
    for m in out[strong]["modules"]:
        new = load_onnx(Path(tmp) / f"r-{task}-{strong}" / m["file"])
        rep = replace(composed, new, m["name"])
        label = runtime.run_batched(runtime.session(rep), z["x_test"], ["label"])[0]
        acc = _acc(label, z["y_test"])
        rows.append({"task": task, "weak": weak, "strong": strong, "class": m["name"], "accuracy": acc,
                     "delta": acc - weak_mono, "delta_vs_strong": acc - strong_mono})
        print(f"  replace {task}: {weak} <- {strong}'s {m['name']}: {100 * acc:.2f} "
              f"(weak {100 * weak_mono:.2f}, strong {100 * strong_mono:.2f}) delta {100 * (acc - weak_mono):+.2f}",
              flush=True)
    return rows


def table(rows, key, title):
    print(f"\n{title}")
    print(f"{'task':12} {'model':12} {'n':>3} {'mean delta':>11} {'median':>8}")
    groups = {}
    for r in rows:
        groups.setdefault((r["task"], r.get("model") or f"{r['weak']}<-{r['strong']}"), []).append(100 * r[key])
    for (task, model), v in groups.items():
        print(f"{task:12} {model:12} {len(v):3d} {statistics.mean(v):+11.2f} {statistics.median(v):+8.2f}")
    allv = [100 * r[key] for r in rows]
    if allv:
        print(f"{'all':12} {'':12} {len(allv):3d} {statistics.mean(allv):+11.2f} {statistics.median(allv):+8.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="*", default=["math_topics", "brown_genre", "brown_pos"])
    p.add_argument("--variants", nargs="*", default=["lstm1"])
    p.add_argument("--max-pairs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=str(ROOT / "out" / "reuse.json"))
    args = p.parse_args(argv)
    reuse, repl = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            if not (ROOT / "fixtures" / task / "data.npz").exists():
                print(f"{task}: no fixture (skipped)")
                continue
            for stem in args.variants:
                reuse += intra_reuse(task, stem, args.max_pairs, args.seed, tmp)
            repl += intra_replace(task, args.seed, tmp)
    table(reuse, "delta", "Intra-reuse: 2-module composition vs a model trained from scratch on the two classes")
    table(repl, "delta", "Intra-replace: weakest model with one module from the strongest, vs the weakest model")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"reuse": reuse, "replace": repl}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
