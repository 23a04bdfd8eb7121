"""``onnxmod inspect``: what a file is (a model's recurrent ops and shape; a module's or
composition's identity)."""
from __future__ import annotations

import json

from .. import api
from ..text import printable
from .args import JsonArgs
from .base import Command


class Inspect(Command):
    """What a file is: a model's recurrent ops and I/O shape; a module's or composition's identity.

    Models: every recurrent op with its attributes and the detected shape. Modules: class, source
    model, kept/total units per layer, mode. Compositions: one line per module. --json prints the
    raw description (metadata included)."""

    name = "inspect"
    examples = """examples:
  onnxmod inspect fixtures/math_topics/lstm1.onnx
  onnxmod inspect out/m/modules/algebra.onnx
  onnxmod inspect out/m/composed.onnx --json"""

    def __init__(self):
        self.json = JsonArgs()

    def add_arguments(self, p):
        p.add_argument("model", metavar="FILE", help="an ONNX model, module or composition")
        self.json.add_to(p)

    def run(self, args):
        d = api.inspect(args.model)
        if self.json.parse(args):
            print(json.dumps(d, indent=2, default=str))
        else:
            print_inspect(printable(d))
        return 0


def _units(kept: dict, units: dict | None) -> str:
    def one(name, k):
        k = f"{k:g}" if isinstance(k, (int, float)) else str(k)
        return f"{name} {k} of {units[name]}" if units and name in units else f"{name} {k}"
    return ", ".join(one(n, k) for n, k in kept.items())


def print_inspect(d: dict) -> None:
    """The description ``api.inspect`` returns, as lines: a model's, else a module's or composition's."""
    if d["kind"] == "model":
        _print_model(d)
    else:
        _print_onnxmod_file(d)


def _print_model(d: dict) -> None:
    if d["decompose"]["ok"]:
        print(f"{d['source']}: {d['shape']} model, {d['num_classes']} classes, {d['parameters']:,} parameters")
        print(f"  input  {d['input']['name']} {d['input']['dtype']} {d['input']['shape']}")
        print(f"  output {d['output']['name']} {d['output']['dtype']} {d['output']['shape']}")
    else:  # readable, not decomposable: what it is, and why
        print(f"{d['source']}: model, {d['parameters']:,} parameters")
        for t in d["inputs"]:
            print(f"  input  {t['name']} {t['dtype']} {t['shape']}")
        for t in d["outputs"]:
            print(f"  output {t['name']} {t['dtype']} {t['shape']}")
    for op in d["recurrences"]:
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(op["attributes"].items()))
        print(f"  [{op.get('index', '-')}] {op['op_type']} {op['name']!r} ({op['form']}): hidden "
              f"{op.get('hidden_size', '?')} x {op.get('directions', '?')} dir, input {op.get('input_size')}, "
              f"rule {op.get('rule', '?')} ({attrs})")
    if d["decompose"]["ok"]:
        _print_decomposable(d)
    else:
        print(f"  decompose would refuse it: {d['decompose']['why_not']}")


def _print_decomposable(d: dict) -> None:
    front = d.get("front") or {}
    if front:
        ops = ", ".join(f"{n} {op}" for op, n in front.items())
        print(f"  before the first recurrence (kept whole by every module): {ops}")
    print(f"  head {d['head']['op_type']} {d['head']['name']!r} over {d['num_classes']:,} classes")
    for line in d.get("rewrites") or []:
        print(f"  rewritten: {line}")
    for line in d.get("full_width") or []:
        print(f"  read at full width: {line}")
    if d["decompose"].get("unrolled") not in (None, True):
        print(f"  rolled mode only: {d['decompose']['unrolled']}")


def _print_onnxmod_file(d: dict) -> None:
    print(f"{d['source']}: onnxmod {d['kind']}, {d['parameters']:,} parameters")
    for m in d.get("modules") or []:
        src = m.get("source_model") or "?"
        line = f"  {m.get('class_index', '?'):>3} {m.get('class_name', '?')}: from {src}"
        if m.get("mode"):
            line += f", {m['mode']}"
        if m.get("ctc_blank") is not None:
            line += f", CTC blank {m['ctc_blank']}"
        if m.get("kept_units"):
            line += f"; kept {_units(m['kept_units'], m.get('units'))}"
            if m.get("unrolled"):
                line += " (mean over steps)"
        print(line)
    if d.get("modules"):
        print("  (--json prints the full metadata)")
