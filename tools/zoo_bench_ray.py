"""Serial vs Ray: wall time of ``onnxmod zoo index`` and of a functional fingerprint over a zoo, and
whether both paths give byte-identical files (issue 16, acceptance 3). Needs the [ray] extra.

    python tools/zoo_bench_ray.py fixtures/zoo/digits [--address ADDR]

Ray's time includes starting the local Ray (``ray.init()``) and shutting it down, as a user
running ``onnxmod zoo index --ray`` would pay it.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxmod import api  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zoo", type=Path)
    ap.add_argument("--probes", type=int, default=256, help="probes (default 256)")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: local ray.init())")
    a = ap.parse_args(argv)
    members = sorted(str(p) for p in (a.zoo / "members").glob("*.onnx"))
    data = sorted(str(p) for p in (a.zoo / "data").glob("*.npz"))
    out = {}
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        for what in ("fingerprint", "index"):
            times = {}
            for mode in ("serial", "ray"):
                kw = {"ray": mode == "ray", "address": a.address if mode == "ray" else None}
                t0 = time.perf_counter()
                if what == "index":
                    api.zoo_index(a.zoo, t / f"index-{mode}", probes=a.probes, **kw)
                else:
                    api.fingerprint(members, t / f"fp-{mode}.npz", probes=a.probes, probe_data=data, **kw)
                times[mode] = time.perf_counter() - t0
            if what == "index":
                same = all((t / "index-serial" / f).read_bytes() == (t / "index-ray" / f).read_bytes()
                           for f in ("index.json", "fingerprints.npz"))
            else:
                same = (t / "fp-serial.npz").read_bytes() == (t / "fp-ray.npz").read_bytes()
            out[what] = {"members": len(members), "serial_s": round(times["serial"], 2),
                         "ray_s": round(times["ray"], 2), "serial_over_ray": round(times["serial"] / times["ray"], 3),
                         "byte_identical": same}
            print(f"{what:<12} {len(members)} members: serial {times['serial']:.1f} s, Ray {times['ray']:.1f} s, "
                  f"serial/Ray {times['serial'] / times['ray']:.2f}x, byte-identical: {same}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
