"""The ``onnxmod`` command line: thin subcommands over ``onnxmod.api``.

Exit codes: 0 ok, 2 usage, 3 bad input, 4 unsupported model, 5 incompatible modules, 73 output
cannot be created, 70 internal error, 130 interrupted (see ``onnxmod.errors``). Errors are one
``onnxmod: error: ...`` line on stderr; usage errors print the subcommand's usage line, then
``onnxmod SUBCOMMAND: error: ...``. Warnings are one ``onnxmod: warning: ...`` line each.

The house: ``base`` (``Command``, the parser and help formatter), ``args`` (the shared argument
groups: each adds its options and ``parse``\\ s them into the API's keywords or configuration),
one file per command or small family of commands (``inspect``, ``decompose``, ``compose`` with
``replace`` and ``split``, ``evaluate``, ``fingerprint``, ``zoo``), ``commands`` (the explicit,
ordered ``COMMANDS`` tuple) and ``runner`` (``build_parser``, ``run``, ``main``).

Adding a subcommand is one small class in its own file and one entry in ``commands.COMMANDS``::

    class Hello(Command):
        '''One line for ``onnxmod --help``; the rest of the docstring is the description.'''
        name = "hello"
        examples = "examples:\\n  onnxmod hello fixtures/math_topics/lstm1.onnx"

        def __init__(self):
            self.json = JsonArgs()               # shared argument groups, from cli.args

        def add_arguments(self, p):
            p.add_argument("model", help="an ONNX model")
            self.json.add_to(p)

        def run(self, args) -> int:
            r = api.hello(args.model)            # the API twin does the work
            print(json.dumps(r) if self.json.parse(args) else f"hello {r}")
            return 0

Every option needs a ``help`` (a test iterates the parsers); defaults are appended by the help
formatter. ``-v``/``-q`` and progress bars come with every subcommand: ``run`` is called inside
``progress.shown(...)``, on when stderr is a terminal and neither ``--json`` nor ``--quiet`` is given.
"""
from __future__ import annotations

from .base import Command
from .commands import COMMANDS
from .runner import _configure_logging, build_parser, main, parse, run

__all__ = ["COMMANDS", "Command", "_configure_logging", "build_parser", "main", "parse", "run"]
