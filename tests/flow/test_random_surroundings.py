"""Random graphs around a recurrence, built from the op table (layouts, per-unit ops, masks,
pooling, attention, norms, MLP and conv heads, time-major outputs), checked in onnxruntime:

* the recognized model computes what the file computes (canonicalization and normalization are
  exact, the output read batch-first);
* removing units through the unit flow (sliced, re-widened where it must) computes exactly what
  the model computes with those units' weights zeroed (the units then output exactly 0).

Random weights: this is about mechanics, not accuracy.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxmod import runtime
from onnxmod.graph import Model
from onnxmod.units import UnitSelection

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
F, T, C = 3, 6, 4

SEQUENCE_OPS = ("relu", "tanh", "sigmoid", "bias", "scale", "mask", "layernorm", "softmax_units", "cumsum",
                "expand_mask", "l2norm", "zeros_like")
POOLS = ("max", "mean", "masked_mean", "last", "attention", "sequence", "sequence_time_major", "conv_time",
         "final_state")
HEADS = ("gemm", "gemm_t", "matmul_add", "mlp", "batchnorm_gemm")


class G:
    """A graph under construction: nodes, initializers, fresh names."""

    def __init__(self, rng):
        self.rng, self.nodes, self.inits, self.k = rng, [], [], 0

    def name(self, tag):
        self.k += 1
        return f"{tag}_{self.k}"

    def const(self, value, tag="c"):
        n = self.name(tag)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def op(self, op, inputs, n_out=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs if n_out > 1 else outs[0]

    def normal(self, *shape, s=0.5):
        return (self.rng.normal(0, s, shape)).astype(np.float32)


def _recurrence(g: G, cell: str, H: int, D: int, x: str):
    Gn = GATES[cell]
    W, R = g.normal(D, Gn * H, F, s=0.6), g.normal(D, Gn * H, H, s=0.6)
    B = g.normal(D, 2 * Gn * H, s=0.3)
    attrs = {"hidden_size": H}
    if D == 2:
        attrs["direction"] = "bidirectional"
    if cell == "GRU":
        attrs["linear_before_reset"] = 1
    xt = g.op("Transpose", [x], perm=[1, 0, 2])
    outs = g.op(cell, [xt, g.const(W, "W"), g.const(R, "R"), g.const(B, "B")], n_out=3 if cell == "LSTM" else 2,
                **attrs)
    return outs[0], outs[1], (W, R, B)


def _mask(g: G, x: str):
    """[N, T, 1] float: 1 where the input's first feature is positive (a mask computed from the data)."""
    first = g.op("Slice", [x, g.const(np.array([0]), "s"), g.const(np.array([1]), "e"), g.const(np.array([2]), "a")])
    pos = g.op("Greater", [first, g.const(np.array(0.0, np.float32))])
    return g.op("Cast", [pos], to=TensorProto.FLOAT)


def _sequence_ops(g: G, h: str, U: int, ops, x: str):
    for o in ops:
        if o in ("relu", "tanh", "sigmoid"):
            h = g.op(o.capitalize(), [h])
        elif o == "bias":
            h = g.op("Add", [h, g.const(g.normal(U))])
        elif o == "scale":
            h = g.op("Mul", [g.const(g.normal(U) + 1.0), h])
        elif o == "mask":
            h = g.op("Mul", [h, _mask(g, x)])
        elif o == "layernorm":
            h = g.op("LayerNormalization", [h, g.const(g.normal(U) + 1.0), g.const(g.normal(U))], axis=-1)
        elif o == "softmax_units":
            h = g.op("Softmax", [h], axis=-1)
        elif o == "cumsum":
            h = g.op("CumSum", [h, g.const(np.array(1, np.int64))])
        elif o == "expand_mask":  # mask.expand_as(h): the mask expanded to the outputs' Shape
            h = g.op("Mul", [h, g.op("Expand", [_mask(g, x), g.op("Shape", [h])])])
        elif o == "l2norm":  # F.normalize as torch's legacy exporter writes it
            norm = g.op("Clip", [g.op("ReduceL2", [h, g.const(np.array([-1], np.int64))], keepdims=1),
                                 g.const(np.array(1e-12, np.float32))])
            h = g.op("Div", [h, g.op("Expand", [norm, g.op("Shape", [h])])])
        elif o == "zeros_like":  # torch.where(mask, h, torch.zeros_like(h))
            zeros = g.op("ConstantOfShape", [g.op("Shape", [h])],
                         value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
            h = g.op("Where", [g.op("Cast", [_mask(g, x)], to=TensorProto.BOOL), h, zeros])
    return h


def _pool(g: G, h: str, U: int, pool: str, x: str):
    """[N, T, U] -> [N, U] (or kept as a sequence)."""
    if pool == "max":
        return g.op("ReduceMax", [h, g.const(np.array([1], np.int64))], keepdims=0)
    if pool == "mean":
        return g.op("ReduceMean", [h, g.const(np.array([1], np.int64))], keepdims=0)
    if pool == "masked_mean":
        m = _mask(g, x)
        s = g.op("ReduceSum", [g.op("Mul", [h, m]), g.const(np.array([1], np.int64))], keepdims=0)
        n = g.op("ReduceSum", [m, g.const(np.array([1], np.int64))], keepdims=0)
        return g.op("Div", [s, g.op("Max", [n, g.const(np.array(1.0, np.float32))])])
    if pool == "last":
        return g.op("Gather", [h, g.const(np.array(-1, np.int64))], axis=1)
    if pool == "attention":
        score = g.op("MatMul", [g.op("Tanh", [g.op("MatMul", [h, g.const(g.normal(U, 5))])]), g.const(g.normal(5, 1))])
        a = g.op("Softmax", [score], axis=1)  # [N, T, 1]
        return g.op("ReduceSum", [g.op("Mul", [h, a]), g.const(np.array([1], np.int64))], keepdims=0)
    if pool == "conv_time":
        ht = g.op("Transpose", [h], perm=[0, 2, 1])  # [N, U, T]: the units as channels
        c = g.op("Conv", [ht, g.const(g.normal(6, U, 3)), g.const(g.normal(6))], pads=[1, 1])
        return g.op("ReduceMean", [g.op("Relu", [c]), g.const(np.array([2], np.int64))], keepdims=0)
    return h  # sequence


def _head(g: G, h: str, K: int, head: str, seq: bool):
    if head == "gemm" and not seq:
        return g.op("Gemm", [h, g.const(g.normal(K, C)), g.const(g.normal(C))])
    if head == "gemm_t" and not seq:
        return g.op("Gemm", [h, g.const(g.normal(C, K)), g.const(g.normal(C))], transB=1)
    if head == "mlp":
        z = g.op("Relu", [g.op("Add", [g.op("MatMul", [h, g.const(g.normal(K, 7))]), g.const(g.normal(7))])])
        return g.op("Add", [g.op("MatMul", [z, g.const(g.normal(7, C))]), g.const(g.normal(C))])
    if head == "batchnorm_gemm" and not seq:
        bn = g.op("BatchNormalization", [h, g.const(g.normal(K) + 1.0), g.const(g.normal(K)), g.const(g.normal(K)),
                                         g.const(np.abs(g.normal(K)) + 0.5)])
        return g.op("Gemm", [bn, g.const(g.normal(K, C)), g.const(g.normal(C))])
    return g.op("Add", [g.op("MatMul", [h, g.const(g.normal(K, C))]), g.const(g.normal(C))])


def build(seed: int, cell: str, H: int, D: int, ops, pool: str, head: str):
    g = G(np.random.default_rng(seed))
    x = "x"
    y, yh, weights = _recurrence(g, cell, H, D, x)
    U = D * H
    if pool == "final_state":  # Y_h [D, N, H] -> [N, D*H]
        h = g.op("Reshape", [g.op("Transpose", [yh], perm=[1, 0, 2]), g.const(np.array([0, -1], np.int64))])
        h = _sequence_ops(g, h, U, [o for o in ops if o not in ("mask", "cumsum", "expand_mask", "zeros_like")], x)
    else:
        yt = g.op("Transpose", [y], perm=[0, 2, 1, 3])  # [T, N, D, H]
        yr = g.op("Reshape", [yt, g.const(np.array([0, 0, -1], np.int64))])  # [T, N, U]
        h = g.op("Transpose", [yr], perm=[1, 0, 2])  # [N, T, U]
        h = _sequence_ops(g, h, U, ops, x)
        h = _pool(g, h, U, pool, x)
    seq = pool.startswith("sequence")
    K = 6 if pool == "conv_time" else U
    logits = _head(g, h, K, head, seq)
    if pool == "sequence_time_major":
        logits = g.op("Transpose", [logits], perm=[1, 0, 2])
    out_shape = [T, "N", C] if pool == "sequence_time_major" else (["N", T, C] if seq else ["N", C])
    graph = helper.make_graph(g.nodes, "surround", [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", T, F])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, out_shape)], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model, weights, yh


def zeroed(model: onnx.ModelProto, cell: str, H: int, D: int, keep: list[np.ndarray]) -> onnx.ModelProto:
    """The model with every removed unit's weights zeroed (so it outputs exactly 0 at every step)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    Gn = GATES[cell]
    node = next(n for n in m.graph.node if n.op_type == cell)
    inits = {i.name: i for i in m.graph.initializer}
    W, R, B = (numpy_helper.to_array(inits[n]).copy() for n in node.input[1:4])
    for d in range(D):
        gone = np.setdiff1d(np.arange(H), keep[d])
        rows = np.concatenate([g * H + gone for g in range(Gn)])
        W[d, rows] = 0
        R[d, rows] = 0
        R[d][:, gone] = 0
        B[d, rows] = 0
        B[d, Gn * H + rows] = 0
    for n, a in zip(node.input[1:4], (W, R, B)):
        inits[n].CopyFrom(numpy_helper.from_array(a, n))
    return m


def _logits(model: Model, x: np.ndarray, selection=None) -> np.ndarray:
    m = model.fresh()
    if selection is not None:
        m.apply_selection(selection)
    out = m.head.output
    out.shape = None
    proto = m.export(outputs=[out])
    onnx.checker.check_model(proto, full_check=True)
    return runtime.session(proto).run(None, {m.input.name: x})[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), cell=st.sampled_from(sorted(GATES)), H=st.integers(3, 6), D=st.sampled_from([1, 2]),
       ops=st.lists(st.sampled_from(SEQUENCE_OPS), max_size=3), pool=st.sampled_from(POOLS),
       head=st.sampled_from(HEADS))
def test_sliced_equals_zeroed_whatever_surrounds_the_recurrence(seed, cell, H, D, ops, pool, head):
    proto, _, _ = build(seed, cell, H, D, ops, pool, head)
    x = np.random.default_rng(seed + 1).normal(0, 1, (5, T, F)).astype(np.float32)
    model = Model(proto, source="surround.onnx")
    # the recognized model computes what the file computes (read batch-first)
    got = _logits(model, x)
    want = runtime.session(proto).run(None, {"x": x})[0]
    if pool == "sequence_time_major":
        want = want.transpose(1, 0, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # removing units = zeroing their weights
    rng = np.random.default_rng(seed + 2)
    keep = [np.sort(rng.choice(H, size=int(rng.integers(1, H)), replace=False)) for _ in range(D)]
    sel = {model.recurrent[0].index: UnitSelection.from_keep(H, keep)}
    sliced = _logits(model, x, sel)
    reference = _logits(Model(zeroed(proto, cell, H, D, keep), source="zeroed.onnx"), x)
    np.testing.assert_allclose(sliced, reference, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("ops,pool", [((), "max"), ((), "masked_mean"), ((), "attention"), (("bias",), "mean"),
                                      (("layernorm",), "last"), ((), "sequence_time_major")])
def test_what_the_flow_follows_shrinks_the_head(ops, pool):
    """Pooling, masks and attention are followed: the head's input rows are sliced (smaller than
    the model); only what cannot be followed exactly (a layer norm over the units) is re-widened."""
    proto, _, _ = build(3, "LSTM", 6, 2, list(ops), pool, "matmul_add" if pool.startswith("sequence") else "gemm")
    model = Model(proto, source="surround.onnx")
    kinds = {s.kind for s in model.sites}
    if "layernorm" in ops:
        assert "widen" in kinds and any("LayerNormalization" in w for w in model.widened())
    else:
        assert "widen" not in kinds and "weight" in kinds, model.widened()
