"""The unit flow's rules follow the one op table (``onnxmod/optable.py``): every op a rule follows
is in the table, in the category the rule says it follows it as."""
from onnxmod import optable as table
from onnxmod.flow import optable


def test_every_rule_agrees_with_the_one_op_table():
    for fn in optable.RULES_IN_ORDER:
        for op in fn.ops:
            assert table.effect(op) is not None, f"{op} has a rule but is not in the op table"
            assert optable.category(op) == fn.category, (op, fn.__name__, optable.category(op), fn.category)


def test_ops_without_a_rule_are_read_at_full_width():
    assert optable.rule_for(type("N", (), {"op": "SpaceToDepth"})()) is optable._unknown
    assert optable.category("Shape") == "shape" and optable.category("Reshape") == "layout"
    assert optable.category("MatMulInteger") == "linear" and optable.category("LayerNormalization") == "mixes"
