"""The unit flow's engine: one pass over the graph in topological order, from the tensors that
carry units (the *seeds*: every recurrence's outputs, the embedding's features, or the head's
classes), applying each op's rule from the op table (``optable``) to what its inputs carry.

Each rule returns what the op's outputs carry, records *sites* (``sites.Site``) where removing
units rewrites something, or says it cannot follow the units exactly (``Widen``): the engine then
re-widens the op's unit-bearing inputs (a ``widen`` site) and the op reads them at full width,
removed units holding exactly what they hold in the model with those units at 0. Nothing is
guessed: what the flow follows is exact, and what it does not follow runs as the model runs it.
``Refuse`` is for what cannot be made exact either way; the error names the node and the units.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UnsupportedModelError
from .dims import Sizes
from .sites import Site
from .units import Units, unit_vector


class Widen(Exception):
    """A rule cannot follow the units through its op exactly: the op reads them at full width."""


class Refuse(Exception):
    """Neither following nor re-widening is exact here."""


class Flow:
    """One run of the unit flow.

    ``readers``: ``{id(node): recurrence}`` for the nodes that are recurrences (they read units as
    their input or initial state). ``what(ids)``: how refusals name the units (``"hidden units of
    'LSTM_79'"``). ``classes``: following a head's classes to the output (no re-widening there: what
    mixes classes after the output layer is refused). ``row_class(id)``: the (recurrence, direction)
    a unit belongs to, to keep row widths equal where rows of different recurrences are stacked."""

    def __init__(self, graph: gs.Graph, source: str, readers: dict, what: Callable, classes: bool = False,
                 row_class: Callable | None = None, probe: Callable | None = None):
        self.graph, self.source, self.readers, self.what = graph, source, readers, what
        self.classes = classes
        self.row_class = row_class or (lambda i: 0)
        self.units: dict[int, Units] = {}
        self.sites: list[Site] = []
        self.groups: list[set] = []  # recurrences whose widths must be equal (stacked along a row axis)
        self.outputs: dict[int, Units] = {}  # graph outputs reached: id(tensor) -> what they carry
        self.sizes = (Sizes(0), Sizes(1))
        self.probe = probe  # names -> {name: (shape_a, shape_b)} from running the graph, or None

    # ---- running ----------------------------------------------------------------------------
    def run(self, seeds: list[tuple[gs.Variable, Units]], until=()) -> list[Site]:
        """Follow the units from ``seeds``; not past the tensors in ``until`` (the logits, for classes)."""
        from .optable import rule_for

        stop = {id(t) for t in until}
        seeded = set()
        for t, u in seeds:
            self.units[id(t)] = u
            seeded.add(id(t))
        self.graph.toposort()
        for node in list(self.graph.nodes):
            self._outer_reads(node)
            ins = [self.units.get(id(t)) if t is not None and id(t) not in stop else None for t in node.inputs]
            if not any(u is not None for u in ins):
                continue
            reader = self.readers.get(id(node))
            if reader is not None:
                self._reader(node, reader, ins)
                continue
            if node.outputs and all(id(o) in seeded for o in node.outputs):
                continue
            try:
                outs = rule_for(node)(self, node, ins)
            except Widen as why:
                outs = self.widen(node, ins, str(why))
            except Refuse as why:
                self.refuse(node, ins, str(why))
            except (ValueError, IndexError) as exc:  # a shape the rule's arithmetic cannot take
                outs = self.widen(node, ins, f"its shapes cannot be followed ({exc})")
            for o, u in zip(node.outputs, outs):
                if u is not None and id(o) not in seeded:
                    self.units[id(o)] = u
        for i, t in enumerate(self.graph.outputs):
            u = self.units.get(id(t))
            if u is not None and id(t) not in stop:
                self.outputs[id(t)] = u
                if not self.classes:
                    self.sites.append(Site("widen", None, i, u.axis, self.vector(u), units=u, tensor=t,
                                           why="a graph output"))
        return self.sites

    def _outer_reads(self, node) -> None:
        """A subgraph (an ``If`` branch, a loop body) that reads units from the outer graph by name
        reads them at full width (a recurrence a front-end runs as this node reads them itself)."""
        if id(node) in self.readers:
            return
        for attr in node.attrs.values():
            for g in (attr if isinstance(attr, list) else [attr]):
                if not isinstance(g, gs.Graph):
                    continue
                for inner in g.nodes:
                    for i, t in enumerate(inner.inputs):
                        u = self.units.get(id(t)) if t is not None else None
                        if u is not None:
                            self.widen_input(inner, i, u, f"{node.op} {node.name!r} reads them inside its "
                                                          f"{'branch' if node.op == 'If' else 'body'}")
                    self._outer_reads(inner)

    def _reader(self, node, rec, ins) -> None:
        for i, u in enumerate(ins):
            if u is None:
                continue
            t = node.inputs[i]
            role = rec.reads(node, t)
            if role == "x" and u.rank == 3 and u.axis == 2 and not u.rows():
                self.sites.append(Site("recurrent_input", node, 1, 2, u.lab.reshape(-1), recurrence=rec,
                                       null=None if u.null is None else u.null.reshape(-1)))
            elif role == "state" and u.rank == 3 and u.axis == 2 and u.lab.shape[1] == 1 and not u.has_null():
                self.sites.append(Site("state", node, rec.state_input_index(node, t), 2, u.lab.reshape(-1),
                                       recurrence=rec))
            else:
                self.widen_input(node, i, u, f"{rec.name!r} reads them as its {role or 'input'}")

    # ---- re-widening and refusing -----------------------------------------------------------
    def widen(self, node, ins, why: str) -> list:
        if self.classes:
            self.refuse(node, ins, f"after the output layer, {why}")
        for i, u in enumerate(ins):
            if u is not None:
                self.widen_input(node, i, u, why)
        return [None] * len(node.outputs)

    def widen_input(self, node, i: int, u: Units, why: str) -> None:
        if u.zero_point is not None:
            self.refuse(node, [u], f"{why}, and a quantized tensor cannot be put back to full width")
        if len(u.rows()) > 1:
            self.refuse(node, [u], f"{why}, and its units vary along more than one other axis")
        self.sites.append(Site("widen", node, i, u.axis, self.vector(u), units=u, tensor=node.inputs[i], why=why))

    def refuse(self, node, ins, why: str):
        ids = np.concatenate([u.ids() for u in ins if u is not None]) if any(u is not None for u in ins) else []
        raise UnsupportedModelError(f"{self.source}: node {node.name!r} ({node.op}) consumes the "
                                    f"{self.what(np.asarray(ids, dtype=np.int64))}: {why}")

    # ---- helpers for the rules --------------------------------------------------------------
    @staticmethod
    def const(t) -> np.ndarray | None:
        return np.asarray(t.values) if isinstance(t, gs.Constant) else None

    @staticmethod
    def vector(u: Units) -> np.ndarray:
        v = unit_vector(u)
        return v if v is not None else np.moveaxis(u.lab, u.axis, -1).reshape(-1, u.size)[0]

    def rank(self, t) -> int | None:
        if isinstance(t, gs.Constant):
            return np.asarray(t.values).ndim
        if t.shape is not None:
            return len(t.shape)
        u = self.units.get(id(t))
        return None if u is None else u.rank

    def axes(self, node, index: int, rank: int, default=None) -> list[int] | None:
        """An op's ``axes`` (attribute, or input ``index`` when constant), normalized and sorted;
        ``default`` when it has none. Computed axes cannot be followed."""
        if "axes" in node.attrs:
            a = node.attrs["axes"]
        elif len(node.inputs) > index and node.inputs[index] is not None and node.inputs[index].name:
            a = self.const(node.inputs[index])
            if a is None:
                raise Widen("its axes are computed")
        else:
            return default
        return sorted(int(x) % rank for x in np.atleast_1d(a))

    def group(self, ids) -> None:
        """Units in ``ids`` sit on different rows of one tensor: their recurrences keep equal widths."""
        rows = {self.row_class(int(i)) for i in np.unique(ids) if i >= 0}
        if len(rows) > 1:
            self.groups.append(rows)

    def concrete(self, t, which: int) -> list[int] | None:
        return self.sizes[which].shape(t.shape) if t.shape is not None else None

    def probed(self, *tensors) -> list | None:
        """Each tensor's sizes in two runs of the graph (``[(shape_a, shape_b)]``), or None."""
        if self.probe is None:
            return None
        got = self.probe([t.name for t in tensors])
        return None if got is None else [got[t.name] for t in tensors]
