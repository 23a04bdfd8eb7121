"""Unrolled modules (per-step concerns) against a numpy reference of per-step unit removal."""
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from builders import build, random_stack
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxmod import runtime
from onnxmod.concern import Concern
from onnxmod.graph import Model
from onnxmod.ops import handler_for
from onnxmod.unrolled import apply_unrolled

CELLS = [("LSTM", 0, False), ("GRU", 0, False), ("GRU", 1, False), ("RNN", 0, False), ("RNN", 0, True)]


def reference(proto, spec, x, keeps, semantics="state", unions=None):
    """numpy: every layer run step by step; ``state``: the state is masked by the step's keep mask;
    ``output``: the layer runs unmasked and only what the next layer / the head read is masked."""
    g = gs.import_onnx(proto)
    nodes = [n for n in g.nodes if handler_for(n.op)]
    seq = x.transpose(1, 0, 2).astype(np.float64)
    unions = unions or [k.any(axis=0) for k in keeps]
    for node, L, keep, union in zip(nodes, spec.layers, keeps, unions):
        H = L.hidden
        masks = [keep[:, d * H:(d + 1) * H].astype(np.float64) for d in range(L.directions)]
        if semantics == "state":
            Y = handler_for(node.op).run_numpy(node, seq, masks=masks)["Y"]  # [T, D, B, H]
        else:  # units never kept (at any traced step) are removed outright; the others have their outputs cut
            um = [np.broadcast_to(union[d * H:(d + 1) * H], m.shape) for d, m in enumerate(masks)]
            Y = handler_for(node.op).run_numpy(node, seq, masks=um)["Y"] * np.stack(masks, axis=1)[:, :, None, :]
        seq = Y.transpose(0, 2, 1, 3).reshape(Y.shape[0], Y.shape[2], -1)
    bf = seq.transpose(1, 0, 2)
    if spec.many_output:
        return bf @ spec.head_w + spec.head_b
    return bf[:, -1] @ spec.head_w.T + spec.head_b


@st.composite
def cases(draw):
    op, lbr, relu = draw(st.sampled_from(CELLS))
    layers, hidden = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    directions, many = draw(st.sampled_from([1, 2])), draw(st.booleans())
    T = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    spec = random_stack(rng, op, layers, hidden, directions, many_output=many, relu=relu, linear_before_reset=lbr)
    p = draw(st.sampled_from([0.3, 0.7, 1.0]))
    keeps = [rng.random((T, hidden * directions)) < p for _ in range(layers)]
    return spec, keeps, T, rng


@settings(max_examples=40, deadline=None)
@given(cases(), st.sampled_from(["output", "state"]))
def test_unrolled_graph_matches_numpy_reference(case, semantics):
    spec, keeps, T, rng = case
    proto = build(spec)
    m = Model(proto)
    apply_unrolled(m, Concern(0, "c", "unrolled", dict(enumerate(keeps))), semantics)
    out = m.export()
    onnx.checker.check_model(out, full_check=True)
    sess = runtime.session(out)
    for length in sorted({T, max(1, T - 2)}):  # any length up to the traced one
        x = rng.normal(0, 1, (3, length, spec.features)).astype(np.float32)
        got = sess.run(None, {"x": x})[0]
        want = reference(proto, spec, x, [k[:length] for k in keeps], semantics, [k.any(axis=0) for k in keeps])
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-6)


def test_all_kept_unrolled_equals_original():
    rng = np.random.default_rng(1)
    spec = random_stack(rng, "LSTM", 2, 4, 2, many_output=True)
    proto = build(spec)
    m = Model(proto)
    apply_unrolled(m, Concern(0, "c", "unrolled", {0: np.ones((5, 8), bool), 1: np.ones((5, 8), bool)}), "state")
    x = rng.normal(0, 1, (2, 5, spec.features)).astype(np.float32)
    np.testing.assert_allclose(runtime.session(m.export()).run(None, {"x": x})[0],
                               runtime.session(proto).run(None, {"x": x})[0], atol=1e-5)


def test_units_never_kept_are_removed_physically():
    rng = np.random.default_rng(2)
    spec = random_stack(rng, "GRU", 1, 6, 1, many_output=True)
    keep = np.zeros((4, 6), bool)
    keep[:, [1, 4]] = True
    keep[2, 5] = True
    m = Model(build(spec))
    apply_unrolled(m, Concern(0, "c", "unrolled", {0: keep}), "state")
    scans = [n for n in m.graph.nodes if n.op == "Scan"]
    assert len(scans) == 1
    assert m.graph.nodes and all(n.op != "GRU" for n in m.graph.nodes)
    h = [t for t in scans[0].attrs["body"].inputs if t.name.endswith("h_in")][0]
    assert h.shape[-1] == 3  # units 1, 4, 5 survive of 6
