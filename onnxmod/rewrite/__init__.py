"""Graph rewrite rules that turn the readouts other exporters write into forms ``Model`` follows.

``normalize(graph)`` applies every rule to a fixpoint and returns what it applied; ``why_not(graph)``
lists, read-only, the patterns a rule looked at and refused, each with its reason. One rule per
module; ``RULES`` below lists them in the order they are tried (adding a rule is one file plus one line there).

======================  ==========================================================================
rule                    what it rewrites (exporter)
======================  ==========================================================================
dense_3d                ``Reshape(Y,[n,H])`` → ``MatMul`` → ``Reshape(Shape)``: one 3-D MatMul (tf2onnx Dense)
time_distributed        N per-step copies of one Dense → ``Concat``: one MatMul [+ Add] (TimeDistributed)
head_transpose          ``Transpose`` after the output layer moves in front of it (TimeDistributed)
rowwise_before_reshape  a softmax before a ``Reshape`` keeping the last axis moves after it (tf_keras)
direction_slice         ``Slice``/``Gather`` of one direction of a bidirectional op (tf2onnx Bidirectional)
reverse_sequence        full-length ``ReverseSequence`` → ``Slice`` step -1 (go_backwards)
reverse_gather          ``Gather`` of every index in reverse order → ``Slice`` step -1
reversed_input          forward op on a time-reversed (maybe then transposed) input → ``direction="reverse"``
bidirectional_pair      a forward and a reverse op of one cell on one input → one bidirectional op (Bidirectional(GRU))
reshape_from_shape      ``Reshape`` target computed from ``Shape`` → constant with 0/-1 (torch dynamo)
======================  ==========================================================================

Needing no rule (``Model`` follows them as exported; see tests/rewrite/test_already_followed.py):
``Gather(-1)`` of the last step on either axis, a trailing ``Softmax``/``LogSoftmax``, and weights
reached through ``Identity``/``Cast`` (graphsurgeon's constant folding makes them initializers).
"""
from __future__ import annotations

from .base import Applied, Match, NoMatch, Rule, apply_rules, refusals
from .bidirectional_pair import BidirectionalPair
from .dense3d import Dense3D
from .direction_slice import DirectionSlice
from .head_transpose import HeadTranspose
from .reshape_from_shape import ReshapeFromShape
from .reverse_gather import ReverseGather
from .reverse_sequence import ReverseSequence
from .reversed_input import ReversedInput
from .rowwise_before_reshape import RowwiseBeforeReshape
from .time_distributed import TimeDistributed

# The order rules are tried in (the first rule that matches anywhere is applied, then all start over).
RULES: tuple[Rule, ...] = (
    Dense3D(),  # before reshape_from_shape: it reads the Shape-computed target
    TimeDistributed(),
    HeadTranspose(),
    RowwiseBeforeReshape(),
    DirectionSlice(),
    ReverseSequence(),
    ReverseGather(),
    ReversedInput(),
    BidirectionalPair(),  # after reversed_input: it makes the reverse op
    ReshapeFromShape(),
)


def normalize(graph, rules: tuple[Rule, ...] | None = None, max_steps: int = 10_000) -> list[Applied]:
    """Apply ``rules`` (default: ``RULES``, read when called) to a fixpoint, in place; return what was
    applied, in order."""
    return apply_rules(graph, RULES if rules is None else rules, max_steps)


def why_not(graph, rules: tuple[Rule, ...] | None = None) -> list[NoMatch]:
    """Every anchor a rule (default: ``RULES``) looked at and refused, with the reason (read-only)."""
    return refusals(graph, RULES if rules is None else rules)


__all__ = ["RULES", "Applied", "Match", "NoMatch", "Rule", "normalize", "why_not"]
