"""Per-op handlers against onnxruntime: numpy reference cells and physical unit removal."""
import numpy as np
import onnx_graphsurgeon as gs
import pytest
from builders import build, random_stack, zeroed
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxmod import runtime
from onnxmod.cells.backend import Numpy
from onnxmod.graph import Model
from onnxmod.ops import handler_for
from onnxmod.ops.base import UnitSelection

CELLS = [("LSTM", 0, False), ("GRU", 0, False), ("GRU", 1, False), ("RNN", 0, False), ("RNN", 0, True)]


def _run(proto, x):
    return runtime.session(proto).run(None, {"x": x})[0]


@st.composite
def stacks(draw):
    op, lbr, relu = draw(st.sampled_from(CELLS))
    layers = draw(st.integers(1, 3))
    hidden = draw(st.integers(1, 6))
    directions = draw(st.sampled_from([1, 2]))
    many = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    spec = random_stack(rng, op, layers, hidden, directions, many_output=many, relu=relu, linear_before_reset=lbr)
    spec.bi_cat = draw(st.booleans())
    keep = [[rng.random(hidden) < draw(st.sampled_from([0.0, 0.3, 0.7, 1.0])) for _ in range(directions)]
            for _ in range(layers)]
    return spec, keep, rng


@settings(max_examples=60, deadline=None)
@given(stacks())
def test_slicing_equals_zeroing(case):
    spec, keep, rng = case
    x = rng.normal(0, 1, (3, 4, spec.features)).astype(np.float32)
    model = Model(build(spec))
    sel = {i: UnitSelection.from_keep(L.hidden, [np.flatnonzero(k) for k in keep[i]])
           for i, L in enumerate(spec.layers)}
    model.apply_selection(sel)
    sliced = model.export()
    got = _run(sliced, x)
    want = _run(build(zeroed(spec, keep)), x)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-6)
    # physically smaller unless every unit was kept
    widths = [model.recurrent[i].hidden_size for i in range(len(spec.layers))]
    assert all(w == max(1, max(int(k.sum()) for k in keep[i])) for i, w in enumerate(widths))


@settings(max_examples=20, deadline=None)
@given(stacks())
def test_keep_all_equals_original(case):
    spec, _, rng = case
    x = rng.normal(0, 1, (2, 5, spec.features)).astype(np.float32)
    model = Model(build(spec))
    model.apply_selection({i: UnitSelection.from_keep(L.hidden, [np.arange(L.hidden)] * L.directions)
                           for i, L in enumerate(spec.layers)})
    np.testing.assert_allclose(_run(model.export(), x), _run(build(spec), x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("op,lbr,relu", CELLS)
@pytest.mark.parametrize("directions", [1, 2])
def test_numpy_reference_matches_onnxruntime(op, lbr, relu, directions):
    rng = np.random.default_rng(7)
    spec = random_stack(rng, op, 1, 5, directions, many_output=True, relu=relu, linear_before_reset=lbr)
    proto = build(spec)
    x = rng.normal(0, 1, (3, 6, spec.features)).astype(np.float32)
    g = gs.import_onnx(proto)
    node = next(n for n in g.nodes if n.op == op)
    sess = runtime.session(proto)
    # fetch Y via a trace-like extra output
    from onnxmod.trace import trace_model

    tr = runtime.session(trace_model(Model(proto)))
    y_ort = tr.run(None, {"x": x})[0].transpose(2, 0, 1, 3)  # [T, D, B, H] -> [B, T, D, H]
    ref = handler_for(op).run_numpy(node, x.transpose(1, 0, 2))["Y"].transpose(2, 0, 1, 3)
    np.testing.assert_allclose(ref, y_ort, atol=1e-5, rtol=0)
    assert sess is not None


def test_unit_selection_pads_directions_with_inert_units():
    sel = UnitSelection.from_keep(5, [np.array([0, 3]), np.array([4])])
    assert sel.width == 2
    assert sel.kept[1].tolist() == [0, 4] and sel.inert[1].tolist() == [0]
    assert sel.global_ids("kept").tolist() == [0, 3, 5, 9]


@pytest.mark.parametrize("op,lbr,relu", CELLS)
@pytest.mark.parametrize("directions", [1, 2])
def test_gates_rebuilt_from_trace_reproduce_onnxruntime_states(op, lbr, relu, directions):
    """Gate values rebuilt from the traced X and Y recombine into onnxruntime's own h_t."""
    from onnxmod.trace import gate_activations, run_trace

    rng = np.random.default_rng(11)
    spec = random_stack(rng, op, 2, 4, directions, many_output=True, relu=relu, linear_before_reset=lbr)
    model = Model(build(spec))
    x = rng.normal(0, 1, (3, 5, spec.features)).astype(np.float32)
    tr = run_trace(model, x, inputs=True, progress=False)
    for k, (g, y) in enumerate(zip(gate_activations(model, tr), tr.hidden)):
        N, T, D, H = y.shape
        g = g.reshape(N, T, g.shape[2], D, H).astype(np.float64)
        prev = np.zeros_like(y, dtype=np.float64)
        prev[:, 1:, 0] = y[:, :-1, 0]
        if D == 2:
            prev[:, :-1, 1] = y[:, 1:, 1]
        if op == "LSTM":
            i, o, f, c_ = (g[:, :, j] for j in range(4))
            c = np.zeros((N, D, H))
            h = np.zeros_like(y, dtype=np.float64)
            for d in range(D):
                for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                    c[:, d] = f[:, t, d] * c[:, d] + i[:, t, d] * c_[:, t, d]
                    h[:, t, d] = o[:, t, d] * np.tanh(c[:, d])
        elif op == "GRU":
            z, n = g[:, :, 0], g[:, :, 2]
            h = (1 - z) * n + z * prev
        else:
            h = g[:, :, 0]
        np.testing.assert_allclose(h, y, atol=1e-5, err_msg=f"layer {k}")


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(CELLS), st.sampled_from([1, 2]), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_encoder_decoder_slicing_bridges_the_state_exactly(cell, directions, hidden, seed):
    """Encoder and decoder keep different units: the state bridge gives exactly the zeroed model
    (removed encoder units hand over 0; removed decoder units start from 0)."""
    import copy

    from builders import GATES, build_encdec

    op, lbr, relu = cell
    rng = np.random.default_rng(seed)
    enc = random_stack(rng, op, 1, hidden, directions, relu=relu, linear_before_reset=lbr).layers[0]
    dec = random_stack(rng, op, 1, hidden, directions, relu=relu, linear_before_reset=lbr).layers[0]
    head_w = rng.normal(0, 1, (hidden * directions, 3)).astype(np.float32)
    head_b = rng.normal(0, 1, 3).astype(np.float32)
    keep = [[rng.random(hidden) < 0.6 for _ in range(directions)] for _ in range(2)]
    src = rng.normal(0, 1, (2, 4, 5)).astype(np.float32)
    tgt = rng.normal(0, 1, (2, 3, 5)).astype(np.float32)
    model = Model(build_encdec(enc, dec, head_w, head_b, 5))
    assert model.shape == "enc-dec" and model.recurrent[1].state_from == 0
    model.apply_selection({i: UnitSelection.from_keep(hidden, [np.flatnonzero(k) for k in keep[i]]) for i in range(2)})
    got = runtime.session(model.export()).run(None, {"src": src, "tgt": tgt})[0]
    # zeroed reference
    ze, zd, hw = copy.deepcopy(enc), copy.deepcopy(dec), head_w.copy()
    G = GATES[op]
    for L, k in ((ze, keep[0]), (zd, keep[1])):
        for d in range(directions):
            gone = np.flatnonzero(~k[d])
            rows = np.concatenate([g * hidden + gone for g in range(G)]) if gone.size else np.array([], int)
            L.W[d][rows] = 0
            L.R[d][rows] = 0
            L.R[d][:, gone] = 0
            L.B[d][np.concatenate([rows, G * hidden + rows])] = 0
    for d in range(directions):
        hw[d * hidden + np.flatnonzero(~keep[1][d])] = 0
    mask = np.stack([k.astype(np.float32) for k in keep[1]])[:, None, :]
    want = runtime.session(build_encdec(ze, zd, hw, head_b, 5, state_mask=mask)).run(None, {"src": src, "tgt": tgt})[0]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([("LSTM", 0, False), ("GRU", 1, False), ("RNN", 0, False), ("RNN", 0, True)]),
       st.integers(1, 2), st.sampled_from([1, 2]), st.booleans(), st.integers(0, 2**31 - 1))
def test_mean_compensation_equals_units_emitting_their_mean(cell, layers, directions, many, seed):
    """With means, a removed unit behaves exactly as a unit whose h is the constant mean at every
    step (read by the recurrence from the first step on, by the next layer and by the head)."""
    from onnxmod.ops.base import UnitSelection as US

    op, lbr, relu = cell
    rng = np.random.default_rng(seed)
    spec = random_stack(rng, op, layers, 4, directions, many_output=many, relu=relu, linear_before_reset=lbr)
    keep = [np.concatenate([rng.random(4) < 0.6 for _ in range(directions)]) for _ in range(layers)]
    means = [rng.normal(0, 0.5, 4 * directions) for _ in range(layers)]
    x = rng.normal(0, 1, (2, 3, spec.features)).astype(np.float32)
    model = Model(build(spec))
    sel = {i: US.from_keep(4, [np.flatnonzero(keep[i][d * 4:(d + 1) * 4]) for d in range(directions)])
           for i in range(layers)}
    model.apply_selection(sel, means={i: (means[i], means[i]) for i in range(layers)})
    got = runtime.session(model.export()).run(None, {"x": x})[0]
    # numpy reference: removed units clamped to their mean
    g = gs.import_onnx(build(spec))
    nodes = [n for n in g.nodes if n.op == op]
    seq = x.transpose(1, 0, 2).astype(np.float64)
    for i, node in enumerate(nodes):
        h_ = handler_for(op)
        Wt, Rt, Bt = (a.astype(np.float64) for a in h_.weights(node))
        G, H, T, B = h_.num_gates, 4, seq.shape[0], seq.shape[1]
        Y = np.zeros((T, directions, B, H))
        for d in range(directions):
            gone = ~keep[i][d * H:(d + 1) * H]
            m = means[i][d * H:(d + 1) * H]
            xp = seq @ Wt[d].T + Bt[d][:G * H]
            h, c = np.where(gone, m, 0.0) * np.ones((B, H)), np.zeros((B, H))
            p = h_.params(node)[d]
            for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                new, _ = h_.cell.step(Numpy(), xp[t], {"h": h, "c": c}, p)
                h, c = np.where(gone, m, new["h"]), new.get("c", c)
                Y[t, d] = h
        seq = Y.transpose(0, 2, 1, 3).reshape(T, B, -1)
    bf = seq.transpose(1, 0, 2)
    want = bf @ spec.head_w + spec.head_b if many else bf[:, -1] @ spec.head_w.T + spec.head_b
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("op,acts,directions", [("LSTM", None, 1), ("LSTM", None, 2), ("GRU", None, 1),
                                                 ("GRU", None, 2), ("RNN", ["Relu"], 1), ("RNN", ["Relu", "Relu"], 2)])
def test_silenced_units_output_exactly_zero_and_leave_the_others_as_if_removed(op, acts, directions):
    """The handler's silencer (what fused compositions rely on), checked in onnxruntime: a unit
    whose gates get the silencing offset through an extra input column outputs exactly 0 at every
    step, and every other unit equals the op with that unit physically removed."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    H, I, T, N = 4, 3, 7, 5
    handler = handler_for(op)
    G = len(handler.gates)
    W = rng.normal(0, 0.8, (directions, G * H, I)).astype(np.float32)
    R = rng.normal(0, 0.8, (directions, G * H, H)).astype(np.float32)
    B = rng.normal(0, 0.5, (directions, 2 * G * H)).astype(np.float32)
    attrs = {"hidden_size": H, **({"direction": "bidirectional"} if directions == 2 else {}),
             **({"activations": acts} if acts else {})}

    def run(w, r, b, x, hidden):
        a = dict(attrs, hidden_size=hidden)
        g = helper.make_graph([helper.make_node(op, ["x", "W", "R", "B"], ["Y"], **a)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, x.shape[2]])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, n) for n, v in (("W", w), ("R", r), ("B", b))])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return runtime.session(m).run(None, {"x": x})[0]  # [T, D, N, H]

    gs_node = gs.Node(op, attrs=attrs)
    offsets = handler.silencer(gs_node)
    assert offsets
    silent = 2
    code = np.zeros((directions, G * H, 1), np.float32)
    for gate, v in offsets.items():
        code[:, handler.gates.index(gate) * H + silent, 0] = v
    x = rng.normal(0, 2, (T, N, I)).astype(np.float32)
    y = run(np.concatenate([W, code], axis=2), R, B, np.concatenate([x, np.ones((T, N, 1), np.float32)], axis=2), H)
    assert (y[..., silent] == 0).all()
    keep = np.array([j for j in range(H) if j != silent])
    rows = np.concatenate([gi * H + keep for gi in range(G)])
    B_kept = np.concatenate([B[:, rows], B[:, G * H + rows]], axis=1)
    y_removed = run(W[:, rows], R[:, rows][:, :, keep], B_kept, x, H - 1)
    np.testing.assert_allclose(y[..., keep], y_removed, atol=1e-5, rtol=0)


def test_tanh_rnn_units_cannot_be_silenced():
    assert handler_for("RNN").silencer(gs.Node("RNN", attrs={"hidden_size": 2})) is None
    assert handler_for("LSTM").silencer(gs.Node("LSTM", attrs={"hidden_size": 2, "activations": [
        "HardSigmoid", "Tanh", "Tanh"]})) is None
