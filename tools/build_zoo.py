"""Build onnxmod's two RNN model zoos (issue 16; SPEC §9).

* ``digits``: sequential classifiers of scikit-learn's bundled 8x8 digits (``load_digits``, 1,797
  images, BSD-3), each image read row by row (8 steps x 8 features, values / 16). Members vary in
  cell (LSTM, GRU, tanh RNN), hidden size, seed, learning rate, epochs and *task*: which digits
  the member separates (a seeded pool of 2-4-digit subsets; the model's class k is the k-th digit
  of its subset, in increasing order).
* ``tomita``: acceptors of the seven Tomita grammars over {0, 1} (strings of length 1-10, drawn
  seeded and class-balanced from all 2,046 such strings), tokens 1 = '0', 2 = '1', left-padded
  with 0 to length 10. Members vary in cell, hidden size, seed, learning rate, epochs and task
  (the grammar).

Layout of a zoo directory (what ``onnxmod zoo index`` reads)::

    ZOO/zoo.json                 one entry per member: file, task, hyper-parameters, test accuracy
    ZOO/data/<name>.npz          the onnxmod data contract (x_train, y_train, x_test, y_test,
                                 class_names[, vocab]) a member was trained and tested on
    ZOO/members/<id>.onnx        legacy TorchScript exporter (dynamo=False), opset 20, native ops

Each member's ``metadata_props``: ``zoo.task``, ``zoo.data`` (its data file, relative to the zoo
directory), ``zoo.classes`` (JSON: which of that file's classes the model's outputs are, in
order), ``zoo.hparams`` (JSON), ``zoo.test_accuracy``, ``zoo.member``, ``zoo.source``.
Training and export run with one torch thread and a per-member seed: a member is a function of
(zoo, index, --seed), and the same arguments give byte-identical files (timings are only printed).

Usage::

    python tools/build_zoo.py --zoo digits --count 500 --out out/zoo/digits [--ray] [--address A]
    python tools/build_zoo.py --sample            # the committed sample: fixtures/zoo/{digits,tomita}

Needs torch==2.13.0 and scikit-learn (``load_digits``); neither is a runtime dependency.
"""
from __future__ import annotations

import argparse
import io
import itertools
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CELLS = ("lstm", "gru", "rnn_tanh")
OPSET = 20


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def digits_data(seed: int = 0) -> dict:
    """All ten digits, one seeded stratified 70/30 split shared by every member."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)  # [1797, 8, 8]: 8 steps (rows) x 8 features
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.size)]
        k = int(round(idx.size * 0.3))
        te += idx[:k].tolist()
        tr += idx[k:].tolist()
    tr, te = np.sort(tr), np.sort(te)
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te],
            "class_names": np.array([str(c) for c in range(10)])}


def digit_tasks(n: int = 10, seed: int = 0) -> list[tuple[int, ...]]:
    """A seeded pool of ``n`` distinct digit subsets of size 2-4 (the zoo's tasks)."""
    rng = np.random.default_rng(seed + 1000)
    out: list[tuple[int, ...]] = []
    while len(out) < n:
        k = int(rng.integers(2, 5))
        t = tuple(sorted(int(v) for v in rng.choice(10, size=k, replace=False)))
        if t not in out:
            out.append(t)
    return out


def tomita(g: int, s: str) -> bool:
    """Tomita grammar ``g`` (1-7) over {0, 1}."""
    if g == 1:
        return "0" not in s
    if g == 2:
        return len(s) % 2 == 0 and s == "10" * (len(s) // 2)
    if g == 3:  # no odd run of 1s immediately followed by an odd run of 0s
        runs = [(k, len(list(v))) for k, v in itertools.groupby(s)]
        return not any(a == "1" and la % 2 == 1 and b == "0" and lb % 2 == 1
                       for (a, la), (b, lb) in zip(runs, runs[1:]))
    if g == 4:
        return "000" not in s
    if g == 5:
        return s.count("0") % 2 == 0 and s.count("1") % 2 == 0
    if g == 6:
        return (s.count("0") - s.count("1")) % 3 == 0
    if g == 7:  # 0*1*0*1*
        return len([k for k, _ in itertools.groupby(s)]) <= 4 - (s[:1] == "1")
    raise ValueError(g)


TOMITA_T = 10


def tomita_data(g: int, seed: int = 0, n_train: int = 1000, n_test: int = 1000) -> dict:
    """Class-balanced strings of length 1-10 labelled by grammar ``g`` (pos. drawn with replacement
    where the language is small, e.g. 1* has 10 such strings)."""
    strings = ["".join(p) for L in range(1, TOMITA_T + 1) for p in itertools.product("01", repeat=L)]
    lab = np.array([tomita(g, s) for s in strings])
    pos, neg = np.flatnonzero(lab), np.flatnonzero(~lab)
    rng = np.random.default_rng(seed * 10 + g)

    def draw(n):
        idx = np.concatenate([rng.choice(pos, n // 2, replace=pos.size < n // 2),
                              rng.choice(neg, n - n // 2, replace=neg.size < n - n // 2)])
        idx = idx[rng.permutation(idx.size)]
        x = np.zeros((idx.size, TOMITA_T), np.int64)
        for r, i in enumerate(idx):
            s = strings[i]
            x[r, TOMITA_T - len(s):] = [1 + int(ch) for ch in s]
        return x, lab[idx].astype(np.int64)

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte,
            "class_names": np.array(["reject", "accept"]), "vocab": np.array(["<pad>", "0", "1"])}


# --------------------------------------------------------------------------------------------
# members
# --------------------------------------------------------------------------------------------
def member_spec(zoo: str, i: int, seed: int = 0) -> dict:
    """The hyper-parameters and task of member ``i`` (a pure function of zoo, i, seed)."""
    rng = np.random.default_rng([seed, i, 0 if zoo == "digits" else 1])
    spec = {"member": f"{zoo}-{i:04d}", "cell": CELLS[int(rng.integers(3))],
            "hidden": int(rng.choice([4, 8, 12, 16])), "lr": float(rng.choice([1e-3, 3e-3, 1e-2, 3e-2])),
            "epochs": int(rng.choice([1, 2, 4, 8, 16])), "seed": int(rng.integers(1 << 30)),
            "batch": 32 if zoo == "digits" else 64}
    if zoo == "digits":
        tasks = digit_tasks()
        t = tasks[int(rng.integers(len(tasks)))]
        spec.update(task="digits:" + ",".join(map(str, t)), classes=list(t), data="data/digits.npz")
    else:
        g = int(rng.integers(1, 8))
        spec.update(task=f"tomita{g}", grammar=g, classes=[0, 1], data=f"data/tomita{g}.npz", embed=4)
    return spec


def _net(spec: dict, n_in: int, n_out: int):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(3, spec["embed"]) if "embed" in spec else None
            d = spec["embed"] if self.embed is not None else n_in
            cell = spec["cell"]
            if cell == "lstm":
                self.rnn = nn.LSTM(d, spec["hidden"], batch_first=True)
            elif cell == "gru":
                self.rnn = nn.GRU(d, spec["hidden"], batch_first=True)
            else:
                self.rnn = nn.RNN(d, spec["hidden"], nonlinearity="tanh", batch_first=True)
            self.head = nn.Linear(spec["hidden"], n_out)

        def forward(self, x):
            if self.embed is not None:
                x = self.embed(x)
            y, _ = self.rnn(x)
            return self.head(y[:, -1])

    del torch
    return Net()


def build_member(job: tuple) -> dict:
    """Train, test, export one member; returns its manifest entry and ONNX bytes (no file I/O, so
    it runs unchanged as a Ray task)."""
    zoo, i, seed, data_bytes = job
    import onnx
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    spec = member_spec(zoo, i, seed)
    data = dict(np.load(io.BytesIO(data_bytes)))
    classes = spec["classes"]
    if zoo == "digits":
        def pick(split):
            keep = np.isin(data[f"y_{split}"], classes)
            return data[f"x_{split}"][keep], np.searchsorted(classes, data[f"y_{split}"][keep])
    else:
        def pick(split):
            return data[f"x_{split}"], data[f"y_{split}"]
    xtr, ytr = pick("train")
    xte, yte = pick("test")
    torch.manual_seed(spec["seed"])
    net = _net(spec, xtr.shape[-1] if xtr.ndim == 3 else 0, len(classes))
    opt = torch.optim.Adam(net.parameters(), lr=spec["lr"])
    rng = np.random.default_rng(spec["seed"])
    t0 = time.perf_counter()
    X, Y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for _ in range(spec["epochs"]):
        order = torch.from_numpy(rng.permutation(len(xtr)))
        for s in range(0, len(xtr), spec["batch"]):
            b = order[s:s + spec["batch"]]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(X[b]), Y[b])
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        ref = net(torch.from_numpy(xte)).numpy()
    acc = float((ref.argmax(1) == yte).mean())
    name = "x" if xtr.ndim == 3 else "tokens"
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.from_numpy(xte[:2]),), buf, dynamo=False, opset_version=OPSET,
                          input_names=[name], output_names=["logits"],
                          dynamic_axes={name: {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load_from_string(buf.getvalue())
    hp = {k: spec[k] for k in ("cell", "hidden", "lr", "epochs", "seed", "batch")}
    meta = {"zoo.member": spec["member"], "zoo.task": spec["task"], "zoo.data": spec["data"],
            "zoo.classes": json.dumps(classes), "zoo.hparams": json.dumps(hp, sort_keys=True),
            "zoo.test_accuracy": f"{acc:.6f}",
            "zoo.source": "sklearn load_digits (BSD-3)" if zoo == "digits" else "Tomita grammar, generated"}
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m, full_check=True)
    if sum(n.op_type in ("LSTM", "GRU", "RNN") for n in m.graph.node) != 1:
        raise RuntimeError(f"{spec['member']}: expected one native recurrent op")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    got = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {name: xte})[0]
    if not np.allclose(got, ref, atol=1e-4):
        raise RuntimeError(f"{spec['member']}: onnxruntime differs from torch by {np.abs(got - ref).max()}")
    entry = {"member": spec["member"], "file": f"members/{spec['member']}.onnx", "task": spec["task"],
             "classes": classes, "data": spec["data"], "hparams": hp, "test_accuracy": round(acc, 6)}
    return {"entry": entry, "onnx": m.SerializeToString(deterministic=True), "train_seconds": train_s}


def _npz_bytes(d: dict) -> bytes:
    from onnxmod.fingerprint import npz_bytes

    return npz_bytes(d, compress=True)


def build(zoo: str, count: int, out: Path, seed: int = 0, ray: bool = False, address: str | None = None,
          force: bool = False, progress: bool = True) -> dict:
    from onnxmod.io import atomic_directory
    from onnxmod.parallel import pmap

    datas = {"data/digits.npz": digits_data()} if zoo == "digits" else \
        {f"data/tomita{g}.npz": tomita_data(g) for g in range(1, 8)}
    blobs = {k: _npz_bytes(v) for k, v in datas.items()}
    jobs = [(zoo, i, seed, blobs[member_spec(zoo, i, seed)["data"]]) for i in range(count)]
    t0 = time.perf_counter()
    results = pmap(build_member, jobs, ray=ray, address=address, progress=progress, desc=f"build {zoo}")
    wall = time.perf_counter() - t0
    with atomic_directory(out, force=force) as tmp:
        for k, b in blobs.items():
            (tmp / k).parent.mkdir(parents=True, exist_ok=True)
            (tmp / k).write_bytes(b)
        (tmp / "members").mkdir()
        for r in results:
            (tmp / r["entry"]["file"]).write_bytes(r["onnx"])
        manifest = {"zoo": zoo, "seed": seed, "count": count, "members": [r["entry"] for r in results]}
        (tmp / "zoo.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return {"zoo": zoo, "count": count, "wall_seconds": wall,
            "train_seconds": round(sum(r["train_seconds"] for r in results), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", choices=("digits", "tomita"), help="which zoo to build")
    ap.add_argument("--count", type=int, default=500, help="members (default 500, the full zoo)")
    ap.add_argument("--out", type=Path, help="zoo directory to write (atomic)")
    ap.add_argument("--seed", type=int, default=0, help="zoo seed (default 0)")
    ap.add_argument("--force", action="store_true", help="replace an existing zoo directory")
    ap.add_argument("--ray", action="store_true", help="train members as Ray tasks (local ray.init())")
    ap.add_argument("--address", default=None, help="Ray cluster address (implies --ray)")
    ap.add_argument("--sample", action="store_true",
                    help="build the committed sample: 40 members per zoo in fixtures/zoo/{digits,tomita}")
    a = ap.parse_args(argv)
    if a.sample:
        for z in ("digits", "tomita"):
            r = build(z, 40, ROOT / "fixtures" / "zoo" / z, seed=0, ray=a.ray or bool(a.address),
                      address=a.address, force=True)
            print(json.dumps(r))
        return 0
    if not a.zoo or not a.out:
        ap.error("--zoo and --out are required (or --sample)")
    r = build(a.zoo, a.count, a.out, a.seed, ray=a.ray or bool(a.address), address=a.address, force=a.force)
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
