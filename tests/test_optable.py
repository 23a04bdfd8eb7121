"""The one op table (``onnxmod/optable.py``): every op it names is an ONNX op, each has one effect,
and the sets the unit flows used to keep on their own are what it answers."""
import onnx
import pytest

from onnxmod import optable
from onnxmod.optable import Effect

CONTRIB = {"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv"}  # ONNX ops too, in domain ""


def test_every_op_is_an_onnx_op():
    for group in (optable.UNARY, optable.NARY, optable.ALONG_AXES, optable.NORMS, optable.LINEAR,
                  optable.PER_CHANNEL, optable.PLUMBING):
        for op in group:
            assert onnx.defs.has(op) or op in CONTRIB, op


def test_each_op_has_one_effect():
    groups = [optable.UNARY, optable.NARY, optable.ALONG_AXES, optable.NORMS, optable.LINEAR, optable.PER_CHANNEL,
              optable.PLUMBING]
    seen = {}
    for g in groups:
        for op in g:
            assert op not in seen, f"{op} is in two groups"
            seen[op] = g


@pytest.mark.parametrize("op,over,want", [
    ("Tanh", None, Effect.PER_UNIT), ("Mul", None, Effect.PER_UNIT), ("BatchNormalization", None, Effect.PER_UNIT),
    ("MatMul", None, Effect.LINEAR), ("Conv", None, Effect.LINEAR), ("LayerNormalization", None, Effect.MIXES),
    ("ReduceMax", False, Effect.PER_UNIT), ("ReduceMax", True, Effect.MIXES), ("Softmax", False, Effect.PER_UNIT),
    ("Softmax", None, Effect.MIXES), ("Transpose", None, Effect.PLUMBING), ("Gather", None, Effect.PLUMBING),
    ("NonMaxSuppression", None, None)])
def test_effects(op, over, want):
    assert optable.effect(op, over_units=over) == want
    assert optable.depends_on_axes(op) == (op in optable.ALONG_AXES)


def test_the_cell_flows_sets():
    """What the cell flow and the rules asked of their own tables before there was one."""
    assert {op for op in optable.UNARY | {"Identity", "Dropout", "Cast"}} == \
        {op for op in optable.UNARY | optable.PLUMBING if optable.is_unary(op)}
    assert {op for op in optable.ALONG_AXES | optable.NORMS if optable.mixes_inside_a_cell(op)} == {
        "Softmax", "LogSoftmax", "Hardmax", "LayerNormalization", "LpNormalization", "InstanceNormalization",
        "GroupNormalization", "MeanVarianceNormalization", "CumSum", "TopK", "ArgMax", "ArgMin", "RMSNormalization"}
    assert optable.copies_values("Expand") and optable.copies_values("Concat") and not optable.copies_values("Add")
    assert optable.keeps_shape("Softmax") and not optable.keeps_shape("Reshape")
