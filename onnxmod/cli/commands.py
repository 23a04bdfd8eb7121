"""The subcommands, in the order ``onnxmod --help`` lists them. Adding one is a class in its own
file (``cli.base.Command``) and one entry here."""
from __future__ import annotations

from .base import Command
from .compose import Compose, Replace, Split
from .decompose import Decompose
from .evaluate import Evaluate
from .fingerprint import Fingerprint
from .inspect import Inspect
from .zoo import Zoo

COMMANDS: tuple[Command, ...] = (
    Inspect(),
    Decompose(),
    Compose(),
    Replace(),
    Split(),
    Evaluate(),
    Fingerprint(),
    Zoo(),
)
