"""What the op table's rules share: how a rule declares the ops it follows and their category, and
small helpers on labels."""
from __future__ import annotations

import numpy as np

from ..engine import Widen


def rule(category: str, *ops: str):
    """Mark a rule function with the ops it follows and their category (``optable`` collects them)."""
    def mark(fn):
        fn.category, fn.ops = category, ops
        return fn
    return mark


def only_first(ins, what="a shape or an index"):
    """The unit-bearing first input; units anywhere else cannot be followed."""
    if any(u is not None for u in ins[1:]):
        raise Widen(f"it reads units as {what}")
    return ins[0]


def along(lab: np.ndarray, axis: int) -> np.ndarray:
    """The labels along ``axis`` (the first row when others vary)."""
    return np.moveaxis(lab, axis, -1).reshape(-1, lab.shape[axis])[0]
