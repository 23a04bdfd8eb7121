"""The ``onnxmod`` command line: thin subcommands over ``onnxmod.api``.

Exit codes: 0 ok, 2 usage, 3 bad input, 4 unsupported model, 5 incompatible modules, 73 output
cannot be created, 70 internal error, 130 interrupted (see ``onnxmod.errors``). Errors are one
``onnxmod: error: ...`` line on stderr; usage errors print the subcommand's usage line, then
``onnxmod SUBCOMMAND: error: ...``. Warnings are one ``onnxmod: warning: ...`` line each.

Adding a subcommand is one small class and one registration::

    @register
    class Hello(Command):
        '''One line for ``onnxmod --help``; the rest of the docstring is the description.'''
        name = "hello"
        examples = "onnxmod hello fixtures/math_topics/lstm1.onnx"

        def add_arguments(self, p):
            p.add_argument("model", help="an ONNX model")
            json_arg(p)                  # shared argument groups: json_arg, runtime_args, output_args

        def run(self, args) -> int:
            r = api.hello(args.model)   # the API twin does the work
            print(json.dumps(r) if args.json else f"hello {r}")
            return 0

Every option needs a ``help`` (a test iterates the parsers); defaults are appended by the help
formatter. ``-v``/``-q`` and progress bars come with every subcommand: ``run`` is called inside
``progress.shown(...)``, on when stderr is a terminal and neither ``--json`` nor ``--quiet`` is given.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings

from . import __version__, api
from . import progress as _progress
from . import report as rep
from .concern import ConcernConfig
from .errors import EXIT_INTERNAL, EXIT_PIPE, Interrupted, OnnxmodError, UsageError
from .sampling import SamplingConfig
from .text import escape, printable

log = logging.getLogger("onnxmod")


class _Usage(UsageError):
    """A command-line usage error: printed after the (sub)command's usage line."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 2 with the usage line and this (sub)command's name, one prefix
        raise _Usage(self, message)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every option's help; descriptions and examples keep their lines."""

    def _get_help_string(self, action):
        d = action.default
        if (d is None or d is argparse.SUPPRESS or d == [] or action.nargs == 0  # flags take no value
                or (action.required and action.option_strings)):
            return action.help  # nothing worth showing
        return super()._get_help_string(action)


class Command:
    """A subcommand. ``name``; the class docstring's first line is the one-line help, the rest
    the description; ``examples`` the epilog; ``add_arguments`` fills the subparser; ``run``
    does the work through ``onnxmod.api`` and returns the exit code."""

    name = ""
    examples = ""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


COMMANDS: list[Command] = []


def register(cls):
    """Class decorator: add a subcommand (in the order of registration)."""
    COMMANDS.append(cls())
    return cls


# --- shared argument groups ---------------------------------------------------------------------

def json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print the result as JSON on stdout (no table, no progress bars)")


def runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="onnxruntime intra-op threads (default: all cores)")


def output_args(p: argparse.ArgumentParser, what: str, directory: bool = False) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, metavar="DIR" if directory else "FILE", help=what)
    g.add_argument("--force", action="store_true",
                   help="replace an existing output" + (" directory" if directory else " file"))


def _logging_args(p: argparse.ArgumentParser, top: bool = False) -> None:
    g = p.add_argument_group("messages")
    d = {} if top else {"default": argparse.SUPPRESS}
    g.add_argument("-v", "--verbose", action="count", help="more messages on stderr: -v steps and timings "
                   "(INFO), -vv details (DEBUG)", **({"default": 0} if top else d))
    g.add_argument("-q", "--quiet", action="store_true", help="errors only: no warnings, no progress bars",
                   **({"default": False} if top else d))


def _concern_args(p: argparse.ArgumentParser) -> None:
    d = ConcernConfig()
    s = SamplingConfig()
    g = p.add_argument_group("concern identification (the method's parameters; see the README)")
    g.add_argument("--mode", choices=api.MODES, default="auto", help="rolled: one decision per layer; "
                   "unrolled: one per layer and timestep; auto: rolled for one-output models and "
                   "translators, unrolled for many-output models")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same files)")
    g.add_argument("--monitor", choices=api.MONITORS, default="hidden",
                   help="decide on hidden states h, or on each LSTM/GRU gate's own activation")
    g.add_argument("--positives", type=int, default=s.positives, metavar="N", help="positive observations per class")
    g.add_argument("--negatives", type=int, default=s.negatives, metavar="N",
                   help="negative observations per class, spread over the other classes")
    g.add_argument("--max-sequences", type=int, default=s.max_sequences, metavar="N",
                   help="many-output models: training sequences traced")
    g.add_argument("--removal-cap", type=float, default=d.removal_cap, metavar="FRACTION",
                   help="at most this fraction of a layer's units is removed (the paper says 0.2)")
    g.add_argument("--mad-cutoff", type=float, default=d.mad_cutoff, metavar="MADS",
                   help="outlier cutoff in median absolute deviations")
    g.add_argument("--relu-rule", choices=("diff", "inactive"), default=d.relu_rule,
                   help="ReLU layers: remove when active-rate difference <= --relu-threshold (diff) or when "
                        "never active on positives (inactive)")
    g.add_argument("--relu-threshold", type=float, default=d.relu_threshold, metavar="RATE",
                   help="ReLU layers, rule diff: remove a unit whose active rate on positives minus negatives "
                        "is at most this")
    g.add_argument("--tangling", action="store_true", help="ReLU layers: tangling identification (restore units "
                   "active on negatives)")
    g.add_argument("--tangling-rate", type=float, default=d.tangling_rate, metavar="RATE",
                   help="with --tangling: restore units active on at least this fraction of negatives")
    g.add_argument("--unrolled-semantics", choices=("output", "state"), default=d.unrolled,
                   help="unrolled mode: a unit outside step t's concern is cut from step t's outputs (output) "
                        "or has its state zeroed at step t (state)")
    g.add_argument("--compensate", action="store_true",
                   help="rolled mode: fold each removed unit's mean activation into its consumers' biases")
    g = p.add_argument_group("validation (guard and size search)")
    g.add_argument("--guard", type=float, default=d.guard, metavar="POINTS",
                   help="back the removal cap off (cap, cap/2, 0) while the composition's validation accuracy "
                        "(translators: mean BLEU) is more than POINTS below the model's")
    g.add_argument("--no-guard", dest="guard", action="store_const", const=None,
                   help="apply the removal cap as is (no validation)")
    g.add_argument("--max-loss", type=float, default=None, metavar="POINTS",
                   help="smaller modules: per class, remove as many units, embedding rows and embedding features "
                        "as the validation split (x_val/y_val, else 10%% of x_train) allows while the composition "
                        "loses at most POINTS of accuracy (plus one standard error; searched on one half of the "
                        "split, certified on the other) and each module's ROC AUC at most POINTS/100 (e.g. 1.0)")
    g.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                   help="skip scoring the model and the composition on the test split (decomposition only; "
                        "`onnxmod evaluate` scores the written files later)")


def _your_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("your data")
    g.add_argument("--labels", choices=("data", "model"), default="data",
                   help="model: y_* are the model's own answers on x_* (the data then needs only x_train, x_test); "
                        "scores are agreement with the model")
    g.add_argument("--ctc-blank", type=int, default=None, metavar="INDEX",
                   help="the model's head is a CTC head with this blank class (default: the model's "
                        "onnxmod.ctc_blank metadata, if any): every module keeps the blank's logit, compositions "
                        "vote over it, and the guard, --max-loss and the report judge greedy-decoded strings")
    g.add_argument("--modules", default="auto", choices=("auto", "standalone", "none"),
                   help="standalone: write every module's file; none: only composed.onnx (onnxmod split writes a "
                        "module on request); auto: standalone unless the files would exceed 8x the model's size "
                        "and 256 MB")
    g.add_argument("--classes", default=None, metavar="A,B,...",
                   help="build modules only for these classes (comma-separated names or indices; negatives still "
                        "come from every class present); scored on their own test samples")


def _your_data_options(args) -> dict:
    """The API keywords of ``_your_data_args``."""
    from .classes import parse

    return {"labels": args.labels, "classes": parse(args.classes), "ctc_blank": args.ctc_blank,
            "modules": args.modules}


# --- subcommands --------------------------------------------------------------------------------

@register
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

    def add_arguments(self, p):
        p.add_argument("model", metavar="FILE", help="an ONNX model, module or composition")
        json_arg(p)

    def run(self, args):
        d = api.inspect(args.model)
        print(json.dumps(d, indent=2, default=str)) if args.json else print_inspect(printable(d))
        return 0


@register
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
  onnxmod decompose fixtures/math_topics/lstm1.onnx --data fixtures/math_topics/data.npz --out out/two --classes algebra,calculus"""

    def add_arguments(self, p):
        p.add_argument("model", metavar="MODEL", help="the trained recurrent model (.onnx)")
        p.add_argument("--data", required=True, metavar="NPZ",
                       help=".npz with x_train, y_train, x_test, y_test (see the README's data contract)")
        _your_data_args(p)
        output_args(p, "output directory (must not exist unless --force)", directory=True)
        _concern_args(p)
        runtime_args(p)
        json_arg(p)

    def run(self, args):
        cfg = ConcernConfig(removal_cap=args.removal_cap, mad_cutoff=args.mad_cutoff, relu_rule=args.relu_rule,
                            relu_threshold=args.relu_threshold, tangling=args.tangling,
                            tangling_rate=args.tangling_rate, unrolled=args.unrolled_semantics,
                            compensate=args.compensate, guard=args.guard,
                            sampling=SamplingConfig(args.positives, args.negatives, args.max_sequences, args.seed))
        r = api.decompose(args.model, args.data, args.out, mode=args.mode, seed=args.seed, config=cfg,
                          force=args.force, progress=_progress.on(), threads=args.threads,
                          monitor=args.monitor, max_loss=args.max_loss, evaluate=args.evaluate,
                          **_your_data_options(args))
        log.info("timings (s): %s", ", ".join(f"{k} {v:.2f}" for k, v in r["timings"].items()))
        if args.json:
            print(rep.dumps(r), end="")
        else:
            r = printable(r)
            print(rep.table(r))
            fused = "fused.onnx, " if (r.get("fused") or {}).get("file") else ""
            mods = "modules/, " if r.get("module_files", "standalone") == "standalone" else ""
            print(f"wrote {escape(args.out)}/ ({mods}composed.onnx, {fused}report.json, report.md, report.html)")
        return 0


@register
class Compose(Command):
    """Stitch modules into one voting ONNX graph.

    Modules must share the input signature and vocabulary fingerprint; two modules of one class
    need --prefer."""

    name = "compose"
    examples = """examples:
  onnxmod compose out/m/modules/algebra.onnx out/m/modules/calculus.onnx --out out/pair.onnx
  onnxmod compose out/m/modules/algebra.onnx out/small/modules/calculus.onnx --out out/mixed.onnx"""

    def add_arguments(self, p):
        p.add_argument("modules", nargs="+", metavar="MODULE", help="module files (.onnx) written by decompose")
        output_args(p, "the composition to write (.onnx)")
        g = p.add_argument_group("compatibility")
        g.add_argument("--allow-mismatch", action="store_true",
                       help="compose modules whose input vocabularies/signatures differ (you know they agree)")
        g.add_argument("--prefer", action="append", default=[], metavar="MODULE",
                       help="when two modules serve one class, this one wins (repeatable)")
        json_arg(p)

    def run(self, args):
        r = api.compose(args.modules, args.out, force=args.force, allow_mismatch=args.allow_mismatch,
                        prefer=args.prefer)
        if args.json:
            print(json.dumps(r, indent=2, default=str))
        else:
            r = printable(r)
            names = ", ".join(m["class_name"] for m in r["modules"])
            print(f"wrote {r['output']}: {len(r['modules'])} modules ({names}), {r['parameters']:,} parameters")
        return 0


@register
class Replace(Command):
    """Swap one class's module in a composition for another module.

    Every other module keeps its place, names and weights."""

    name = "replace"
    examples = """examples:
  onnxmod replace out/pair.onnx --class calculus --with out/small/modules/calculus.onnx --out out/pair-fixed.onnx"""

    def add_arguments(self, p):
        p.add_argument("composed", metavar="COMPOSED", help="the composition (.onnx) to change")
        p.add_argument("--with", dest="module", required=True, metavar="MODULE", help="the replacement module")
        p.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                       help="the class (name or index) to replace (default: the replacement module's class)")
        output_args(p, "the new composition to write (.onnx)")
        g = p.add_argument_group("compatibility")
        g.add_argument("--allow-mismatch", action="store_true",
                       help="accept a module whose input vocabulary/signature differs (you know they agree)")
        json_arg(p)

    def run(self, args):
        r = api.replace(args.composed, args.module, args.out, class_name=args.class_name, force=args.force,
                        allow_mismatch=args.allow_mismatch)
        if args.json:
            print(json.dumps(r, indent=2, default=str))
        else:
            r = printable(r)
            print(f"wrote {r['output']}: module of class {r['replaced']!r} replaced; "
                  f"{len(r['modules'])} modules, {r['parameters']:,} parameters")
        return 0


@register
class Split(Command):
    """Write one module of a composition as a standalone module file.

    A decomposition with --modules none (the default for big models) writes only composed.onnx;
    split writes any of its modules, with the same outputs as the standalone file."""

    name = "split"
    examples = """examples:
  onnxmod split out/m/composed.onnx --class algebra --out out/algebra.onnx
  onnxmod split out/ocr/composed.onnx --class 7 --out out/seven.onnx"""

    def add_arguments(self, p):
        p.add_argument("composed", metavar="COMPOSED", help="a composition (.onnx), e.g. DIR/composed.onnx")
        p.add_argument("--class", dest="class_name", required=True, metavar="NAME",
                       help="the module's class (name, else index)")
        output_args(p, "the module file to write (.onnx)")
        json_arg(p)

    def run(self, args):
        r = api.split(args.composed, args.out, args.class_name, force=args.force)
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            r = printable(r)
            print(f"wrote {r['output']}: module of class {r['class_name']!r}, {r['parameters']:,} parameters")
        return 0


@register
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

    def add_arguments(self, p):
        p.add_argument("model", metavar="FILE", help="an ONNX model, module or composition")
        p.add_argument("--data", required=True, metavar="NPZ", help=".npz with x_test, y_test")
        g = p.add_argument_group("scope")
        g.add_argument("--classes", default=None, metavar="NAMES",
                       help="score only the test samples of these classes (comma-separated names or indices; "
                            "default for a composition: the classes it covers)")
        g.add_argument("--all-classes", action="store_true",
                       help="score a subset composition on every class's samples")
        g.add_argument("--labels", default="data", metavar="data|model|MODEL.onnx",
                       help="the labels: the data's y_test; model: the evaluated model's own answers; or the "
                            "answers of MODEL.onnx (a composition against its source model): agreement, not accuracy")
        g.add_argument("--ctc-blank", type=int, default=None, metavar="INDEX",
                       help="a model with a CTC head with this blank (modules and compositions remember theirs): "
                            "scored on greedy-decoded strings (string accuracy, character error rate)")
        g = p.add_argument_group("output")
        g.add_argument("--report", default=None, metavar="FILE",
                       help="also write a report: FILE.html (self-contained, with a chart) "
                            "or FILE.md")
        g.add_argument("--force", action="store_true", help="replace an existing --report file")
        runtime_args(p)
        json_arg(p)

    def run(self, args):
        if args.classes is not None and args.all_classes:
            raise _Usage(self.parser, "--classes and --all-classes exclude each other")
        classes = "all" if args.all_classes else (
            None if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()])
        r = api.evaluate(args.model, args.data, threads=args.threads, classes=classes, report=args.report,
                         force=args.force, labels=args.labels, ctc_blank=args.ctc_blank)
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            print_evaluation(printable(r))
            if args.report:
                print(f"wrote {args.report}")
        return 0


# --- printing -----------------------------------------------------------------------------------

def print_evaluation(r: dict) -> None:
    from .report_html import evaluation_summary

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


def _units(kept: dict, units: dict | None) -> str:
    def one(name, k):
        k = f"{k:g}" if isinstance(k, (int, float)) else str(k)
        return f"{name} {k} of {units[name]}" if units and name in units else f"{name} {k}"
    return ", ".join(one(n, k) for n, k in kept.items())


def print_inspect(d: dict) -> None:
    if d["kind"] == "model":
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
        else:
            print(f"  decompose would refuse it: {d['decompose']['why_not']}")
        return
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


def _configure_logging(verbose: int, quiet: bool) -> int:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("onnxmod: %(levelname_lower)s: %(message)s"))
    handler.addFilter(_lower_level)
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    return level


def _lower_level(record) -> bool:
    record.levelname_lower = record.levelname.lower()
    return True


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="onnxmod", formatter_class=_Formatter,
                description="Decompose recurrent ONNX models into per-class modules and compose modules back.",
                epilog="Run `onnxmod COMMAND --help` for a command's options and examples.")
    p.add_argument("--version", action="version", version=f"onnxmod {__version__}",
                   help="print the version and exit")
    _logging_args(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                           title="commands", help="the subcommand to run (each has --help)")
    for c in COMMANDS:
        doc = inspect.cleandoc(c.__doc__ or "")
        s = sub.add_parser(c.name, help=doc.splitlines()[0] if doc else c.name, description=doc,
                           epilog=c.examples or None, formatter_class=_Formatter)
        c.parser = s
        c.add_arguments(s)
        _logging_args(s)
        s.set_defaults(_command=c, _parser=s)
    return p


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser.parse_args``, except that arguments no parser recognized are a usage error of the
    (sub)command they were given to: its usage line, then ``onnxmod SUBCOMMAND: error: ...``, as
    every other usage error (argparse reports them on the top-level parser, naming no subcommand).
    The innermost subparser reached sets ``_parser``."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        raise _Usage(getattr(args, "_parser", parser), f"unrecognized arguments: {' '.join(extra)}")
    return args


def run(argv=None) -> int:
    args = parse(build_parser(), argv)
    level = _configure_logging(args.verbose, args.quiet)
    show = sys.stderr.isatty() and not getattr(args, "json", False) and level <= logging.WARNING
    log.debug("arguments: %s", {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "handler"})
    t0 = time.perf_counter()
    with _progress.shown(show), warnings.catch_warnings():
        if args.quiet:
            warnings.simplefilter("ignore")
        code = args._command.run(args)
    log.info("%s finished in %.2f s", args.command, time.perf_counter() - t0)
    return code


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _on_signal(signum, frame):
    # One interruption is enough: ignore repeats so the clean-up now unwinding runs to its end.
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}; no partial output was kept")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"onnxmod: warning: {escape(' '.join(str(message).split()))}", file=sys.stderr)


def _quiet_libraries() -> None:
    """Library log lines would break the one-line contract: onnxruntime logs to stderr (also from the
    sessions graphsurgeon opens to fold constants) and graphsurgeon prints to stdout. Their failures
    still reach us as exceptions."""
    with contextlib.suppress(Exception):
        import onnxruntime

        onnxruntime.set_default_logger_severity(4)
    with contextlib.suppress(Exception):
        import onnx_graphsurgeon as gs

        gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.CRITICAL + 10


def main(argv=None) -> int:
    _quiet_libraries()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, _on_signal) for s in _SIGNALS}
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            # onnxmod's own warnings (e.g. a class skipped for lack of training samples) are part of
            # its output contract: shown even under PYTHONWARNINGS=ignore, once each.
            warnings.filterwarnings("always", module=r"onnxmod(\.|$)")
            code = run(argv)
            sys.stdout.flush()  # a closed pipe surfaces here, not at interpreter exit
            return code
    except _Usage as exc:
        sys.stderr.write(exc.parser.format_usage())
        print(f"{exc.parser.prog}: error: {escape(exc)}", file=sys.stderr)
        return exc.exit_code
    except OnnxmodError as exc:
        print(f"onnxmod: error: {escape(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Interrupted (SIGINT/SIGTERM) or a bare KeyboardInterrupt
        msg = str(exc) if isinstance(exc, Interrupted) else "interrupted by SIGINT; no partial output was kept"
        print(f"onnxmod: error: {escape(msg)}", file=sys.stderr)
        return Interrupted.exit_code
    except BrokenPipeError:  # the reader went away (`onnxmod evaluate ... | head -2`): stop quietly, as
        with contextlib.suppress(OSError, ValueError):  # Unix tools do (killed by SIGPIPE: 128 + 13)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except Exception as exc:  # a bug: still one line, distinct code
        msg = escape(" ".join(str(exc).split())[:400])
        print(f"onnxmod: internal error: {type(exc).__name__}: {msg} (please report this)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


from . import cli_zoo  # noqa: E402,F401  fingerprint, zoo index|find: registered by importing them

if __name__ == "__main__":
    sys.exit(main())

