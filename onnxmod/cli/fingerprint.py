"""``onnxmod fingerprint``: one row per file, outputs on seeded probes or weight statistics
(parsing and printing only; the work is in ``onnxmod.api`` and ``onnxmod.fingerprint``)."""
from __future__ import annotations

import json

from .. import api
from .. import progress as _progress
from ..fingerprint import KINDS
from .args import JsonArgs, ParallelArgs
from .base import Command


class Fingerprint(Command):
    """One row per file: outputs on seeded probes, or weight statistics.

    Functional fingerprints interrogate each file with the same seeded probes (drawn from real
    inputs with --probe-data); mechanistic ones read unit-permutation-invariant weight statistics."""

    name = "fingerprint"
    examples = """examples:
  onnxmod fingerprint fixtures/zoo/tomita/members/*.onnx --out out/fp.npz --probes 64
  onnxmod fingerprint out/m/modules/*.onnx --out out/fp-m.npz --probe-data fixtures/math_topics/data.npz"""

    def __init__(self):
        self.json = JsonArgs("print the summary as JSON")
        self.parallel = ParallelArgs()

    def add_arguments(self, p):
        p.add_argument("files", nargs="+", metavar="FILE.onnx", help="models, modules or compositions (same input)")
        p.add_argument("--out", required=True, help="output .npz (one row per file, in the order given)")
        p.add_argument("--kind", choices=KINDS, default="functional",
                       help="functional: outputs on probes (default); interactive: probes extended by the file's own "
                            "answers (token inputs); mechanistic: unit-permutation-invariant weight statistics")
        p.add_argument("--probes", type=int, default=256, help="number of probes (default 256)")
        p.add_argument("--probe-data", default=None, metavar="X.npz",
                       help="draw probes from this file's x_* arrays (default: none, drawn from the input signature)")
        p.add_argument("--chains", type=int, default=8, help="interactive: independent probe chains (default 8)")
        p.add_argument("--seed", type=int, default=0, help="probe seed (default 0)")
        p.add_argument("--force", action="store_true", help="replace an existing output file")
        self.json.add_to(p)
        self.parallel.add_to(p)

    def run(self, args):
        r = api.fingerprint(args.files, args.out, kind=args.kind, probes=args.probes, probe_data=args.probe_data,
                            seed=args.seed, chains=args.chains, force=args.force, progress=_progress.on(),
                            **self.parallel.parse(args))
        if self.json.parse(args):
            print(json.dumps(r, indent=2))
        else:
            print(f"wrote {r['output']}: {len(r['files'])} rows x {r['width']} ({r['kind']}, seed {r['seed']})")
        return 0
