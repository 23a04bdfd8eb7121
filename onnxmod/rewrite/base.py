"""The rule machinery: a rule matches a pattern rooted at one node, checks it, and rewrites it.

A rule's ``match`` returns a ``Match`` (what the rewrite needs) or a ``NoMatch`` that says *why*
the pattern rooted at that node does not qualify (a reason and the node's name, as data), so
``why_not`` can tell a user which readout onnxmod saw and what stopped it. ``apply_rules``
applies rules to a fixpoint in a fixed order (rules in the order given, nodes in topological
order) and returns what it applied. Every rule is exact: the rewritten graph computes the same
outputs as the original for every input the original accepted.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.util.exception import OnnxGraphSurgeonException

from .. import optable
from ..ops import float_op_types, handler_for

INT64_MIN = np.iinfo(np.int64).min


@dataclass(frozen=True)
class NoMatch:
    """Why the pattern rooted at ``node`` does not qualify for ``rule``."""

    reason: str
    node: str
    rule: str = ""

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"{self.rule}: node {self.node!r}: {self.reason}"


@dataclass
class Match:
    node: gs.Node  # the anchor
    nodes: list[gs.Node]  # every node of the matched pattern (their names are reported)
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    """A rule applied: its name, the matched nodes' names and ``made``: (new node, node it replaces)
    for every recurrent op the rewrite made in place of a matched one (forms follow it)."""

    rule: str
    nodes: tuple[str, ...]
    made: tuple[tuple[str, str], ...] = ()


class Rule(ABC):
    """One rewrite. ``anchor`` lists the op types a pattern can be rooted at."""

    name: ClassVar[str] = ""
    anchor: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def match(self, graph: gs.Graph, node: gs.Node) -> Match | NoMatch:
        """What the rewrite needs (a ``Match``), or why the pattern rooted at ``node`` does not qualify."""

    @abstractmethod
    def rewrite(self, graph: gs.Graph, m: Match) -> dict[str, str] | None:
        """Rewrite the match in place; returns {new node's name: name of the matched recurrent op it
        replaces} when it makes recurrent ops (None otherwise)."""

    def no(self, node: gs.Node, reason: str) -> NoMatch:
        return NoMatch(reason, node.name, self.name)


def _first_match(graph: gs.Graph, rules) -> tuple[Rule, Match] | None:
    for rule in rules:
        for node in list(graph.nodes):
            if node.op in rule.anchor:
                m = rule.match(graph, node)
                if m:
                    return rule, m
    return None


def apply_rules(graph: gs.Graph, rules, max_steps: int = 10_000) -> list[Applied]:
    """Apply ``rules`` to a fixpoint, in place; return what was applied, in order."""
    applied: list[Applied] = []
    while True:
        hit = _first_match(graph, rules)
        if hit is None:
            return applied
        rule, m = hit
        names = tuple(n.name for n in m.nodes)
        made = rule.rewrite(graph, m) or {}
        applied.append(Applied(rule.name, names, tuple(made.items())))
        graph.cleanup().toposort()
        infer_shapes(graph)
        if len(applied) > max_steps:
            raise RuntimeError(f"rewrite rules did not reach a fixpoint after {max_steps} steps")


def refusals(graph: gs.Graph, rules) -> list[NoMatch]:
    """Every anchor one of ``rules`` looked at and refused, with the reason (read-only)."""
    out = []
    for rule in rules:
        for node in graph.nodes:
            if node.op in rule.anchor:
                m = rule.match(graph, node)
                if isinstance(m, NoMatch):
                    out.append(m)
    return out


# ---- helpers shared by the rules ----------------------------------------------------------------
RECURRENT_OPS = float_op_types()  # what the rules around a native recurrent op anchor on


def forward_handler(rule: Rule, node: gs.Node):
    """(the op's handler, None) when ``node`` is a forward native recurrent op, else (None, the
    rule's NoMatch saying it is not)."""
    h = handler_for(node.op)
    if h is None or h.direction(node) != "forward":
        return None, rule.no(node, "the op is not forward")
    return h, None


def const(t) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def producer(t) -> gs.Node | None:
    if t is None or isinstance(t, gs.Constant) or len(t.inputs) != 1:
        return None
    return t.inputs[0]


def opset(graph: gs.Graph) -> int:
    return int(getattr(graph, "opset", None) or 13)


def attr_axes(graph: gs.Graph, node: gs.Node, index: int = 1) -> list[int] | None:
    """The ``axes`` of Squeeze/Unsqueeze (attribute or constant input); None when not constant."""
    if "axes" in node.attrs:
        return [int(a) for a in np.atleast_1d(node.attrs["axes"])]
    if len(node.inputs) > index and node.inputs[index].name:
        v = const(node.inputs[index])
        return None if v is None else [int(a) for a in np.atleast_1d(v)]
    return []


def slice_params(node: gs.Node, rank: int | None):
    """(starts, ends, axes, steps) of a Slice as int lists, or None when not constant."""
    vals = []
    for i in (1, 2, 3, 4):
        if len(node.inputs) > i and node.inputs[i].name:
            v = const(node.inputs[i])
            if v is None:
                return None
            vals.append([int(x) for x in np.atleast_1d(v)])
        else:
            vals.append(None)
    starts, ends, axes, steps = vals
    if starts is None or ends is None:
        return None
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    if rank is not None:
        axes = [a % rank for a in axes]
    return starts, ends, axes, steps


def rowwise(node: gs.Node) -> dict | None:
    """The attributes to re-create ``node`` on a tensor of any rank, when it acts on each row of
    the last axis alone (an elementwise activation, or Softmax/LogSoftmax over the last axis);
    else None."""
    if optable.is_unary(node.op) and len(node.inputs) == 1:
        return dict(node.attrs)
    if node.op in ("Softmax", "LogSoftmax"):
        r = rank_of(node.inputs[0])
        axis = int(node.attrs.get("axis", -1))
        if r is not None and axis % r == r - 1:
            return {**node.attrs, "axis": -1}
    return None


def rank_of(t) -> int | None:
    return None if t.shape is None else len(t.shape)


class Namer:
    """Unique tensor/node names derived from a prefix."""

    def __init__(self, graph: gs.Graph, prefix: str):
        self.used = set(graph.tensors().keys()) | {n.name for n in graph.nodes}
        self.prefix = prefix

    def __call__(self, tag: str) -> str:
        base = f"{self.prefix}/{tag}"
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def take_over(t: gs.Variable, graph: gs.Graph, namer: Namer) -> None:
    """Detach ``t`` from its producer (which gets a fresh dead output) so a new node can produce it."""
    for p in list(t.inputs):
        for i, o in enumerate(p.outputs):
            if o is t:
                p.outputs[i] = gs.Variable(namer("dead"), dtype=t.dtype)


def add_node(graph: gs.Graph, namer: Namer, op: str, inputs, outputs=None, attrs=None, dtype=None,
             tag: str | None = None) -> gs.Variable:
    """Append a node; returns its (first) output, a new Variable unless ``outputs`` is given."""
    if outputs is None:
        outputs = [gs.Variable(namer((tag or op.lower()) + "_out"), dtype=dtype)]
    graph.nodes.append(gs.Node(op, namer(tag or op.lower()), attrs=attrs or {}, inputs=list(inputs),
                               outputs=list(outputs)))
    return outputs[0]


def unsqueeze(graph: gs.Graph, namer: Namer, x, axes: list[int], out=None, dtype=None) -> gs.Variable:
    if opset(graph) >= 13:
        return add_node(graph, namer, "Unsqueeze", [x, gs.Constant(namer("axes"), np.array(axes, np.int64))],
                        None if out is None else [out], dtype=dtype)
    return add_node(graph, namer, "Unsqueeze", [x], None if out is None else [out], {"axes": list(axes)}, dtype=dtype)


def reverse_axis(graph: gs.Graph, namer: Namer, x, axis: int, out=None, dtype=None) -> gs.Variable:
    """``x`` reversed along ``axis`` (a Slice with step -1 over the whole axis, any length)."""
    c = lambda tag, v: gs.Constant(namer(tag), np.array([v], np.int64))  # noqa: E731
    return add_node(graph, namer, "Slice", [x, c("starts", -1), c("ends", INT64_MIN), c("axes", axis), c("steps", -1)],
                    None if out is None else [out], dtype=dtype, tag="reverse")


class ReversesAnAxis(Rule):
    """A rule whose match says its node reverses one axis of its first input (``data["axis"]``):
    the rewrite is that reversal as a ``Slice`` with step -1, producing the node's output."""

    def rewrite(self, graph, m):
        node = m.node
        out = node.outputs[0]
        node.outputs.clear()
        reverse_axis(graph, Namer(graph, node.name), node.inputs[0], m.data["axis"], out=out)


def is_full_reverse(node: gs.Node) -> int | None:
    """The axis a Slice reverses entirely (step -1 from the last element past the first), else None."""
    if node.op != "Slice":
        return None
    p = slice_params(node, rank_of(node.inputs[0]))
    if p is None or len(p[2]) != 1 or p[3] != [-1] or p[0][0] != -1:
        return None
    dim = node.inputs[0].shape[p[2][0]] if node.inputs[0].shape is not None else None
    bound = -(dim + 1) if isinstance(dim, (int, np.integer)) else -(2 ** 62)
    return p[2][0] if p[1][0] <= bound else None


def infer_shapes(graph: gs.Graph) -> None:
    """Re-run ONNX shape inference and write the shapes onto the graph's own tensors (in place)."""
    g = graph.copy()
    keep = {t.name for t in list(g.inputs) + list(g.outputs)}
    for t in g.tensors().values():
        if isinstance(t, gs.Variable) and t.name not in keep:
            t.shape = None
    try:
        proto = gs.export_onnx(g, do_type_check=False)
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except (OnnxGraphSurgeonException, onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        return  # shapes stay as they were; rules needing them then do not match
    info = {vi.name: vi for vi in list(proto.graph.value_info) + list(proto.graph.output)}
    for name, t in graph.tensors().items():
        vi = info.get(name)
        if not isinstance(t, gs.Variable) or vi is None or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            t.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        if tt.elem_type and t.dtype is None:
            t.dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
