"""The unit flow by axes: where every recurrence's units go in the whole graph, and what each op
does to them.

``units.Units`` says which axis of a tensor carries which units; ``optable`` is the one op table
(each op's category — layout, per-unit, linear, mixes, shape — and the rule that follows units
through it); ``engine.Flow`` runs the rules over the graph in topological order from the
recurrences' outputs and returns the *sites* (``sites.Site``) that removing units rewrites. Where
a rule cannot follow exactly, the flow re-widens: the op reads the units at full width, each
removed unit holding there exactly what it holds in the model with that unit at 0. So a module is
exact whatever surrounds the recurrence, and as small as the flow could follow.

Unit ids are global: recurrence ``k``'s unit ``d·H + j`` is ``offset[k] + d·H + j``, so one pass
follows every recurrence, and a tensor that stacks two layers' states (torch's ``h_n``) is followed
like any other.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedModelError
from .engine import Flow, Refuse, Widen
from .optable import CATEGORY, category
from .sites import EmbeddingFeatures, Site
from .units import Units

__all__ = ["CATEGORY", "EmbeddingFeatures", "Flow", "Refuse", "Site", "UnitFlow", "Units", "Widen", "category"]


class UnitFlow:
    """``Model``'s unit flow (a mixin: it reads ``self.graph``, ``self.source``, ``self.recurrent``,
    ``self._reader``)."""

    def _flow_units(self) -> None:
        """Follow every recurrence's units: ``self.sites``, ``self.width_groups``, and each
        recurrence's ``sites`` (the sites that index its units)."""
        self.unit_offsets, k = {}, 0
        for op in self.recurrent:
            self.unit_offsets[op.index] = k
            k += op.units
        seeds = []
        for op in self.recurrent:
            for t, lab in op.unit_outputs():
                lab = np.asarray(lab, dtype=np.int64)
                seeds.append((t, Units(np.where(lab >= 0, lab + self.unit_offsets[op.index], -1), lab.ndim - 1)))
        flow = Flow(self.graph, self.source, self._reader, self._what_units, row_class=self._row_class,
                    probe=self._probe_shapes)
        self.sites = flow.run(seeds)
        self.width_groups = [sorted(g) for g in flow.groups]
        for op in self.recurrent:
            lo, hi = self.unit_offsets[op.index], self.unit_offsets[op.index] + op.units
            op.sites = [s for s in self.sites if np.any((s.labels >= lo) & (s.labels < hi))]
            if not op.sites:
                raise UnsupportedModelError(
                    f"{self.source}: node {op.name!r} ({op.op_type}): its hidden states reach no layer")

    def _probe_shapes(self, names: list[str]) -> dict | None:
        """Sizes of ``names`` in two runs of the graph (cached on the model and its copies)."""
        from .. import probe

        missing = [n for n in names if ("shapes", n) not in self.probed]
        if missing:
            try:
                got = probe.shapes(self.graph, missing, self.opset)
            except probe.ProbeError:
                return None
            for n, v in got.items():
                self.probed["shapes", n] = v
        return {n: self.probed["shapes", n] for n in names}

    def recurrence_of(self, unit: int):
        """The recurrence that global unit id ``unit`` belongs to."""
        for op in self.recurrent:
            lo = self.unit_offsets[op.index]
            if lo <= unit < lo + op.units:
                return op
        return None

    def _row_class(self, unit: int):
        op = self.recurrence_of(unit)
        return (op.index, (unit - self.unit_offsets[op.index]) // op.hidden_size) if op is not None else None

    def _what_units(self, ids) -> str:
        names = []
        for u in np.unique(np.asarray(ids, dtype=np.int64)):
            op = self.recurrence_of(int(u))
            if op is not None and op.name not in names:
                names.append(op.name)
        if not names:
            names = [self.recurrent[0].name] if self.recurrent else ["?"]
        what = self.recurrent[0].what if self.recurrent else "hidden units"
        return f"{what} of " + " and ".join(repr(n) for n in names)

    def widened(self) -> list[str]:
        """Where the flow reads units at full width, and why (one line each)."""
        out = []
        for s in self.sites:
            if s.kind == "widen":
                where = f"node {s.node.name!r} ({s.node.op})" if s.node is not None else f"output {s.tensor.name!r}"
                out.append(f"{where}: {s.why}")
        return out
