"""``onnxmod evaluate``: test-split scores of a model, composition or module."""
from __future__ import annotations

import json

from .. import api
from .. import report as rep
from ..text import printable
from .args import JsonArgs, ReportArgs, RuntimeArgs, ScopeArgs
from .base import Command


class Evaluate(Command):
    """Test-split scores of a model, composition or module, overall and per class.

    Classifiers: accuracy; taggers: token accuracy; translators: BLEU per language; a module:
    binary accuracy and ROC AUC of its dominant score. A composition of a subset of the classes
    is scored on the test samples of the classes it covers (said in the output; --all-classes
    scores it on every class)."""

    name = "evaluate"
    examples = """examples:
  onnxmod evaluate out/m/composed.onnx --data fixtures/math_topics/data.npz
  onnxmod evaluate out/pair.onnx --data fixtures/math_topics/data.npz --classes algebra,calculus
  onnxmod evaluate out/m/modules/algebra.onnx --data fixtures/math_topics/data.npz --report out/algebra.html"""

    def __init__(self):
        self.scope = ScopeArgs()
        self.report = ReportArgs()
        self.runtime = RuntimeArgs()
        self.json = JsonArgs()

    def add_arguments(self, p):
        p.add_argument("model", metavar="FILE", help="an ONNX model, module or composition")
        p.add_argument("--data", required=True, metavar="NPZ", help=".npz with x_test, y_test")
        for group in (self.scope, self.report, self.runtime, self.json):
            group.add_to(p)

    def run(self, args):
        r = api.evaluate(args.model, args.data, **self.scope.parse(args), **self.report.parse(args),
                         **self.runtime.parse(args))
        if self.json.parse(args):
            print(json.dumps(r, indent=2))
        else:
            print_evaluation(printable(r))
            if args.report:
                print(f"wrote {args.report}")
        return 0


def print_evaluation(r: dict) -> None:
    """The scores ``api.evaluate`` returns: the summary line, then one row per class."""
    from ..report_html import evaluation_summary

    print(evaluation_summary(r))
    if r.get("classes_note"):
        print(r["classes_note"])
    if not r["per_class"]:  # a CTC composition scored on its strings only
        return
    bleu = "bleu" in r
    metric = "BLEU" if bleu else f"{r.get('metric', 'accuracy')} %"
    rows = [("class", "language" if bleu else "name", metric, "sentences" if bleu else "samples")]
    for c in r["per_class"]:
        v = rep._bleu(c.get("bleu")) if bleu else rep._pct(c["accuracy"])
        rows.append((str(c["class"]), c["name"][:20], v, f"{c['support']:,}"))
    w = [max(len(x[i]) for x in rows) for i in range(4)]
    for x in rows:
        print("  " + "  ".join(c.ljust(w[i]) if i == 1 else c.rjust(w[i]) for i, c in enumerate(x)).rstrip())
