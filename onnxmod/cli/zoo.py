"""``onnxmod zoo index|find``: indexing a directory of models into fingerprinted modules, and
ranking them for a class (parsing and printing only; the work is in ``onnxmod.api`` and
``onnxmod.zoo``)."""
from __future__ import annotations

import json

from .. import api
from .. import progress as _progress
from .args import JsonArgs, MessageArgs, ParallelArgs
from .base import Command


class ZooIndex:
    """``zoo index``: decompose and fingerprint every member of a zoo directory."""

    name = "index"
    help = "decompose and fingerprint every member of ZOO_DIR"

    def __init__(self):
        self.json = JsonArgs("print the summary as JSON")
        self.parallel = ParallelArgs()

    def add_arguments(self, s):
        s.add_argument("zoo_dir", metavar="ZOO_DIR", help="directory of members (tools/build_zoo.py)")
        s.add_argument("--out", required=True, metavar="INDEX", help="index directory to write (atomic)")
        s.add_argument("--probes", type=int, default=256, help="probes per module (default 256)")
        s.add_argument("--probe-data", default=None, metavar="X.npz",
                       help="draw probes from this file's x_* arrays (default: the zoo's data files)")
        s.add_argument("--seed", type=int, default=0, help="decomposition and probe seed (default 0)")
        s.add_argument("--force", action="store_true", help="replace an existing index")
        self.json.add_to(s)
        self.parallel.add_to(s)

    def run(self, args) -> None:
        r = api.zoo_index(args.zoo_dir, args.out, probes=args.probes, seed=args.seed, probe_data=args.probe_data,
                          force=args.force, progress=_progress.on(), **self.parallel.parse(args))
        if self.json.parse(args):
            print(json.dumps(r, indent=2))
        else:
            print(f"wrote {r['index']}: {r['modules']} modules from {r['indexed']} of {r['members']} members "
                  f"({len(r['skipped'])} skipped), {r['probes']} probes each")


class ZooFind:
    """``zoo find``: rank an index's modules for a class by label-free predicted quality."""

    name = "find"
    help = "rank the index's modules for a class by label-free predicted quality"

    def __init__(self):
        self.json = JsonArgs("print the ranking as JSON")

    def add_arguments(self, s):
        s.add_argument("--index", required=True, help="index directory (onnxmod zoo index)")
        s.add_argument("--class", dest="class_name", required=True, help="class name, e.g. 7")
        s.add_argument("--signature-of", required=True, metavar="FILE.onnx",
                       help="a model or module whose input signature and vocabulary the modules must share")
        s.add_argument("--top", type=int, default=5, help="how many to print (default 5)")
        s.add_argument("--task", default=None, help="only modules of members trained on this task (their zoo.task "
                       "metadata, e.g. tomita3; default: any task)")
        self.json.add_to(s)

    def run(self, args) -> None:
        r = api.zoo_find(args.index, args.class_name, args.signature_of, top=args.top, task=args.task)
        if self.json.parse(args):
            print(json.dumps(r["top"], indent=2))
            return
        print(f"class {r['class']}: {r['candidates']} compatible modules, best first "
              f"(score: z(agreement with the others) + z(decisiveness))")
        for m in r["top"]:
            print(f"  {m['rank']:>3}  {m['score']:+.3f}  {m['file']}  ({m['task']})")


class Zoo(Command):
    """Index a directory of models into fingerprinted modules; find modules for a class.

    ``zoo index`` decomposes every member and fingerprints its modules; ``zoo find`` ranks the
    compatible modules for a class by label-free predicted quality."""

    name = "zoo"
    examples = """examples:
  onnxmod zoo index fixtures/zoo/digits --out out/digits-index --probes 64
  onnxmod zoo find --index out/digits-index --class 7 --signature-of fixtures/zoo/digits/members/digits-0000.onnx"""

    subcommands = (ZooIndex(), ZooFind())  # in the order ``zoo --help`` lists them

    def add_arguments(self, z):
        zs = z.add_subparsers(dest="zoo_command", required=True, parser_class=type(z), metavar="ZOO_COMMAND",
                              title="zoo commands",
                              help="index: decompose and fingerprint every member; find: rank modules for a class")
        for sub in self.subcommands:
            s = zs.add_parser(sub.name, help=sub.help)
            sub.add_arguments(s)
            MessageArgs().add_to(s)
            s.set_defaults(_zoo=sub, _parser=s)

    def run(self, args) -> int:
        args._zoo.run(args)
        return 0
