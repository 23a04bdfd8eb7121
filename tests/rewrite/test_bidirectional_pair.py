import copy

import numpy as np
import pytest
from onnx import numpy_helper
from rewrite_util import GATES, Builder, accepted, assert_exact, normalized, refused_without_rules, rewritten, run

from onnxmod.rewrite import NoMatch
from onnxmod.rewrite.bidirectional_pair import BidirectionalPair
from onnxmod.units import UnitSelection

F, H, C = 5, 6, 4


def pair(op, second="reverse", hidden2=H):
    """A forward and a second op of the same cell on the same input; each direction's final state
    concatenated (Keras' Bidirectional readout of two separate layers), then a Dense."""
    b = Builder()
    xt = b.node("Transpose", ["x"], perm=[1, 0, 2])
    hf = b.recurrent(op, xt, F, H, "forward", name="fwd")[1]
    hb = b.recurrent(op, xt, F, hidden2, second, name="bwd")[1]
    h = b.node("Concat", [b.node("Squeeze", [hf, b.i64(0)]), b.node("Squeeze", [hb, b.i64(0)])], axis=1)
    b.node("Add", [b.node("MatMul", [h, b.c(b.rand(H + hidden2, C))]), b.c(b.rand(C))], ["logits"])
    return b.model("logits", ["batch", C], F)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_forward_and_reverse_ops_on_one_input_become_one_layer(op, monkeypatch):
    proto = pair(op)
    # without the rule the flow follows the two ops' units side by side (two layers); the rule makes one
    assert refused_without_rules(proto, monkeypatch) == ""
    out, applied = rewritten(proto)
    assert {a.rule for a in applied} == {"bidirectional_pair", "direction_slice"}
    assert_exact(proto, out, F)
    m = accepted(proto)
    assert len(m.recurrent) == 1 and m.recurrent[0].directions == 2
    # removing units of the merged layer = zeroing them in the original two ops (direction 0 = fwd)
    rng = np.random.default_rng(3)
    keep = [np.sort(rng.choice(H, H // 2, replace=False)) for _ in range(2)]
    zeroed = copy.deepcopy(proto)
    inits = {t.name: t for t in zeroed.graph.initializer}
    G = GATES[op]
    for d, name in enumerate(("fwd", "bwd")):
        node = next(n for n in zeroed.graph.node if n.name == name)
        gone = np.setdiff1d(np.arange(H), keep[d])
        for i, per in ((1, G), (2, G), (3, 2 * G)):
            arr = numpy_helper.to_array(inits[node.input[i]]).copy()
            arr[0, (np.arange(per)[:, None] * H + gone[None, :]).reshape(-1)] = 0
            zeroed.graph.initializer.append(numpy_helper.from_array(arr, f"{node.input[i]}/zeroed"))
            node.input[i] = f"{node.input[i]}/zeroed"
    m.apply_selection({0: UnitSelection.from_keep(H, keep)})
    x = rng.normal(0, 1, (3, 7, F)).astype(np.float32)
    np.testing.assert_allclose(run(m.export(), x)[0], run(zeroed, x)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("second,hidden2,why", [
    ("forward", H, "no reverse op of the same cell reads the same input"),
    ("reverse", H + 1, "no reverse op of the same cell reads the same input"),  # another hidden size
])
def test_refusals(second, hidden2, why):
    graph, applied = normalized(pair("GRU", second=second, hidden2=hidden2))
    assert "bidirectional_pair" not in {a.rule for a in applied}
    node = next(n for n in graph.nodes if n.op == "GRU" and n.name == "fwd")
    r = BidirectionalPair().match(graph, node)
    assert isinstance(r, NoMatch) and r.reason == why
