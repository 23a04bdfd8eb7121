"""``onnxmod compose``, ``replace`` and ``split``: building compositions from module files, swapping
one module, and taking one out."""
from __future__ import annotations

import json

from .. import api
from ..text import printable
from .args import JsonArgs, OutputArgs
from .base import Command


class Compose(Command):
    """Stitch modules into one voting ONNX graph.

    Modules must share the input signature and vocabulary fingerprint; two modules of one class
    need --prefer."""

    name = "compose"
    examples = """examples:
  onnxmod compose out/m/modules/algebra.onnx out/m/modules/calculus.onnx --out out/pair.onnx
  onnxmod compose out/m/modules/algebra.onnx out/small/modules/calculus.onnx --out out/mixed.onnx"""

    def __init__(self):
        self.output = OutputArgs("the composition to write (.onnx)")
        self.json = JsonArgs()

    def add_arguments(self, p):
        p.add_argument("modules", nargs="+", metavar="MODULE", help="module files (.onnx) written by decompose")
        self.output.add_to(p)
        g = p.add_argument_group("compatibility")
        g.add_argument("--allow-mismatch", action="store_true",
                       help="compose modules whose input vocabularies/signatures differ (you know they agree)")
        g.add_argument("--prefer", action="append", default=[], metavar="MODULE",
                       help="when two modules serve one class, this one wins (repeatable)")
        self.json.add_to(p)

    def run(self, args):
        r = api.compose(args.modules, args.out, allow_mismatch=args.allow_mismatch, prefer=args.prefer,
                        **self.output.parse(args))
        if self.json.parse(args):
            print(json.dumps(r, indent=2, default=str))
        else:
            r = printable(r)
            names = ", ".join(m["class_name"] for m in r["modules"])
            print(f"wrote {r['output']}: {len(r['modules'])} modules ({names}), {r['parameters']:,} parameters")
        return 0


class Replace(Command):
    """Swap one class's module in a composition for another module.

    Every other module keeps its place, names and weights."""

    name = "replace"
    examples = """examples:
  onnxmod replace out/pair.onnx --class calculus --with out/small/modules/calculus.onnx --out out/pair-fixed.onnx"""

    def __init__(self):
        self.output = OutputArgs("the new composition to write (.onnx)")
        self.json = JsonArgs()

    def add_arguments(self, p):
        p.add_argument("composed", metavar="COMPOSED", help="the composition (.onnx) to change")
        p.add_argument("--with", dest="module", required=True, metavar="MODULE", help="the replacement module")
        p.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                       help="the class (name or index) to replace (default: the replacement module's class)")
        self.output.add_to(p)
        g = p.add_argument_group("compatibility")
        g.add_argument("--allow-mismatch", action="store_true",
                       help="accept a module whose input vocabulary/signature differs (you know they agree)")
        self.json.add_to(p)

    def run(self, args):
        r = api.replace(args.composed, args.module, args.out, class_name=args.class_name,
                        allow_mismatch=args.allow_mismatch, **self.output.parse(args))
        if self.json.parse(args):
            print(json.dumps(r, indent=2, default=str))
        else:
            r = printable(r)
            print(f"wrote {r['output']}: module of class {r['replaced']!r} replaced; "
                  f"{len(r['modules'])} modules, {r['parameters']:,} parameters")
        return 0


class Split(Command):
    """Write one module of a composition as a standalone module file.

    A decomposition with --modules none (the default for big models) writes only composed.onnx;
    split writes any of its modules, with the same outputs as the standalone file."""

    name = "split"
    examples = """examples:
  onnxmod split out/m/composed.onnx --class algebra --out out/algebra.onnx
  onnxmod split out/ocr/composed.onnx --class 7 --out out/seven.onnx"""

    def __init__(self):
        self.output = OutputArgs("the module file to write (.onnx)")
        self.json = JsonArgs()

    def add_arguments(self, p):
        p.add_argument("composed", metavar="COMPOSED", help="a composition (.onnx), e.g. DIR/composed.onnx")
        p.add_argument("--class", dest="class_name", required=True, metavar="NAME",
                       help="the module's class (name, else index)")
        self.output.add_to(p)
        self.json.add_to(p)

    def run(self, args):
        r = api.split(args.composed, args.out, args.class_name, **self.output.parse(args))
        if self.json.parse(args):
            print(json.dumps(r, indent=2))
        else:
            r = printable(r)
            print(f"wrote {r['output']}: module of class {r['class_name']!r}, {r['parameters']:,} parameters")
        return 0
