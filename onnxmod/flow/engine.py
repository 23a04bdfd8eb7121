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
from .dims import Sizes, vector_length
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
        self.full_shapes: set[int] = set()  # Shape nodes that read their units at full width
        self.shape_reads: list = []  # (Shape/Size node, Units) of this pass
        self.auto_sizes: set = set()  # (id(Reshape/Expand), target position) whose size follows the units

    # ---- running ----------------------------------------------------------------------------
    def run(self, seeds: list[tuple[gs.Variable, Units]], until=()) -> list[Site]:
        """Follow the units from ``seeds``; not past the tensors in ``until`` (the logits, for classes).

        A ``Shape`` of a tensor that carries units gives the size of their axis, which removing
        units changes. Where that size goes only into reshape targets the flow follows (``auto``
        literals) it is exact; anywhere else (an ``Expand`` to it, ``ConstantOfShape``, arithmetic
        the flow does not read) the ``Shape`` reads the units at full width, and the flow runs again
        (each run can only add such ``Shape`` nodes, so it ends)."""
        while True:
            self._pass(seeds, until)
            escaped = self._escaped_sizes()
            if not escaped:
                return self.sites
            if self.classes:
                node = next(n for n, _ in self.shape_reads if id(n) in escaped)
                self.refuse(node, [u for n, u in self.shape_reads if n is node],
                            "their count is used after the output layer where onnxmod cannot follow it")
            self.full_shapes |= escaped

    def _pass(self, seeds, until) -> None:
        from .optable import rule_for

        self.units, self.sites, self.groups, self.outputs = {}, [], [], {}
        self.sizes = (Sizes(0), Sizes(1))
        self.shape_reads, self.auto_sizes = [], set()
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

    # ---- sizes of the units' axis read by Shape ---------------------------------------------
    def follows_size(self, shape_node, axis: int) -> bool:
        """Whether ``shape_node``'s element ``axis`` is the size of a units' axis that follows the
        units by itself (a reshape target built from it needs no rewrite): it reads them sliced."""
        u = self.units.get(id(shape_node.inputs[0]))
        return u is not None and u.axis == axis and id(shape_node) not in self.full_shapes

    def _escaped_sizes(self) -> set[int]:
        """The ``Shape``/``Size`` nodes read sliced whose size of the units' axis reaches anything but
        a reshape or expand target position the flow followed (``auto_sizes``)."""
        out = set()
        for node, u in self.shape_reads:
            if id(node) in self.full_shapes:
                continue
            if node.op == "Size":
                pos, length = {0}, 1
            else:
                dims = list(range(u.rank))[slice(node.attrs.get("start", 0), node.attrs.get("end"))]
                pos, length = {i for i, a in enumerate(dims) if a == u.axis}, len(dims)
            if pos and self._size_escapes(node.outputs[0], pos, length, node.op == "Size"):
                out.add(id(node))
        return out

    def _size_escapes(self, t, pos: set, length: int | None, scalar: bool, depth: int = 0) -> bool:
        """Whether positions ``pos`` of the 1-D int tensor ``t`` (a scalar: ``scalar``) reach a use
        other than a followed reshape or expand target."""
        if depth > 32 or t in self.graph.outputs:
            return True
        for c in t.outputs:
            for k, x in enumerate(c.inputs):
                if x is not t:
                    continue
                if c.op in ("Reshape", "Expand") and k == 1 and not scalar:
                    if any((id(c), p) not in self.auto_sizes for p in pos):
                        return True
                    continue
                nxt = _size_through(c, k, pos, length, scalar)
                if nxt is None:
                    return True
                npos, nlength, nscalar = nxt
                if npos and self._size_escapes(c.outputs[0], npos, nlength, nscalar, depth + 1):
                    return True
        return False

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


def _size_through(node, k: int, pos: set, length: int | None, scalar: bool):
    """Where positions ``pos`` of input ``k`` of a shape-arithmetic ``node`` go in its output:
    ``(positions, length, scalar)``, or None when the node computes with them (the size escapes)."""

    def const(i):
        return (np.asarray(node.inputs[i].values) if len(node.inputs) > i
                and isinstance(node.inputs[i], gs.Constant) else None)

    op = node.op
    if op in ("Identity", "Cast"):
        return pos, length, scalar
    if op == "Unsqueeze" and scalar:
        return {0}, 1, False
    if op == "Squeeze" and not scalar and length == 1:
        return {0}, 1, True
    if op == "Gather" and k == 0 and not scalar and int(node.attrs.get("axis", 0)) == 0:
        idx = const(1)
        if idx is None or (np.any(idx < 0) and length is None):
            return None
        flat = [int(i) % length if i < 0 else int(i) for i in idx.reshape(-1)]
        hit = {j for j, i in enumerate(flat) if i in pos}
        return (hit and {0} or set(), 1, True) if idx.ndim == 0 else (hit, len(flat), False)
    if op == "Slice" and k == 0 and not scalar and length is not None:
        starts, ends = const(1), const(2)
        axes, steps = const(3), const(4)
        if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3].name and axes is None) or \
                (len(node.inputs) > 4 and node.inputs[4].name and steps is None):
            return None
        if axes is not None and any(int(a) not in (0, -1) for a in axes.reshape(-1)):
            return None
        step = 1 if steps is None else int(steps.reshape(-1)[0])
        kept = list(range(length))[slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0]), step)]
        return {j for j, i in enumerate(kept) if i in pos}, len(kept), False
    if op == "Concat" and not scalar:
        offset = 0
        for i, x in enumerate(node.inputs):
            if i == k:
                break
            n = vector_length(x)
            if n is None:
                return None
            offset += n
        total = [vector_length(x) for x in node.inputs]
        return {offset + p for p in pos}, (sum(total) if None not in total else None), False
    return None
