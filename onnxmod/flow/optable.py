"""The op table: what every ONNX op does to the units it reads, and the rule that follows them.

Each op type is in one category (``CATEGORY``):

* ``layout`` — moves positions without computing (``Transpose``, ``Reshape``, ``Concat``, ``Slice``,
  ``Gather`` …): the units move with them; a size literal on the units' axis is a site;
* ``per-unit`` — computes each unit's positions on their own (element-wise ops with broadcasting,
  reductions, softmax and cumulative sums over other axes, pooling, ``BatchNormalization``, a
  ``MatMul`` whose contracted axis is not the units'): the units pass, their constant operands are
  sliced with them, and what a removed unit holds after the op (its *null*) is evaluated;
* ``linear`` — reads the units as input features or channels through a constant (``MatMul``,
  ``Gemm``, ``Conv``, ``ConvTranspose``, ``MatMulInteger``): the weight's input rows are the site and
  the flow ends;
* ``mixes`` — combines different units non-linearly (``LayerNormalization`` over them, a softmax
  or reduction over the units' axis): the flow re-widens before it (exact: the op sees what it
  sees in the model with those units at 0);
* ``shape`` — reads only sizes (``Shape``, ``Size``).

A rule is ``rule(flow, node, ins) -> [Units | None per output]``; it raises ``Widen`` when it cannot
follow exactly. An op not in the table is read at full width, never guessed. The same table
answers for the cell's own flow (``recurrence/cellflow.py``: ``category``).
"""
from __future__ import annotations

from ..optable import Effect, effect
from .engine import Widen
from .rules import elementwise, layout, linear

# Every rule, in one explicit list: each declares its category and the ops it follows.
RULES_IN_ORDER = (
    elementwise._copy,
    elementwise._unary,
    elementwise._elementwise,
    elementwise._where,
    elementwise._reduce,
    elementwise._argmax,
    elementwise._along_other_axis,
    elementwise._topk,
    elementwise._pool,
    elementwise._batchnorm,
    elementwise._norm,
    layout._shape,
    layout._transpose,
    layout._squeeze,
    layout._unsqueeze,
    layout._reshape,
    layout._expand,
    layout._tile,
    layout._concat,
    layout._split,
    layout._slice,
    layout._gather,
    layout._gather_nd,
    layout._reverse_sequence,
    layout._pad,
    linear._matmul,
    linear._gemm,
    linear._conv,
    linear._dynamic_quantize,
    linear._quantize,
)

RULES: dict = {op: fn for fn in RULES_IN_ORDER for op in fn.ops}

# The rules' categories are the one op table's effects (``onnxmod/optable.py``, which the cell's own
# flow and the rewrite rules read too); tests/flow/test_optable.py checks every rule agrees with it.
NAMES = {Effect.PER_UNIT: "per-unit", Effect.LINEAR: "linear", Effect.MIXES: "mixes", Effect.PLUMBING: "layout",
         Effect.SIZES: "shape"}


def category(op: str) -> str | None:
    """``layout``, ``per-unit``, ``linear``, ``mixes``, ``shape``, or None for an op not in the table.
    An op whose effect depends on its axes (a reduction, a softmax) is named by what it does along
    axes other than the units' (its rule re-widens when they are the units')."""
    e = effect(op, over_units=False)
    return None if e is None else NAMES[e]


CATEGORY = {op: category(op) for op in RULES}  # the ops the flow has a rule for, by category


def rule_for(node):
    return RULES.get(node.op, _unknown)


def _unknown(f, node, ins):
    if category(node.op) == "mixes" or node.op in ("Loop", "Scan", "If"):
        raise Widen(f"{node.op} mixes the units or reads them inside a subgraph")
    raise Widen(f"{node.op} is not in onnxmod's op table")
