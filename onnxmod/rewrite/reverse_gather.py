"""Rule: a ``Gather`` of every position of an axis in reverse order becomes a ``Slice`` with step -1.

Pattern (an exporter's ``x[:, ::-1]`` written as an index list)::

    Gather(x, [n-1, ..., 1, 0], axis=a)      with x.shape[a] == n (static), a not the last axis

Rewritten as ``Slice(x, -1, INT64_MIN, axes=[a], steps=[-1])``, the one spelling of a reversal
``reversed_input`` reads. Exact (a copy): the same elements in the same order.
"""
from __future__ import annotations

import numpy as np

from .base import Match, ReversesAnAxis, const


class ReverseGather(ReversesAnAxis):
    name = "reverse_gather"
    anchor = ("Gather",)

    def match(self, graph, node):
        x, idx = node.inputs[0], const(node.inputs[1])
        if idx is None or idx.ndim != 1 or idx.size < 2:
            return self.no(node, "its indices are not a constant list")
        if x.shape is None:
            return self.no(node, "the input's rank is unknown")
        a = int(node.attrs.get("axis", 0)) % len(x.shape)
        if a == len(x.shape) - 1:
            return self.no(node, "it gathers the last axis (features or units), not time")
        n = x.shape[a]
        if not isinstance(n, (int, np.integer)) or idx.size != n:
            return self.no(node, "the axis it gathers is not of a static length equal to the number of indices")
        if not np.array_equal(np.where(idx < 0, idx + n, idx), np.arange(n)[::-1]):
            return self.no(node, "its indices are not every position in reverse order")
        return Match(node, [node], {"axis": a})
