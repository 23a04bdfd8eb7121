#!/usr/bin/env python
"""Which maintained optimizer canonicalizes models best for onnxmod: measured side by side.

    python tools/canonical_compare.py                      # the fixtures' exporter and surround models
    python tools/canonical_compare.py MODEL.onnx ...       # any models (ddddocr's, say)

For each model and each candidate — none, onnxmod's canonicalization (onnxscript's optimizer and
onnx-ir passes, ``onnxmod/canonical.py``), onnxslim's ``slim`` — prints the node count, the ``Shape``
nodes left (reshape targets still computed at run time), the weight count (copies of one weight
made one), the seconds it took, and whether the result computes what the model computes (made-up
inputs, ``onnxmod.probe``; max |difference|). onnxslim is optional (``pip install onnxslim``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxmod import runtime  # noqa: E402
from onnxmod.canonical import canonicalize  # noqa: E402
from onnxmod.probe import _inputs  # noqa: E402


def _slim(proto):
    import onnxslim

    return onnxslim.slim(proto)


def _onnxmod(proto):
    out, why = canonicalize(proto)
    if why:
        raise RuntimeError(why)
    return out


CANDIDATES = {"none": lambda p: p, "onnxmod (onnxscript + onnx-ir)": _onnxmod, "onnxslim": _slim}


def _weights(p) -> int:
    return int(sum(int(np.prod(t.dims)) for t in p.graph.initializer))


def _run(proto, feeds):
    sess = runtime.session(proto)
    return sess.run(None, {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}})


def measure(path: Path) -> list[str]:
    proto = onnx.load(str(path))
    import onnx_graphsurgeon as gs

    feeds = None
    for size in (8, 16, 40, 64):
        try:
            g = gs.import_onnx(proto)
            feeds = _inputs(g, 2, size)
            ref = _run(proto, feeds)
            break
        except Exception:  # noqa: BLE001 - a size the model does not take: try the next
            feeds = None
    rows = []
    for name, fn in CANDIDATES.items():
        t0 = time.perf_counter()
        try:
            out = fn(proto)
        except Exception as exc:  # noqa: BLE001 - a candidate that fails is reported, not fatal
            rows.append(f"  {name:32s} failed: {' '.join(str(exc).split())[:100]}")
            continue
        dt = time.perf_counter() - t0
        diff = "n/a"
        if feeds is not None:
            try:
                got = _run(out, feeds)
                worst = max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
                            for a, b in zip(ref, got))
                diff = f"{worst:.2g}"
            except Exception as exc:  # noqa: BLE001
                diff = f"does not run ({' '.join(str(exc).split())[:60]})"
        nodes = len(out.graph.node)
        shapes = sum(n.op_type == "Shape" for n in out.graph.node)
        rows.append(f"  {name:32s} nodes {nodes:5d}  Shape {shapes:3d}  weights {_weights(out):>10,}  "
                    f"{dt:6.2f} s  max|diff| {diff}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", type=Path)
    a = ap.parse_args(argv)
    models = a.models or sorted([*ROOT.glob("fixtures/exporters/*/*.onnx"), *ROOT.glob("fixtures/surround/*/*.onnx")])
    for m in models:
        print(m.relative_to(ROOT) if m.is_relative_to(ROOT) else m)
        for row in measure(m):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
