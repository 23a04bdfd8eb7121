"""``onnxmod decompose``: one module per class, their composition, and the reports."""
from __future__ import annotations

import logging

from .. import api
from .. import progress as _progress
from .. import report as rep
from ..text import escape, printable
from .args import ConcernArgs, DataArgs, JsonArgs, OutputArgs, RuntimeArgs
from .base import Command

log = logging.getLogger("onnxmod")


class Decompose(Command):
    """One module per class, their composition, and reports (JSON, Markdown, HTML).

    Writes DIR/modules/<class>.onnx, DIR/composed.onnx (and DIR/fused.onnx when the modules allow
    it), DIR/report.json, DIR/report.md and DIR/report.html, all or nothing."""

    name = "decompose"
    examples = """examples:
  onnxmod decompose fixtures/math_topics/lstm1.onnx --data fixtures/math_topics/data.npz --out out/m
  onnxmod decompose fixtures/brown_pos/gru1.onnx --data fixtures/brown_pos/data.npz --out out/pos --mode unrolled
  onnxmod decompose fixtures/math_topics/gru2.onnx --data fixtures/math_topics/data.npz --out out/small --max-loss 1.0
  onnxmod decompose fixtures/ctc/crnn_batch_first.onnx --data fixtures/ctc/data.npz --out out/ocr --labels model --ctc-blank 0
  onnxmod decompose fixtures/math_topics/lstm1.onnx --data fixtures/math_topics/data.npz --out out/two --classes algebra,calculus"""  # noqa: E501  (examples print as written)

    def __init__(self):
        self.data = DataArgs()
        self.output = OutputArgs("output directory (must not exist unless --force)", directory=True)
        self.concern = ConcernArgs()
        self.runtime = RuntimeArgs()
        self.json = JsonArgs()

    def add_arguments(self, p):
        p.add_argument("model", metavar="MODEL", help="the trained recurrent model (.onnx)")
        p.add_argument("--data", required=True, metavar="NPZ",
                       help=".npz with x_train, y_train, x_test, y_test (see the README's data contract)")
        for group in (self.data, self.output, self.concern, self.runtime, self.json):
            group.add_to(p)

    def run(self, args):
        r = api.decompose(args.model, args.data, args.out, progress=_progress.on(), **self.concern.parse(args),
                          **self.output.parse(args), **self.runtime.parse(args), **self.data.parse(args))
        log.info("timings (s): %s", ", ".join(f"{k} {v:.2f}" for k, v in r["timings"].items()))
        if self.json.parse(args):
            print(rep.dumps(r), end="")
            return 0
        r = printable(r)
        print(rep.table(r))
        fused = "fused.onnx, " if (r.get("fused") or {}).get("file") else ""
        mods = "modules/, " if r.get("module_files", "standalone") == "standalone" else ""
        print(f"wrote {escape(args.out)}/ ({mods}composed.onnx, {fused}report.json, report.md, report.html)")
        return 0
