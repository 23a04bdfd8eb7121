"""The one reference evaluator of the recurrence side (``recurrence/evaluate.py``): a node's value
under the opset of its graph, bounded before it is made, and a refusal (``NotEvaluated``) — never
another exception — for what the reference implementation cannot compute."""
import numpy as np
import onnx_graphsurgeon as gs
import pytest

from onnxmod.recurrence.evaluate import FOLD_LIMIT, NotEvaluated, evaluate


def _node(op, n_in, domain="", **attrs):
    return gs.Node(op, "n", attrs=attrs, inputs=[gs.Variable(f"i{k}") for k in range(n_in)],
                   outputs=[gs.Variable("o")], domain=domain)


def test_a_node_is_evaluated_under_its_graphs_opset():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got, = evaluate(_node("ReduceSum", 1, axes=[1], keepdims=0), [x], 12)  # axes an attribute before opset 13
    np.testing.assert_array_equal(got, x.sum(1))
    got, = evaluate(_node("ReduceSum", 2, keepdims=0), [x, np.array([1])], 18)  # an input since
    np.testing.assert_array_equal(got, x.sum(1))


@pytest.mark.parametrize("node,args", [
    (_node("ConstantOfShape", 1), [np.array([FOLD_LIMIT + 1])]),
    (_node("Expand", 2), [np.ones(1, np.float32), np.array([1 << 13, 1 << 12])]),
    (_node("Tile", 2), [np.ones(1 << 12, np.float32), np.array([1 << 13])]),
    (_node("Range", 3), [np.array(0), np.array(FOLD_LIMIT + 1), np.array(1)]),
])
def test_what_would_grow_past_the_limit_is_not_made(node, args):
    with pytest.raises(NotEvaluated, match="would make a tensor"):
        evaluate(node, args, 17)


@pytest.mark.parametrize("node,args", [
    (_node("NoSuchOp", 1), [np.ones(3, np.float32)]),
    (_node("DynamicQuantizeLinear", 1, domain="com.microsoft"), [np.ones(3, np.float32)]),
    (_node("Reshape", 2), [np.ones(3, np.float32), np.array([2])]),
    (_node("Gather", 2), [np.ones(3, np.float32), np.array(5)]),
    (_node("Resize", 1), [np.ones(3, np.float32)]),
])
def test_what_it_cannot_compute_is_refused_as_such(node, args):
    with pytest.raises(NotEvaluated):
        evaluate(node, args, 17)
