"""The ``onnxmod`` command line: thin subcommands over ``onnxmod.api``.

Exit codes: 0 ok, 2 usage, 3 bad input, 4 unsupported model, 5 incompatible modules,
70 internal error, 130 interrupted (see ``onnxmod.errors``). Errors are one line on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import warnings

from . import __version__, api
from . import report as rep
from .concern import ConcernConfig
from .errors import EXIT_INTERNAL, Interrupted, OnnxmodError, UsageError
from .sampling import SamplingConfig


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other usage error
        raise UsageError(f"{self.prog}: {message}")


def _runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    g.add_argument("--json", action="store_true", help="print the result as JSON")


def _concern_args(p: argparse.ArgumentParser) -> None:
    d = ConcernConfig()
    s = SamplingConfig()
    g = p.add_argument_group("concern identification (SPEC §3; defaults are the reference's)")
    g.add_argument("--mode", choices=api.MODES, default="auto", help="rolled: one decision per layer; "
                   "unrolled: one per layer and timestep; auto (default): rolled for one-output models and "
                   "translators, unrolled for many-output models")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    g.add_argument("--monitor", choices=api.MONITORS, default="hidden",
                   help="decide on hidden states h (default) or on each LSTM/GRU gate's own activation")
    g.add_argument("--positives", type=int, default=s.positives, help=f"positive observations per class ({s.positives})")
    g.add_argument("--negatives", type=int, default=s.negatives,
                   help=f"negative observations per class, spread over the other classes ({s.negatives})")
    g.add_argument("--max-sequences", type=int, default=s.max_sequences,
                   help=f"many-output models: training sequences traced ({s.max_sequences})")
    g.add_argument("--removal-cap", type=float, default=d.removal_cap,
                   help=f"at most this fraction of a layer's units is removed ({d.removal_cap}; the paper says 0.2)")
    g.add_argument("--mad-cutoff", type=float, default=d.mad_cutoff, help=f"outlier cutoff in MADs ({d.mad_cutoff})")
    g.add_argument("--relu-rule", choices=("diff", "inactive"), default=d.relu_rule,
                   help="ReLU layers: remove when active-rate difference <= --relu-threshold (diff) or when "
                        "never active on positives (inactive)")
    g.add_argument("--relu-threshold", type=float, default=d.relu_threshold, help=f"({d.relu_threshold})")
    g.add_argument("--tangling", action="store_true", help="ReLU layers: tangling identification (restore units "
                   "active on negatives)")
    g.add_argument("--tangling-rate", type=float, default=d.tangling_rate, help=f"({d.tangling_rate})")
    g.add_argument("--unrolled-semantics", choices=("output", "state"), default=d.unrolled,
                   help="unrolled mode: a unit outside step t's concern is cut from step t's outputs (output, "
                        "default) or has its state zeroed at step t (state)")
    g.add_argument("--compensate", action="store_true",
                   help="rolled mode: fold each removed unit's mean activation into its consumers' biases")
    g.add_argument("--guard", type=float, default=d.guard, metavar="POINTS",
                   help=f"back the removal cap off (cap, cap/2, 0) while the composition's validation accuracy is "
                        f"more than POINTS below the model's ({d.guard}; --no-guard turns it off)")
    g.add_argument("--no-guard", dest="guard", action="store_const", const=None)
    g.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                   help="skip scoring the model and the composition on the test split (decomposition only; "
                        "`onnxmod evaluate` scores the written files later)")
    g.add_argument("--max-loss", type=float, default=None, metavar="POINTS",
                   help="smaller modules: per class, remove as many units, embedding rows and embedding features "
                        "as the validation split (x_val/y_val, else 10%% of x_train) allows while the composition "
                        "loses at most POINTS of accuracy (plus one standard error; searched on one half of the "
                        "split, certified on the other) and each module's ROC AUC at most POINTS/100 (e.g. 1.0)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="onnxmod", description="Decompose recurrent ONNX models into per-class modules and "
                "compose modules back.")
    p.add_argument("--version", action="version", version=f"onnxmod {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("inspect", help="recurrent ops, attributes and I/O shape of a model; identity of a module")
    s.add_argument("model")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("decompose", help="one module per class, their composition and a report")
    s.add_argument("model")
    s.add_argument("--data", required=True, help=".npz with x_train, y_train, x_test, y_test")
    s.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    s.add_argument("--force", action="store_true", help="replace an existing output directory")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    _concern_args(s)
    _runtime_args(s)

    s = sub.add_parser("compose", help="stitch modules into one voting ONNX graph")
    s.add_argument("modules", nargs="+")
    s.add_argument("--out", required=True)
    s.add_argument("--force", action="store_true")
    s.add_argument("--allow-mismatch", action="store_true",
                   help="compose modules whose input vocabularies/signatures differ (you know they agree)")
    s.add_argument("--prefer", action="append", default=[], metavar="MODULE",
                   help="when two modules serve one class, this one wins (repeatable)")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("replace", help="swap one class's module in a composition for another module")
    s.add_argument("composed")
    s.add_argument("--with", dest="module", required=True, help="the replacement module")
    s.add_argument("--class", dest="class_name", default=None,
                   help="the class (name or index) to replace (default: the replacement module's class)")
    s.add_argument("--out", required=True)
    s.add_argument("--force", action="store_true")
    s.add_argument("--allow-mismatch", action="store_true")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("evaluate", help="test accuracy of a model, composition or module")
    s.add_argument("model")
    s.add_argument("--data", required=True)
    _runtime_args(s)
    from . import cli_zoo  # fingerprint, zoo index|find (issue 16)
    cli_zoo.register(sub)
    return p


def _print_inspect(d: dict) -> None:
    if d["kind"] != "model":
        print(f"{d['source']}: onnxmod {d['kind']}, {d['parameters']:,} parameters")
        for k, v in d["metadata"].items():
            print(f"  {k}: {json.dumps(v) if not isinstance(v, str) else v}")
        return
    print(f"{d['source']}: {d['shape']} model, {d['num_classes']} classes, {d['parameters']:,} parameters")
    print(f"  input  {d['input']['name']} {d['input']['dtype']} {d['input']['shape']}")
    print(f"  output {d['output']['name']} {d['output']['dtype']} {d['output']['shape']}")
    for op in d["recurrent_ops"]:
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(op["attributes"].items()))
        print(f"  [{op['index']}] {op['op_type']} {op['name']!r}: hidden {op['hidden_size']} x {op['directions']} "
              f"dir, input {op['input_size']}, rule {op['rule']} ({attrs})")
    print(f"  head {d['head']['op_type']} {d['head']['name']!r}")


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "handler", None):  # subcommands registered by their own modules (cli_zoo)
        args.handler(args)
    elif args.command == "inspect":
        d = api.inspect(args.model)
        print(json.dumps(d, indent=2, default=str)) if args.json else _print_inspect(d)
    elif args.command == "decompose":
        cfg = ConcernConfig(removal_cap=args.removal_cap, mad_cutoff=args.mad_cutoff, relu_rule=args.relu_rule,
                            relu_threshold=args.relu_threshold, tangling=args.tangling,
                            tangling_rate=args.tangling_rate, unrolled=args.unrolled_semantics,
                            compensate=args.compensate, guard=args.guard,
                            sampling=SamplingConfig(args.positives, args.negatives, args.max_sequences, args.seed))
        r = api.decompose(args.model, args.data, args.out, mode=args.mode, seed=args.seed, config=cfg,
                          force=args.force, progress=False if args.quiet else None, threads=args.threads,
                          monitor=args.monitor, max_loss=args.max_loss, evaluate=args.evaluate)
        if args.json:
            print(rep.dumps(r), end="")
        else:
            print(rep.table(r))
            fused = "fused.onnx, " if (r.get("fused") or {}).get("file") else ""
            print(f"wrote {args.out}/ (modules/, composed.onnx, {fused}report.json, report.md)")
    elif args.command == "compose":
        r = api.compose(args.modules, args.out, force=args.force, allow_mismatch=args.allow_mismatch,
                        prefer=args.prefer)
        if args.json:
            print(json.dumps(r, indent=2, default=str))
        else:
            names = ", ".join(m["class_name"] for m in r["modules"])
            print(f"wrote {r['output']}: {len(r['modules'])} modules ({names}), {r['parameters']:,} parameters")
    elif args.command == "replace":
        r = api.replace(args.composed, args.module, args.out, class_name=args.class_name, force=args.force,
                        allow_mismatch=args.allow_mismatch)
        if args.json:
            print(json.dumps(r, indent=2, default=str))
        else:
            print(f"wrote {r['output']}: module of class {r['replaced']!r} replaced; "
                  f"{len(r['modules'])} modules, {r['parameters']:,} parameters")
    elif args.command == "evaluate":
        r = api.evaluate(args.model, args.data, threads=args.threads)
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            print(f"{r['model']} ({r['kind']}): accuracy {100 * r['accuracy']:.2f} % on {r['samples']} test samples")
            for c in r["per_class"]:
                if "bleu" in c:
                    b = "—" if c["bleu"] is None else f"{c['bleu']:.2f}"
                    print(f"  {c['class']:>3} {c['name']:<20} BLEU {b:>6}  (n={c['support']})")
                    continue
                a = "—" if c["accuracy"] is None else f"{100 * c['accuracy']:.2f}"
                print(f"  {c['class']:>3} {c['name']:<20} {a:>7} %  (n={c['support']})")
    return 0


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _on_signal(signum, frame):
    # One interruption is enough: ignore repeats so the clean-up now unwinding runs to its end.
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}; no partial output was kept")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"onnxmod: warning: {' '.join(str(message).split())}", file=sys.stderr)


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
            return run(argv)
    except OnnxmodError as exc:
        print(f"onnxmod: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Interrupted (SIGINT/SIGTERM) or a bare KeyboardInterrupt
        msg = str(exc) if isinstance(exc, Interrupted) else "interrupted by SIGINT; no partial output was kept"
        print(f"onnxmod: error: {msg}", file=sys.stderr)
        return Interrupted.exit_code
    except Exception as exc:  # a bug: still one line, distinct code
        msg = " ".join(str(exc).split())[:400]
        print(f"onnxmod: internal error: {type(exc).__name__}: {msg} (please report this)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
