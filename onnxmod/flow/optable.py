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

from .engine import Widen
from .rules import elementwise, layout, linear

# Every rule, in one explicit list: each declares its category and the ops it follows.
RULES_IN_ORDER = (
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

CATEGORY: dict[str, str] = {op: fn.category for fn in RULES_IN_ORDER for op in fn.ops}
RULES: dict = {op: fn for fn in RULES_IN_ORDER for op in fn.ops}
# ops read at full width: what they do mixes the units, or hides them in a subgraph
for _op in ("Loop", "Scan", "If", "LSTM", "GRU", "RNN", "Einsum", "NonZero", "Compress", "GatherElements",
            "ScatterElements", "ScatterND", "Resize", "SpaceToDepth", "DepthToSpace"):
    CATEGORY.setdefault(_op, "mixes")


def category(op: str) -> str | None:
    """``layout``, ``per-unit``, ``linear``, ``mixes``, ``shape``, or None for an op not in the table."""
    return CATEGORY.get(op)


def rule_for(node):
    return RULES.get(node.op, _unknown)


def _unknown(f, node, ins):
    if CATEGORY.get(node.op) == "mixes":
        raise Widen(f"{node.op} mixes the units or reads them inside a subgraph")
    raise Widen(f"{node.op} is not in onnxmod's op table")
