"""The one op table: what an ONNX op does to the units (of a recurrence, or the features of an
embedding) that flow through it. Every part of onnxmod that follows units — the unit flow around
recurrences, the unit flow inside a cell (``recurrence/cellflow.py``), the rewrite rules, the proofs
that a tensor is zero — asks this table, so an op is classified once.

Four effects (``Effect``):

* **per unit** — each unit on its own: element-wise ops (one operand, or several with broadcasting:
  masks, scales) and, along axes other than the unit axis, reductions, ``Softmax``, ``CumSum``,
  ``ArgMax``/``TopK``; ``BatchNormalization`` (inference) is per unit along its channel axis;
* **reads units linearly** — ``MatMul``/``Gemm``/``Conv``/``ConvTranspose`` (and their integer forms)
  with the units as input features or channels: their input rows are sliced;
* **mixes units** — normalizations over the unit axis (``LayerNormalization``, RMS norm, ...) and the
  axis ops above when their axis is the unit axis;
* **plumbing** — moves or selects values without computing: layouts, concatenation, splits,
  slices, gathers, broadcasts.

An op's effect may depend on its axes (``depends_on_axes``); ``effect(op, over_units=...)`` says which.
"""
from __future__ import annotations

from enum import Enum


class Effect(str, Enum):
    PER_UNIT = "acts per unit"
    LINEAR = "reads units linearly"
    MIXES = "mixes units"
    PLUMBING = "plumbing"
    SIZES = "reads sizes only"

    def __str__(self) -> str:
        return self.value


# element-wise, one operand (attributes only): f applied to each element
UNARY = frozenset({
    "Tanh", "Sigmoid", "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Softsign", "Softplus", "HardSigmoid", "HardSwish",
    "Gelu", "Mish", "ThresholdedRelu", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Sin", "Cos", "Sign",
    "Floor", "Ceil", "Round", "Not", "IsNaN", "IsInf"})
# element-wise over several operands, with broadcasting
NARY = frozenset({
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu", "Where", "Clip", "Equal", "Greater",
    "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod", "BitShift"})
# per unit along other axes, mixing along the unit axis
ALONG_AXES = frozenset({
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceSumSquare", "Softmax", "LogSoftmax", "Hardmax", "CumSum", "ArgMax", "ArgMin", "TopK",
    "LpNormalization"})
# pooling: per channel along the spatial axes
POOLS = frozenset({"GlobalMaxPool", "GlobalAveragePool", "GlobalLpPool", "MaxPool", "AveragePool", "LpPool"})
# normalizations: each output element depends on every element along the normalized axes
NORMS = frozenset({"LayerNormalization", "RMSNormalization", "GroupNormalization", "InstanceNormalization",
                   "MeanVarianceNormalization"})
LINEAR = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "MatMulInteger", "ConvInteger", "QLinearMatMul",
                    "QLinearConv"})
PER_CHANNEL = frozenset({"BatchNormalization"})  # inference: a scale and shift per channel (axis 1)
# values moved, selected or repeated, never computed (the first input's elements, or every input's: Concat)
PLUMBING = frozenset({"Identity", "Dropout", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
                      "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile",
                      "ReverseSequence"})
PADS = frozenset({"Pad"})  # moves values and inserts a constant beside them
# element-wise with a scale and zero point (per tensor, or per channel along an axis)
QUANTIZE = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
SIZES = frozenset({"Shape", "Size"})  # read a tensor's sizes, never its values
# plumbing with one operand whose output has the input's shape
_SHAPE_KEEPING_PLUMBING = frozenset({"Identity", "Dropout", "Cast"})


def effect(op: str, over_units: bool | None = None) -> Effect | None:
    """What ``op`` does to units; None when the table does not know it. For an op whose effect
    depends on its axes, ``over_units`` says whether they include the unit axis (None: mixes)."""
    if op in UNARY or op in NARY or op in PER_CHANNEL or op in QUANTIZE:
        return Effect.PER_UNIT
    if op in PLUMBING or op in PADS:
        return Effect.PLUMBING
    if op in SIZES:
        return Effect.SIZES
    if op in LINEAR:
        return Effect.LINEAR
    if op in NORMS:
        return Effect.MIXES
    if op in ALONG_AXES or op in POOLS:
        return Effect.PER_UNIT if over_units is False else Effect.MIXES
    return None


def depends_on_axes(op: str) -> bool:
    """Whether ``op`` acts per unit along some axes and mixes units along others."""
    return op in ALONG_AXES or op in POOLS


def is_elementwise(op: str) -> bool:
    """Element-wise over one or several (broadcast) operands."""
    return op in UNARY or op in NARY


def is_unary(op: str) -> bool:
    """One operand, each element on its own, shape kept: element-wise functions and the plumbing that
    only copies (Identity, Dropout, Cast)."""
    return op in UNARY or op in _SHAPE_KEEPING_PLUMBING


def is_plumbing(op: str) -> bool:
    return op in PLUMBING


def copies_values(op: str) -> bool:
    """Every output element is an element of the input (or of some input: Concat): a property of the
    values (all zero, all equal to a length) survives it."""
    return op in PLUMBING


def keeps_shape(op: str) -> bool:
    """The output has the (first) input's shape and each axis means what it meant there."""
    return is_unary(op) or op in ("Softmax", "LogSoftmax", "Hardmax", "CumSum")


def mixes_inside_a_cell(op: str) -> bool:
    """Ops that, inside a cell's step (vectors ``[N, W]``, units on the last axis), mix units: the axis
    ops other than reductions (whose axes the cell flow reads) and the normalizations."""
    return (op in ALONG_AXES and not op.startswith("Reduce")) or op in NORMS
