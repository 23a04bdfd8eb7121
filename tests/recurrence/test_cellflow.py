"""The unit flow inside a cell (``onnxmod/recurrence/cellflow.py``) on hand-written steps: which
positions make a unit, what each unit owns, how slicing rewrites the step, and the one-line
refusals that name the node."""
import numpy as np
import onnx_graphsurgeon as gs
import pytest

from onnxmod import runtime
from onnxmod.recurrence.cellflow import CellFlow
from onnxmod.recurrence.step import Step, StepError

I, H = 3, 4


class StepBuilder:
    """A step graph: inputs (states..., x_t), outputs (new states..., y_t)."""

    def __init__(self, widths):
        self.nodes, self.n = [], 0
        self.rng = np.random.default_rng(0)
        self.states = [gs.Variable(f"s{k}", np.float32, ["N", w]) for k, w in enumerate(widths)]
        self.x = gs.Variable("x_t", np.float32, ["N", I])

    def w(self, *shape):
        self.n += 1
        return gs.Constant(f"w{self.n}", self.rng.normal(0, 0.5, shape).astype(np.float32))

    def op(self, op, *inputs, n_out=1, **attrs):
        self.n += 1
        outs = [gs.Variable(f"t{self.n}_{k}", np.float32) for k in range(n_out)]
        self.nodes.append(gs.Node(op, f"{op}_{self.n}", attrs=attrs, inputs=list(inputs), outputs=outs))
        return outs[0] if n_out == 1 else outs

    def step(self, new_states, y):
        outs = [self.op("Identity", t) for t in [*new_states, y]]
        return Step(gs.Graph(nodes=self.nodes, inputs=[*self.states, self.x], outputs=outs).toposort(), "cell")


def gru_like():
    """z, r, n from one x projection split in three, h' = (1 - z) n + z h: one state, H units."""
    b = StepBuilder([H])
    (h,) = b.states
    xz, xr, xn = b.op("Split", b.op("MatMul", b.x, b.w(I, 3 * H)), gs.Constant("sizes", np.array([H] * 3)), n_out=3,
                      axis=1)
    hz, hr, hn = b.op("Split", b.op("MatMul", h, b.w(H, 3 * H)), gs.Constant("sizes2", np.array([H] * 3)), n_out=3,
                      axis=-1)
    z = b.op("Sigmoid", b.op("Add", xz, hz))
    r = b.op("Sigmoid", b.op("Add", xr, hr))
    n = b.op("Tanh", b.op("Add", b.op("Add", xn, b.w(H)), b.op("Mul", r, hn)))
    h2 = b.op("Add", b.op("Mul", b.op("Sub", gs.Constant("one", np.ones(1, np.float32)), z), n), b.op("Mul", z, h))
    return b.step([h2], h2)


def lstm_like():
    """h and c carried, gates from one concatenated [x, h] product sliced in four."""
    b = StepBuilder([H, H])
    h, c = b.states
    z = b.op("Add", b.op("MatMul", b.op("Concat", b.x, h, axis=1), b.w(I + H, 4 * H)), b.w(4 * H))
    gates = [b.op("Slice", z, gs.Constant(f"a{g}", np.array([g * H])), gs.Constant(f"b{g}", np.array([(g + 1) * H])),
                  gs.Constant(f"ax{g}", np.array([1]))) for g in range(4)]
    i, f, o = (b.op("Sigmoid", g) for g in gates[:3])
    c2 = b.op("Add", b.op("Mul", f, c), b.op("Mul", i, b.op("Tanh", gates[3])))
    h2 = b.op("Mul", o, b.op("Tanh", c2))
    return b.step([h2, c2], h2)


def _run_step(step, states, x):
    g = step.graph.copy()
    g.opset = 17
    proto = gs.export_onnx(g)
    proto.ir_version = 8
    feeds = {s.name: v for s, v in zip(step.states, states)} | {step.x.name: x}
    return runtime.session(proto).run(None, feeds)


@pytest.mark.parametrize("make", [gru_like, lstm_like])
def test_slicing_a_step_equals_running_it_with_the_unit_at_zero(make):
    step = make()
    flow = CellFlow(step)
    assert flow.units == H
    if make is lstm_like:  # h and c are tied position by position: one unit each
        assert list(flow.state_labels(0)) == list(flow.state_labels(1)) == [0, 1, 2, 3]
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (5, I)).astype(np.float32)
    states = [rng.normal(0, 1, (5, w)).astype(np.float32) for w in step.widths]
    keep = np.array([True, False, True, True])
    zeroed = [s * keep[flow.state_labels(k)] for k, s in enumerate(states)]
    want = _run_step(step, zeroed, x)
    flow.slice(keep)
    assert step.widths == [3] * len(states)
    got = _run_step(step, [s[:, keep[flow.state_labels(k)]] for k, s in enumerate(states)], x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w[:, keep], atol=1e-6)


def test_slicing_input_features_drops_weight_rows():
    step = gru_like()
    flow = CellFlow(step)
    keep_x = np.array([True, False, True])
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (5, I)).astype(np.float32)
    h = rng.normal(0, 1, (5, H)).astype(np.float32)
    want = _run_step(step, [h], x * keep_x)
    flow.slice(np.ones(H, bool), keep_x)
    assert step.input_size == 2
    np.testing.assert_allclose(_run_step(step, [h], x[:, keep_x])[0], want[0], atol=1e-6)


def test_rules_are_read_per_unit():
    b = StepBuilder([H, 2])
    a, r = b.states
    a2 = b.op("Tanh", b.op("Add", b.op("MatMul", b.x, b.w(I, H)), b.op("MatMul", a, b.w(H, H))))
    r2 = b.op("Relu", b.op("Add", b.op("MatMul", a2, b.w(H, 2)), b.op("Mul", r, b.w(2))))
    flow = CellFlow(b.step([a2, r2], b.op("Concat", a2, r2, axis=1)))
    assert list(flow.rules()) == ["logistic"] * H + ["relu"] * 2
    assert flow.extra_units() == []


def test_a_state_the_output_does_not_emit_is_still_a_unit():
    b = StepBuilder([H, 2])
    a, m = b.states
    m2 = b.op("Tanh", b.op("Add", b.op("MatMul", b.x, b.w(I, 2)), m))
    a2 = b.op("Tanh", b.op("Add", b.op("MatMul", b.x, b.w(I, H)), b.op("MatMul", m2, b.w(2, H))))
    flow = CellFlow(b.step([a2, m2], a2))
    assert flow.units == H + 2 and flow.emitted == H
    assert flow.extra_units() == [(H, 1, 0), (H + 1, 1, 1)]


def _refused(build):
    with pytest.raises(StepError) as exc:
        CellFlow(build())
    return exc.value


def test_a_product_of_two_states_is_refused_naming_the_node():
    def build():
        b = StepBuilder([H])
        (h,) = b.states
        hh = b.op("MatMul", h, b.op("Transpose", h, perm=[1, 0]))
        return b.step([h], b.op("Tanh", hh))
    e = _refused(build)
    assert e.node.op in ("MatMul", "Transpose") and "'" in str(e)


def test_an_input_tied_to_a_unit_is_refused():
    def build():
        b = StepBuilder([I])
        (h,) = b.states
        h2 = b.op("Tanh", b.op("Add", b.x, h))  # x added to h element-wise: feature i is unit i
        return b.step([h2], h2)
    e = _refused(build)
    assert e.node.op == "Add" and "input feature" in str(e)


def test_a_reshape_that_merges_units_with_batch_is_refused():
    def build():
        b = StepBuilder([H])
        (h,) = b.states
        flat = b.op("Reshape", h, gs.Constant("flat", np.array([-1], np.int64)))
        return b.step([h], b.op("Identity", flat))
    e = _refused(build)
    assert e.node.op == "Reshape" and "merges the unit axis" in e.reason
