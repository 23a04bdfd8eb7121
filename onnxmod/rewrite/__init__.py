"""Graph rewrite rules that turn the readouts other exporters write into forms ``Model`` follows.

``normalize(graph)`` applies every rule to a fixpoint and returns what it applied; ``why_not(graph)``
lists, read-only, the patterns a rule looked at and refused, each with its reason. One rule per
module; the registration order below is the order rules are tried.

=====================  ==========================================================================
rule                   what it rewrites (exporter)
=====================  ==========================================================================
dense_3d               ``Reshape(Y,[n,H])`` → ``MatMul`` → ``Reshape(Shape)``: one 3-D MatMul (tf2onnx Dense)
time_distributed       N per-step copies of one Dense → ``Concat``: one MatMul [+ Add] (TimeDistributed)
head_transpose         ``Transpose`` after the output layer moves in front of it (TimeDistributed)
direction_slice        ``Slice``/``Gather`` of one direction of a bidirectional op (tf2onnx Bidirectional)
reverse_sequence       full-length ``ReverseSequence`` → ``Slice`` step -1 (go_backwards)
reversed_input         forward op on a time-reversed input → ``direction="reverse"`` (go_backwards)
bidirectional_pair     a forward and a reverse op of one cell on one input → one bidirectional op (Bidirectional(GRU))
reshape_from_shape     ``Reshape`` target computed from ``Shape`` → constant with 0/-1 (torch dynamo)
=====================  ==========================================================================

Needing no rule (``Model`` follows them as exported; see tests/rewrite/test_already_followed.py):
``Gather(-1)`` of the last step on either axis, a trailing ``Softmax``/``LogSoftmax``, and weights
reached through ``Identity``/``Cast`` (graphsurgeon's constant folding makes them initializers).
"""
from __future__ import annotations

from .base import RULES, Applied, Match, NoMatch, Rule, normalize, why_not

# Registration order (rules first match, in this order, before later ones are tried).
from . import dense3d  # noqa: E402,F401  (before reshape_from_shape: it reads the Shape-computed target)
from . import time_distributed  # noqa: E402,F401
from . import head_transpose  # noqa: E402,F401
from . import direction_slice  # noqa: E402,F401
from . import reverse_sequence  # noqa: E402,F401
from . import reversed_input  # noqa: E402,F401
from . import bidirectional_pair  # noqa: E402,F401  (after reversed_input: it makes the reverse op)
from . import reshape_from_shape  # noqa: E402,F401

__all__ = ["RULES", "Applied", "Match", "NoMatch", "Rule", "normalize", "why_not"]
