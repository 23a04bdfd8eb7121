"""The cost of many classes: sampling and scoring against the number of classes present.

    python tools/bench_classes.py [--present 10 30 100 300 1000 3000 8210] [--width 8210] [--repeats 3]

A model's head may score 8,210 classes (an OCR model's characters) while its data holds a few
dozen. onnxmod's sampling and scoring cost time linear in the classes *present* and nothing for
the absent ones. This prints, side by side in one run (medians over ``--repeats``):

1. **sampling**, one-output (20,000 labelled rows) and many-output (2,000 sequences x 40 steps,
   rolled, and one step of unrolled mode), labels spread over P present classes of a head of
   ``--width`` classes: seconds per call, microseconds per class present, and the microseconds
   each class added since the row above costs (flat = linear; growing = quadratic);
2. the same for **sampling as it was before issue 21** (every pair of the head's classes; run
   for heads of P classes only, up to 800, and for comparison at P = 67 of the full width);
3. **identification** (sample, trace, score every unit for every class identified) on
   ``math_topics/lstm1`` with its head widened to ``--width`` classes and its training labels
   spread over P classes (a mechanics measurement: the labels are not the topics);
4. a decomposition of 67 present classes of the ``--width``-wide head (``--no-guard
   --no-evaluate``) next to the same data on a head of 67 classes: same kept units, and the time.

Writes ``out/bench_classes.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from onnxmod import api, sampling  # noqa: E402
from onnxmod.concern import ConcernConfig  # noqa: E402
from onnxmod.graph import Model  # noqa: E402
from onnxmod.io import Dataset  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from bench import median_time  # noqa: E402  (tools/bench.py: the same medians)

CFG = sampling.SamplingConfig()


def spread(present: int, width: int, shape, seed: int = 0) -> np.ndarray:
    """Labels over ``present`` classes spread across a head of ``width`` (every class occurs)."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(width, size=present, replace=False))
    n = int(np.prod(shape))
    picks = np.concatenate([np.arange(present), rng.integers(0, present, size=max(n - present, 0))])[:n]
    return ids[rng.permutation(picks)].reshape(shape)


# --- the sampling of onnxmod before issue 21 (every pair of the head's classes), for comparison ---
def _before_one_output(y, C):
    per = {c: sampling._draw(np.flatnonzero(y == c), CFG.positives, sampling._rng(CFG.seed, c)) for c in range(C)}
    k = math.ceil(CFG.negatives / max(C - 1, 1))
    return {c: (per[c], np.sort(np.concatenate([per[o][:k] for o in range(C) if o != c]))) for c in range(C)}


def _before_many_output(y, C, step=None):
    flat = y.ravel()
    valid = flat >= 0
    if step is not None:
        valid &= np.arange(flat.size) % y.shape[1] == step
    key = -1 if step is None else step
    pools = {c: np.flatnonzero(valid & (flat == c)) for c in range(C)}
    k = math.ceil(CFG.negatives / max(C - 1, 1))
    out = {}
    for c in range(C):
        neg = [sampling._draw(pools[o], k, sampling._rng(CFG.seed, c, key, o)) for o in range(C) if o != c]
        out[c] = (sampling._draw(pools[c], CFG.positives, sampling._rng(CFG.seed, c, key)), np.concatenate(neg))
    return out


def sampling_rows(presents, width, repeats):
    rows = []
    for P in presents:
        y1 = spread(P, width, (20000,))
        ym = spread(P, width, (2000, 40), seed=1)
        t1 = median_time(lambda y1=y1: sampling.observations_one_output(
            sampling.trace_rows_one_output(y1, width, CFG), CFG), repeats)
        tm = median_time(lambda ym=ym: sampling.observations_many_output(ym, width, CFG), repeats)
        tu = median_time(lambda ym=ym: sampling.observations_many_output(ym, width, CFG, step=7), repeats)
        rows.append({"present": P, "one_output_s": t1, "many_output_s": tm, "unrolled_step_s": tu})
    return rows


def before_rows(presents, repeats):
    rows = []
    for P in presents:
        y1 = spread(P, P, (20000,))
        ym = spread(P, P, (2000, 40), seed=1)
        rows.append({"present": P, "one_output_s": median_time(lambda y1=y1, P=P: _before_one_output(y1, P), repeats),
                     "many_output_s": median_time(lambda ym=ym, P=P: _before_many_output(ym, P), 1)})
    return rows


def identify_rows(presents, width, repeats, tmp: Path):
    from test_classes import wide_head

    model = Model.load(wide_head(ROOT / "fixtures/math_topics/lstm1.onnx", tmp / "wide.onnx", width))
    with np.load(ROOT / "fixtures/math_topics/data.npz") as z:
        x = z["x_train"]
    rows = []
    for P in presents:
        y = spread(P, width, (len(x),))
        data = Dataset("spread", x, y, x[:1], y[:1])
        t = median_time(lambda data=data: api.identify_concerns(model, data, "rolled", ConcernConfig(), False), repeats)
        rows.append({"present": P, "identify_s": t})
    return rows


def decompose_67(width, tmp: Path):
    """67 classes present: the wide head vs a head of exactly 67 classes (same data, same seed)."""
    import warnings

    from test_classes import wide_head

    narrow = wide_head(ROOT / "fixtures/math_topics/lstm1.onnx", tmp / "narrow.onnx", 67)
    wide = wide_head(ROOT / "fixtures/math_topics/lstm1.onnx", tmp / "wide67.onnx", width)
    with np.load(ROOT / "fixtures/math_topics/data.npz") as z:
        arrays = {k: z[k] for k in ("x_train", "x_test")}
    y = spread(67, 67, (len(arrays["x_train"]),), seed=5)
    np.savez(tmp / "d67.npz", **arrays, y_train=y, y_test=spread(67, 67, (len(arrays["x_test"]),), seed=6))
    out = {}
    for name, m in (("head of 67", narrow), (f"head of {width:,}", wide)):
        cfg = ConcernConfig(guard=None)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = api.decompose(m, tmp / "d67.npz", tmp / f"o{name[-3:]}", config=cfg, evaluate=False, force=True)
        out[name] = {"s": time.perf_counter() - t, "kept": [mm["kept_units"] for mm in r["modules"]],
                     "modules": len(r["modules"])}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--present", type=int, nargs="+", default=[10, 30, 100, 300, 1000, 3000, 8210])
    p.add_argument("--before", type=int, nargs="+", default=[10, 100, 200, 400, 800])
    p.add_argument("--identify", type=int, nargs="+", default=[10, 100, 1000, 8210])
    p.add_argument("--width", type=int, default=8210)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=str(ROOT / "out" / "bench_classes.json"))
    a = p.parse_args(argv)
    res = {}
    print(f"sampling, head of {a.width:,} classes (median of {a.repeats}); µs/class = s / P; added = µs per class "
          f"added since the row above (flat = linear, growing = quadratic)")
    res["sampling"] = sampling_rows(a.present, a.width, a.repeats)
    keys = ("one_output_s", "many_output_s", "unrolled_step_s")
    print(f"{'P present':>10}" + "".join(f" {k[:-2].replace('_', '-') + ' s':>16} {'µs/class':>9} {'added':>7}"
                                         for k in keys))
    prev = None
    for r in res["sampling"]:
        line = f"{r['present']:>10,}"
        for k in keys:
            added = "" if prev is None else f"{1e6 * (r[k] - prev[k]) / (r['present'] - prev['present']):.1f}"
            line += f" {r[k]:>16.4f} {1e6 * r[k] / r['present']:>9.1f} {added:>7}"
        print(line)
        prev = r
    print("\nsampling before issue 21 (every pair of the head's classes; head of P classes)")
    res["before"] = before_rows(a.before, a.repeats)
    print(f"{'P = head':>10} {'one-output s':>13} {'many-output s':>14} {'many-output ÷ now':>18}")
    now = {r["present"]: r for r in sampling_rows(a.before, a.width, 1)}
    for r in res["before"]:
        print(f"{r['present']:>10,} {r['one_output_s']:>13.4f} {r['many_output_s']:>14.4f} "
              f"{r['many_output_s'] / now[r['present']]['many_output_s']:>17.1f}x")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"\nidentification (sample + trace + score) on math_topics/lstm1 with a head of {a.width:,}, "
              f"labels spread over P classes")
        res["identify"] = identify_rows(a.identify, a.width, a.repeats, Path(tmp))
        print(f"{'P present':>10} {'s':>8} {'ms/class':>9} {'added':>7}")
        prev = None
        for r in res["identify"]:
            added = ("" if prev is None else
                     f"{1e3 * (r['identify_s'] - prev['identify_s']) / (r['present'] - prev['present']):.2f}")
            per_class_ms = 1e3 * r["identify_s"] / r["present"]
            print(f"{r['present']:>10,} {r['identify_s']:>8.2f} {per_class_ms:>9.2f} {added:>7}")
            prev = r
        res["decompose_67"] = decompose_67(a.width, Path(tmp))
        print("\n67 classes present, decompose --no-guard --no-evaluate")
        kept = [v["kept"] for v in res["decompose_67"].values()]
        for name, v in res["decompose_67"].items():
            print(f"  {name:>14}: {v['modules']} modules in {v['s']:.1f} s")
        print(f"  same kept units in every module: {all(k == kept[0] for k in kept)}")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
