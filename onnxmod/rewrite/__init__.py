"""Graph rewrite rules that turn the readouts other exporters write into forms ``Model`` follows.

``normalize(graph)`` applies every rule to a fixpoint and returns what it applied; ``why_not(graph)``
lists, read-only, the patterns a rule looked at and refused, each with its reason. One rule per
module; the registration order below is the order rules are tried.
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
from . import reshape_from_shape  # noqa: E402,F401

__all__ = ["RULES", "Applied", "Match", "NoMatch", "Rule", "normalize", "why_not"]
