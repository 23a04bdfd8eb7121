"""Running a command line: the parser built from ``COMMANDS``, logging and progress bars set up
from ``-v``/``-q``, and ``main``, which turns every outcome into one of onnxmod's exit codes and
at most one ``onnxmod: error: ...`` line (signals, closed pipes and bugs included)."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import warnings

from .. import __version__
from .. import progress as _progress
from ..errors import EXIT_INTERNAL, EXIT_PIPE, Interrupted, OnnxmodError
from ..text import escape
from .args import MessageArgs
from .base import CliUsage, Formatter, Parser
from .commands import COMMANDS

log = logging.getLogger("onnxmod")


def build_parser() -> argparse.ArgumentParser:
    """The ``onnxmod`` parser: ``--version``, ``-v``/``-q``, and one subparser per entry of ``COMMANDS``."""
    p = Parser(prog="onnxmod", formatter_class=Formatter,
               description="Decompose recurrent ONNX models into per-class modules and compose modules back.",
               epilog="Run `onnxmod COMMAND --help` for a command's options and examples.")
    p.add_argument("--version", action="version", version=f"onnxmod {__version__}",
                   help="print the version and exit")
    MessageArgs(top=True).add_to(p)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND",
                           title="commands", help="the subcommand to run (each has --help)")
    for c in COMMANDS:
        s = sub.add_parser(c.name, help=c.help, description=c.description, epilog=c.examples or None,
                           formatter_class=Formatter)
        c.add_arguments(s)
        MessageArgs().add_to(s)
        s.set_defaults(_command=c, _parser=s)
    return p


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser.parse_args``, except that arguments no parser recognized are a usage error of the
    (sub)command they were given to: its usage line, then ``onnxmod SUBCOMMAND: error: ...``, as
    every other usage error (argparse reports them on the top-level parser, naming no subcommand).
    The innermost subparser reached sets ``_parser``."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        raise CliUsage(getattr(args, "_parser", parser), f"unrecognized arguments: {' '.join(extra)}")
    return args


def _configure_logging(verbose: int, quiet: bool) -> int:
    """The ``onnxmod`` logger at the level ``-v``/``-q`` ask for, one ``onnxmod: LEVEL: ...`` line per
    record on stderr; returns the level."""
    level = (logging.ERROR if quiet else logging.DEBUG if verbose >= 2 else logging.INFO if verbose
             else logging.WARNING)
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


def run(argv=None) -> int:
    """Parse ``argv`` and run its command, with logging and progress bars set from ``-v``/``-q``."""
    args = parse(build_parser(), argv)
    level = _configure_logging(**MessageArgs().parse(args))
    show = sys.stderr.isatty() and not getattr(args, "json", False) and level <= logging.WARNING
    log.debug("arguments: %s", {k: v for k, v in vars(args).items() if not k.startswith("_")})
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
    """The ``onnxmod`` command: run ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
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
    except CliUsage as exc:
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
