"""The cells' equations and the native ops' whole ONNX spec, against the ONNX backend node tests
(generated from ``onnx.backend.test.case.node.collect_testcases``; the wheel ships no data) and
against onnxruntime: reference = expected outputs, slicing = zeroing, for every feature."""
import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxmod import api, runtime
from onnxmod.ops import handler_for
from onnxmod.ops.base import UnitSelection
from onnxmod.ops.layout import to_time_major

OPS = ("LSTM", "GRU", "RNN")


def _node_cases():
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():  # other ops' generators warn about their own overflows
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    return [c for c in cases if c.model.graph.node and c.model.graph.node[0].op_type in OPS]


CASES = {c.name: c for c in _node_cases()}


def test_the_eighteen_node_tests_are_there():
    assert len(CASES) == 18, sorted(CASES)


def _bound(case):
    """The case's model with every input but X bound as an initializer (as a trained model has
    them), its node (time-major), and the inputs and expected outputs of its first data set."""
    model = case.model
    inputs, outputs = case.data_sets[0]
    names = [i.name for i in model.graph.input]
    feeds = dict(zip(names, inputs))
    g = gs.import_onnx(model)
    node = g.nodes[0]
    for i, t in enumerate(node.inputs):
        if t.name and t.name != names[0]:
            node.inputs[i] = gs.Constant(f"bound_{t.name}", np.asarray(feeds[t.name]))
    g.inputs = [t for t in g.inputs if t.name == names[0]]
    to_time_major(g, OPS)
    g.cleanup().toposort()
    expected = dict(zip([o.name for o in model.graph.output], outputs))
    return g, feeds[names[0]], expected


def _export(g):
    m = gs.export_onnx(g)
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("", 14))
    m.ir_version = 8
    return m


@pytest.mark.parametrize("name", sorted(CASES))
def test_inspect_reads_every_node_test_model(name, tmp_path):
    path = tmp_path / f"{name}.onnx"
    onnx.save(CASES[name].model, path)
    info = api.inspect(path)
    assert info["kind"] == "model"
    assert [r["op_type"] for r in info["recurrences"]] == [CASES[name].model.graph.node[0].op_type]
    assert info["decompose"]["ok"] is False and info["decompose"]["why_not"]  # no output layer: says why


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_equals_the_node_test_outputs(name):
    g, x, expected = _bound(CASES[name])
    node = next(n for n in g.nodes if n.op in OPS)
    h = handler_for(node.op)
    layout = int(CASES[name].model.graph.node[0].attribute[0].i) if False else next(
        (a.i for a in CASES[name].model.graph.node[0].attribute if a.name == "layout"), 0)
    xt = x.transpose(1, 0, 2) if layout else x
    lens = node.inputs[4].values if h._has_input(node, 4) else None
    init = {k: np.asarray(node.inputs[i].values) for k, i in zip(("h", "c"), h.state_inputs) if h._has_input(node, i)}
    init = {k: (v.transpose(1, 0, 2) if layout else v) for k, v in init.items()}
    ref = h.run_numpy(node, xt, sequence_lens=lens, initial=init)
    outs = CASES[name].model.graph.node[0].output
    for pos, key in enumerate(("Y", "Y_h", "Y_c")):
        if pos < len(outs) and outs[pos]:
            want = expected[outs[pos]]
            got = ref[key]
            if layout:
                got = got.transpose(2, 0, 1, 3) if key == "Y" else got.transpose(1, 0, 2)
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def _zeroed(g, node, keep):
    """A copy of the graph whose op has the removed units' weights (W/R rows, R columns, B, P) zeroed."""
    g2 = g.copy()
    n2 = next(n for n in g2.nodes if n.op == node.op)
    h = handler_for(n2.op)
    H, G = h.hidden_size(n2), h.num_gates
    for i in (1, 2, 3, 7):
        if not h._has_input(n2, i):
            continue
        v = np.asarray(n2.inputs[i].values).copy()
        for d, k in enumerate(keep):
            gone = np.setdiff1d(np.arange(H), k)
            if i in (1, 2, 3):
                rows = np.concatenate([g_ * H + gone for g_ in range(G)])
                v[d][rows] = 0
                if i == 3:
                    v[d][G * H + rows] = 0
                if i == 2:
                    v[d][:, gone] = 0
            else:
                v[d][np.concatenate([g_ * H + gone for g_ in range(3)])] = 0
        n2.inputs[i] = gs.Constant(f"{n2.inputs[i].name}_z", v)
    return g2


def _slice_equals_zero(g, x, seed):
    node = next(n for n in g.nodes if n.op in OPS)
    h = handler_for(node.op)
    H, D = h.hidden_size(node), h.directions(node)
    rng = np.random.default_rng(seed)
    keep = [np.flatnonzero(rng.random(H) < 0.6) for _ in range(D)]
    feeds = {g.inputs[0].name: x}
    want = runtime.session(_export(_zeroed(g, node, keep))).run(None, feeds)
    g3 = g.copy()
    n3 = next(n for n in g3.nodes if n.op == node.op)
    sel = UnitSelection.from_keep(H, keep)
    h.slice_units(n3, sel)
    got = runtime.session(_export(g3)).run(None, feeds)
    outs = [o.name for o in g.outputs]
    for name, a, b in zip(outs, got, want):
        # every output is (..., D or batch axes, H): compare each direction's kept, non-inert units
        for d in range(D):
            real = ~np.isin(sel.kept[d], sel.inert[d])
            if a.ndim == 4:  # Y [T, D, N, H'] (or [N, T, D, H'] batch-major)
                ax = 1 if a.shape[1] == D and name != "Y" or a.shape[1] == D else 2
                ga, wa = np.take(a, d, axis=ax), np.take(b, d, axis=ax)
            else:  # Y_h / Y_c [D, N, H'] (or [N, D, H'])
                ax = 0 if a.shape[0] == D else 1
                ga, wa = np.take(a, d, axis=ax), np.take(b, d, axis=ax)
            np.testing.assert_allclose(ga[..., real], wa[..., sel.kept[d][real]], atol=1e-5, rtol=0)
            assert (ga[..., ~real] == 0).all()
    return sel


@pytest.mark.parametrize("name", sorted(CASES))
def test_slicing_equals_zeroing_on_every_node_test(name):
    g, x, _ = _bound(CASES[name])
    for seed in range(3):
        _slice_equals_zero(g, x, seed)


def _op_graph(op, H, I, D, rng, attrs, with_lens, with_init, peepholes=False):
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    W = rng.normal(0, 0.7, (D, G * H, I)).astype(np.float32)
    R = rng.normal(0, 0.7, (D, G * H, H)).astype(np.float32)
    B = rng.normal(0, 0.3, (D, 2 * G * H)).astype(np.float32)
    N = 4
    inits = [numpy_helper.from_array(v, n) for n, v in (("W", W), ("R", R), ("B", B))]
    ins = ["x", "W", "R", "B", "lens" if with_lens else ""]
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, N, I])]
    if with_lens:
        graph_inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [N]))
    if with_init:
        ins.append("h0")
        inits.append(numpy_helper.from_array(rng.normal(0, 1, (D, N, H)).astype(np.float32), "h0"))
        if op == "LSTM":
            ins.append("c0")
            inits.append(numpy_helper.from_array(rng.normal(0, 1, (D, N, H)).astype(np.float32), "c0"))
    if peepholes:
        while len(ins) < 7:
            ins.append("")
        ins.append("P")
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (D, 3 * H)).astype(np.float32), "P"))
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    a = {"hidden_size": H, **attrs}
    if D == 2:
        a["direction"] = "bidirectional"
    node = helper.make_node(op, ins, outs, **a)
    graph = helper.make_graph([node], "g", graph_inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                         for o in outs], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    return m


FEATURES = [
    ("LSTM", {}, False), ("LSTM", {}, True), ("LSTM", {"clip": 0.7}, False), ("LSTM", {"input_forget": 1}, False),
    ("LSTM", {"direction": "reverse"}, True),
    ("LSTM", {"activations": ["HardSigmoid", "Tanh", "Softsign"], "activation_alpha": [0.3],
              "activation_beta": [0.4]}, False),
    ("GRU", {"linear_before_reset": 1}, False), ("GRU", {}, False), ("GRU", {"clip": 0.5}, False),
    ("GRU", {"activations": ["HardSigmoid", "LeakyRelu"], "activation_alpha": [0.2, 0.1],
             "activation_beta": [0.5]}, False),
    ("RNN", {"activations": ["Relu"]}, False), ("RNN", {}, False), ("RNN", {"activations": ["Elu"]}, False),
    ("RNN", {"direction": "reverse", "clip": 0.9}, False),
]


@pytest.mark.parametrize("op,attrs,peep", FEATURES)
@pytest.mark.parametrize("D", [1, 2])
def test_sequence_lens_and_initial_states_beyond_them(op, attrs, peep, D):
    """Unequal lengths (padding past them) and non-zero initial states, every feature: the
    reference equals onnxruntime, and slicing equals zeroing."""
    if D == 2 and attrs.get("direction") == "reverse":
        pytest.skip("reverse is one direction")
    if D == 2 and "activations" in attrs:
        attrs = {k: (v * 2 if k.startswith("activation") else v) for k, v in attrs.items()}
    rng = np.random.default_rng(5)
    m = _op_graph(op, 5, 3, D, rng, attrs, with_lens=True, with_init=True, peepholes=peep)
    x = rng.normal(0, 1, (6, 4, 3)).astype(np.float32)
    lens = np.array([6, 3, 1, 4], dtype=np.int32)
    ort = runtime.session(m).run(None, {"x": x, "lens": lens})
    g = gs.import_onnx(m)
    node = g.nodes[0]
    h = handler_for(op)
    init = {k: np.asarray(node.inputs[i].values) for k, i in zip(("h", "c"), h.state_inputs) if h._has_input(node, i)}
    ref = h.run_numpy(node, x, sequence_lens=lens, initial=init)
    for got, key in zip(ort, ("Y", "Y_h", "Y_c")):
        np.testing.assert_allclose(ref[key], got, atol=1e-5, rtol=0)
    # slicing = zeroing, with the lengths fed as in the model
    node.inputs[4] = gs.Constant("lens_c", lens)
    g.inputs = g.inputs[:1]
    for seed in range(3):
        _slice_equals_zero(g, x, seed)
