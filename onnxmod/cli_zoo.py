"""``onnxmod fingerprint`` and ``onnxmod zoo index|find``: parsing and printing only (the work is in
``onnxmod.api``, ``onnxmod.fingerprint`` and ``onnxmod.zoo``). Registered as ``cli`` subcommands;
``-q`` (every subcommand has it) turns the progress bars off."""
from __future__ import annotations

import json

from . import api
from . import progress as _progress
from .cli import Command, _logging_args, register
from .fingerprint import KINDS


def _parallel_args(p) -> None:
    p.add_argument("--ray", action="store_true", help="run the per-file jobs as Ray tasks on a local ray.init() "
                   "(needs the [ray] extra; same results as the serial default)")
    p.add_argument("--address", default=None, help="Ray cluster address (implies --ray; default: none, serial)")


@register
class Fingerprint(Command):
    """One row per file: outputs on seeded probes, or weight statistics.

    Functional fingerprints interrogate each file with the same seeded probes (drawn from real
    inputs with --probe-data); mechanistic ones read unit-permutation-invariant weight statistics."""

    name = "fingerprint"
    examples = """examples:
  onnxmod fingerprint fixtures/zoo/tomita/members/*.onnx --out out/fp.npz --probes 64
  onnxmod fingerprint out/m/modules/*.onnx --out out/fp-m.npz --probe-data fixtures/math_topics/data.npz"""

    def add_arguments(self, s):
        s.add_argument("files", nargs="+", metavar="FILE.onnx", help="models, modules or compositions (same input)")
        s.add_argument("--out", required=True, help="output .npz (one row per file, in the order given)")
        s.add_argument("--kind", choices=KINDS, default="functional",
                       help="functional: outputs on probes (default); interactive: probes extended by the file's own "
                            "answers (token inputs); mechanistic: unit-permutation-invariant weight statistics")
        s.add_argument("--probes", type=int, default=256, help="number of probes (default 256)")
        s.add_argument("--probe-data", default=None, metavar="X.npz",
                       help="draw probes from this file's x_* arrays (default: none, drawn from the input signature)")
        s.add_argument("--chains", type=int, default=8, help="interactive: independent probe chains (default 8)")
        s.add_argument("--seed", type=int, default=0, help="probe seed (default 0)")
        s.add_argument("--force", action="store_true", help="replace an existing output file")
        s.add_argument("--json", action="store_true", help="print the summary as JSON")
        _parallel_args(s)

    def run(self, args) -> int:
        run_fingerprint(args)
        return 0


@register
class Zoo(Command):
    """Index a directory of models into fingerprinted modules; find modules for a class.

    ``zoo index`` decomposes every member and fingerprints its modules; ``zoo find`` ranks the
    compatible modules for a class by label-free predicted quality."""

    name = "zoo"
    examples = """examples:
  onnxmod zoo index fixtures/zoo/digits --out out/digits-index --probes 64
  onnxmod zoo find --index out/digits-index --class 7 --signature-of fixtures/zoo/digits/members/digits-0000.onnx"""

    def add_arguments(self, z):
        zs = z.add_subparsers(dest="zoo_command", required=True, parser_class=type(z), metavar="ZOO_COMMAND",
                              title="zoo commands",
                              help="index: decompose and fingerprint every member; find: rank modules for a class")
        s = zs.add_parser("index", help="decompose and fingerprint every member of ZOO_DIR")
        s.add_argument("zoo_dir", metavar="ZOO_DIR", help="directory of members (tools/build_zoo.py)")
        s.add_argument("--out", required=True, metavar="INDEX", help="index directory to write (atomic)")
        s.add_argument("--probes", type=int, default=256, help="probes per module (default 256)")
        s.add_argument("--probe-data", default=None, metavar="X.npz",
                       help="draw probes from this file's x_* arrays (default: the zoo's data files)")
        s.add_argument("--seed", type=int, default=0, help="decomposition and probe seed (default 0)")
        s.add_argument("--force", action="store_true", help="replace an existing index")
        s.add_argument("--json", action="store_true", help="print the summary as JSON")
        _parallel_args(s)
        _logging_args(s)
        s.set_defaults(handler=run_zoo_index, _parser=s)
        s = zs.add_parser("find", help="rank the index's modules for a class by label-free predicted quality")
        s.add_argument("--index", required=True, help="index directory (onnxmod zoo index)")
        s.add_argument("--class", dest="class_name", required=True, help="class name, e.g. 7")
        s.add_argument("--signature-of", required=True, metavar="FILE.onnx",
                       help="a model or module whose input signature and vocabulary the modules must share")
        s.add_argument("--top", type=int, default=5, help="how many to print (default 5)")
        s.add_argument("--task", default=None, help="only modules of members trained on this task (their zoo.task "
                       "metadata, e.g. tomita3; default: any task)")
        s.add_argument("--json", action="store_true", help="print the ranking as JSON")
        _logging_args(s)
        s.set_defaults(handler=run_zoo_find, _parser=s)

    def run(self, args) -> int:
        args.handler(args)
        return 0


def run_fingerprint(args) -> None:
    r = api.fingerprint(args.files, args.out, kind=args.kind, probes=args.probes, probe_data=args.probe_data,
                        seed=args.seed, chains=args.chains, force=args.force, ray=args.ray, address=args.address,
                        progress=_progress.on())
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"wrote {r['output']}: {len(r['files'])} rows x {r['width']} ({r['kind']}, seed {r['seed']})")


def run_zoo_index(args) -> None:
    r = api.zoo_index(args.zoo_dir, args.out, probes=args.probes, seed=args.seed, probe_data=args.probe_data,
                      force=args.force, ray=args.ray, address=args.address, progress=_progress.on())
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"wrote {r['index']}: {r['modules']} modules from {r['indexed']} of {r['members']} members "
              f"({len(r['skipped'])} skipped), {r['probes']} probes each")


def run_zoo_find(args) -> None:
    r = api.zoo_find(args.index, args.class_name, args.signature_of, top=args.top, task=args.task)
    if args.json:
        print(json.dumps(r["top"], indent=2))
        return
    print(f"class {r['class']}: {r['candidates']} compatible modules, best first (score: z(agreement with the others) + z(decisiveness))")
    for m in r["top"]:
        print(f"  {m['rank']:>3}  {m['score']:+.3f}  {m['file']}  ({m['task']})")
