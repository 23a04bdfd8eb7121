"""What every subcommand is made of: the ``Command`` class, the parser that turns argparse's exits
into onnxmod usage errors, and the help formatter (defaults shown, examples kept as written)."""
from __future__ import annotations

import abc
import argparse
import inspect

from ..errors import UsageError


class CliUsage(UsageError):
    """A command-line usage error: printed after the (sub)command's usage line."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 2 with the usage line and this (sub)command's name, one prefix
        raise CliUsage(self, message)


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every option's help; descriptions and examples keep their lines."""

    def _get_help_string(self, action):
        d = action.default
        if (d is None or d is argparse.SUPPRESS or d == [] or action.nargs == 0  # flags take no value
                or (action.required and action.option_strings)):
            return action.help  # nothing worth showing
        return super()._get_help_string(action)


class Command(abc.ABC):
    """A subcommand: ``name``; ``help`` (one line for ``onnxmod --help``: the class docstring's first
    line) and ``description`` (the whole docstring); ``examples`` the epilog; ``add_arguments``
    fills the subparser (its own arguments, then the shared groups of ``cli.args``); ``run`` parses
    the arguments into the API's keywords, calls ``onnxmod.api``, prints, and returns the exit code."""

    name = ""
    examples = ""

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.__doc__ or "")

    @property
    def help(self) -> str:
        doc = self.description
        return doc.splitlines()[0] if doc else self.name

    @abc.abstractmethod
    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        """Add this command's arguments to its subparser ``p``, in the order ``--help`` lists them."""

    @abc.abstractmethod
    def run(self, args: argparse.Namespace) -> int:
        """Do the command through ``onnxmod.api``; print; return the exit code."""
