"""Argument groups shared by the subcommands (Polygraphy's ``BaseArgs``): each adds its options to a
parser (``add_to``) and turns the parsed values into what the API takes (``parse``: a dict of
``onnxmod.api`` keywords, or the configuration object). A command adds the groups it needs, in
the order its ``--help`` lists them, and passes their ``parse`` results to its API twin."""
from __future__ import annotations

import abc
import argparse

from .. import api
from ..classes import parse as parse_classes
from ..concern import ConcernConfig
from ..io import keys
from ..sampling import SamplingConfig
from .base import CliUsage


class ArgGroup(abc.ABC):
    """A group of options: ``add_to(parser)`` adds them; ``parse(args)`` reads them back as API input."""

    @abc.abstractmethod
    def add_to(self, p: argparse.ArgumentParser) -> None:
        """Add the group's options to ``p``."""

    @abc.abstractmethod
    def parse(self, args: argparse.Namespace):
        """The parsed options as what the API takes (keywords or a configuration object)."""


class JsonArgs(ArgGroup):
    """``--json``: print the result as JSON instead of a table."""

    def __init__(self, help: str = "print the result as JSON on stdout (no table, no progress bars)"):
        self.help = help

    def add_to(self, p):
        p.add_argument("--json", action="store_true", help=self.help)

    def parse(self, args) -> bool:
        return bool(args.json)


class MessageArgs(ArgGroup):
    """``-v``/``-q`` (group "messages"), on the top-level parser and on every subcommand. A
    subcommand's copy has no default, so ``onnxmod -v decompose ...`` keeps the top-level value."""

    def __init__(self, top: bool = False):
        self.top = top

    def add_to(self, p):
        g = p.add_argument_group("messages")
        d = {} if self.top else {"default": argparse.SUPPRESS}
        g.add_argument("-v", "--verbose", action="count", help="more messages on stderr: -v steps and timings "
                       "(INFO), -vv details (DEBUG)", **({"default": 0} if self.top else d))
        g.add_argument("-q", "--quiet", action="store_true", help="errors only: no warnings, no progress bars",
                       **({"default": False} if self.top else d))

    def parse(self, args) -> dict:
        return {"verbose": args.verbose, "quiet": args.quiet}


class RuntimeArgs(ArgGroup):
    """``--threads`` (group "runtime"): onnxruntime's intra-op threads."""

    def add_to(self, p):
        g = p.add_argument_group("runtime")
        g.add_argument("--threads", type=int, default=None, metavar="N",
                       help="onnxruntime intra-op threads (default: all cores)")

    def parse(self, args) -> dict:
        return {"threads": args.threads}


class OutputArgs(ArgGroup):
    """``--out`` and ``--force`` (group "output"): where the result goes, and whether it may replace
    an earlier one."""

    def __init__(self, what: str, directory: bool = False):
        self.what, self.directory = what, directory

    def add_to(self, p):
        g = p.add_argument_group("output")
        g.add_argument("--out", required=True, metavar="DIR" if self.directory else "FILE", help=self.what)
        g.add_argument("--force", action="store_true",
                       help="replace an existing output" + (" directory" if self.directory else " file"))

    def parse(self, args) -> dict:
        return {"force": args.force}


class ParallelArgs(ArgGroup):
    """``--ray`` and ``--address``: the per-file jobs of fingerprint and zoo index, serial or on Ray."""

    def add_to(self, p):
        p.add_argument("--ray", action="store_true", help="run the per-file jobs as Ray tasks on a local ray.init() "
                       "(needs the [ray] extra; same results as the serial default)")
        p.add_argument("--address", default=None, help="Ray cluster address (implies --ray; default: none, serial)")

    def parse(self, args) -> dict:
        return {"ray": args.ray, "address": args.address}


class DataArgs(ArgGroup):
    """Group "your data" of decompose: where the labels come from, a CTC head's blank, which module
    files to write, which classes get modules."""

    def add_to(self, p):
        g = p.add_argument_group("your data")
        g.add_argument("--labels", choices=("data", "model"), default="data",
                       help="model: y_* are the model's own answers on x_* (the data then needs only x_train, "
                            "x_test); scores are agreement with the model")
        g.add_argument("--ctc-blank", type=int, default=None, metavar="INDEX",
                       help="the model's head is a CTC head with this blank class (default: the model's "
                            f"{keys.CTC_BLANK} metadata, if any): every module keeps the blank's logit, compositions "
                            "vote over it, and the guard, --max-loss and the report judge greedy-decoded strings")
        g.add_argument("--modules", default="auto", choices=("auto", "standalone", "none"),
                       help="standalone: write every module's file; none: only composed.onnx (onnxmod split writes "
                            "a module on request); auto: standalone unless the files would exceed 8x the model's "
                            "size and 256 MB")
        g.add_argument("--classes", default=None, metavar="A,B,...",
                       help="build modules only for these classes (comma-separated names or indices; negatives "
                            "still come from every class present); scored on their own test samples")

    def parse(self, args) -> dict:
        return {"labels": args.labels, "classes": parse_classes(args.classes), "ctc_blank": args.ctc_blank,
                "modules": args.modules}


class ConcernArgs(ArgGroup):
    """Groups "concern identification" and "validation" of decompose: the method's parameters, read
    back as ``api.decompose``'s ``mode``, ``seed``, ``monitor``, ``max_loss``, ``evaluate`` and its
    ``config`` (a ``ConcernConfig`` with its ``SamplingConfig``)."""

    def add_to(self, p):
        self._add_identification(p)
        self._add_validation(p)

    @staticmethod
    def _add_identification(p) -> None:
        d, s = ConcernConfig(), SamplingConfig()
        g = p.add_argument_group("concern identification (the method's parameters; see the README)")
        g.add_argument("--mode", choices=api.MODES, default="auto", help="rolled: one decision per layer; "
                       "unrolled: one per layer and timestep; auto: rolled for one-output models and "
                       "translators, unrolled for many-output models")
        g.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same files)")
        g.add_argument("--monitor", choices=api.MONITORS, default="hidden",
                       help="decide on hidden states h, or on each LSTM/GRU gate's own activation")
        g.add_argument("--positives", type=int, default=s.positives, metavar="N",
                       help="positive observations per class")
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
        g.add_argument("--tangling", action="store_true", help="ReLU layers: tangling identification (restore "
                       "units active on negatives)")
        g.add_argument("--tangling-rate", type=float, default=d.tangling_rate, metavar="RATE",
                       help="with --tangling: restore units active on at least this fraction of negatives")
        g.add_argument("--unrolled-semantics", choices=("output", "state"), default=d.unrolled,
                       help="unrolled mode: a unit outside step t's concern is cut from step t's outputs (output) "
                            "or has its state zeroed at step t (state)")
        g.add_argument("--compensate", action="store_true",
                       help="rolled mode: fold each removed unit's mean activation into its consumers' biases")

    @staticmethod
    def _add_validation(p) -> None:
        d = ConcernConfig()
        g = p.add_argument_group("validation (guard and size search)")
        g.add_argument("--guard", type=float, default=d.guard, metavar="POINTS",
                       help="back the removal cap off (cap, cap/2, 0) while the composition's validation accuracy "
                            "(translators: mean BLEU) is more than POINTS below the model's")
        g.add_argument("--no-guard", dest="guard", action="store_const", const=None,
                       help="apply the removal cap as is (no validation)")
        g.add_argument("--max-loss", type=float, default=None, metavar="POINTS",
                       help="smaller modules: per class, remove as many units, embedding rows and embedding "
                            "features as the validation split (x_val/y_val, else 10%% of x_train) allows while the "
                            "composition loses at most POINTS of accuracy (plus one standard error; searched on "
                            "one half of the split, certified on the other) and each module's ROC AUC at most "
                            "POINTS/100 (e.g. 1.0)")
        g.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                       help="skip scoring the model and the composition on the test split (decomposition only; "
                            "`onnxmod evaluate` scores the written files later)")

    def config(self, args) -> ConcernConfig:
        """The ``ConcernConfig`` the options describe."""
        return ConcernConfig(removal_cap=args.removal_cap, mad_cutoff=args.mad_cutoff, relu_rule=args.relu_rule,
                             relu_threshold=args.relu_threshold, tangling=args.tangling,
                             tangling_rate=args.tangling_rate, unrolled=args.unrolled_semantics,
                             compensate=args.compensate, guard=args.guard,
                             sampling=SamplingConfig(args.positives, args.negatives, args.max_sequences, args.seed))

    def parse(self, args) -> dict:
        return {"mode": args.mode, "seed": args.seed, "config": self.config(args), "monitor": args.monitor,
                "max_loss": args.max_loss, "evaluate": args.evaluate}


class ScopeArgs(ArgGroup):
    """Group "scope" of evaluate: which classes' samples are scored, against which labels, and a
    CTC head's blank."""

    def add_to(self, p):
        g = p.add_argument_group("scope")
        g.add_argument("--classes", default=None, metavar="NAMES",
                       help="score only the test samples of these classes (comma-separated names or indices; "
                            "default for a composition: the classes it covers)")
        g.add_argument("--all-classes", action="store_true",
                       help="score a subset composition on every class's samples")
        g.add_argument("--labels", default="data", metavar="data|model|MODEL.onnx",
                       help="the labels: the data's y_test; model: the evaluated model's own answers; or the "
                            "answers of MODEL.onnx (a composition against its source model): agreement, not "
                            "accuracy")
        g.add_argument("--ctc-blank", type=int, default=None, metavar="INDEX",
                       help="a model with a CTC head with this blank (modules and compositions remember theirs): "
                            "scored on greedy-decoded strings (string accuracy, character error rate)")

    def parse(self, args) -> dict:
        if args.classes is not None and args.all_classes:
            raise CliUsage(args._parser, "--classes and --all-classes exclude each other")
        classes = "all" if args.all_classes else parse_classes(args.classes)
        return {"classes": classes, "labels": args.labels, "ctc_blank": args.ctc_blank}


class ReportArgs(ArgGroup):
    """Group "output" of evaluate: an optional report file, and whether it may replace one."""

    def add_to(self, p):
        g = p.add_argument_group("output")
        g.add_argument("--report", default=None, metavar="FILE",
                       help="also write a report: FILE.html (self-contained, with a chart) "
                            "or FILE.md")
        g.add_argument("--force", action="store_true", help="replace an existing --report file")

    def parse(self, args) -> dict:
        return {"report": args.report, "force": args.force}
