"""Build exporter-like readouts around a real native recurrent op, and check a rewrite exactly."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxmod.graph
from onnxmod.errors import UnsupportedModelError
from onnxmod.graph import Model
from onnxmod.ops.base import UnitSelection
from onnxmod.rewrite import normalize

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
I64_MAX = np.iinfo(np.int64).max


class Builder:
    """Nodes and initializers of one graph; ``c(name, value)`` adds a constant and returns its name."""

    def __init__(self, seed: int = 0):
        self.nodes, self.inits = [], []
        self.rng = np.random.default_rng(seed)
        self._k = 0

    def c(self, value, name=None, dtype=None):
        arr = np.asarray(value, dtype=dtype)
        if name is None:
            self._k += 1
            name = f"c{self._k}"
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def i64(self, *v):
        return self.c(np.array(v, dtype=np.int64))

    def node(self, op, inputs, outputs=None, **attrs):
        if outputs is None:
            self._k += 1
            outputs = [f"{op.lower()}{self._k}"]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=f"n_{outputs[0]}", **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def rand(self, *shape, scale=0.5):
        return self.rng.normal(0, scale, shape).astype(np.float32)

    def recurrent(self, op, x, F, H, direction="forward", name="rnn", extra=None):
        """A native op on ``x`` ([T, B, F]); returns its output names (Y, Y_h[, Y_c])."""
        D = 2 if direction == "bidirectional" else 1
        G = GATES[op]
        ins = [x, self.c(self.rand(D, G * H, F), f"{name}_W"), self.c(self.rand(D, G * H, H), f"{name}_R"),
               self.c(self.rand(D, 2 * G * H, scale=0.3), f"{name}_B")]
        outs = [f"{name}_Y", f"{name}_Yh"] + ([f"{name}_Yc"] if op == "LSTM" else [])
        attrs = {"hidden_size": H, "direction": direction, **(extra or {})}
        if op == "GRU":
            attrs["linear_before_reset"] = 1
        self.nodes.append(helper.make_node(op, ins, outs, name=name, **attrs))
        return outs

    def model(self, out, out_shape, F, opset=17, x_shape=("batch", "time", None), extra_inputs=()):
        shape = [F if d is None else d for d in x_shape]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape), *extra_inputs]
        g = helper.make_graph(self.nodes, "m", inputs,
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
        onnx.checker.check_model(m)
        return m


def normalized(proto: onnx.ModelProto):
    """What ``Model`` does before its analysis: infer shapes, fold constants, then the rules."""
    inferred = onnx.shape_inference.infer_shapes(copy.deepcopy(proto), data_prop=True)
    graph = gs.import_onnx(inferred)
    graph.fold_constants(error_ok=True).cleanup().toposort()
    applied = normalize(graph)
    return graph, applied


def rewritten(proto: onnx.ModelProto):
    graph, applied = normalized(proto)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = proto.ir_version
    onnx.checker.check_model(out)
    return out, applied


def run(proto: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def assert_exact(proto, rewritten_proto, F, batches=(1, 3), lengths=(4, 7), seed=1):
    """Original and rewritten give the same outputs (atol 1e-6) at two batch sizes and two lengths."""
    rng = np.random.default_rng(seed)
    for b in batches:
        for t in lengths:
            x = rng.normal(0, 1, (b, t, F)).astype(np.float32)
            a, r = run(proto, x), run(rewritten_proto, x)
            assert len(a) == len(r)
            for u, v in zip(a, r):
                assert u.shape == v.shape, (b, t, u.shape, v.shape)
                np.testing.assert_allclose(u, v, atol=1e-6, rtol=0)


def refused_without_rules(proto, monkeypatch) -> str:
    """What ``Model`` makes of ``proto`` when no rule runs: the reason it refuses it, or "" when the
    unit flow follows the exporter's form as it is (the flow reads layouts by axes: many readouts
    no longer need a rule to be decomposed; the rules still make them plainer)."""
    with monkeypatch.context() as mp:
        mp.setattr(onnxmod.graph, "normalize", lambda graph: [])
        try:
            Model(proto, source="pattern.onnx")
        except UnsupportedModelError as exc:
            return str(exc)
    return ""


def accepted(proto) -> Model:
    """``Model`` loads ``proto``, finds its head and every recurrent op's unit sites."""
    m = Model(proto, source="pattern.onnx")
    assert m.head is not None and m.head.num_classes > 0
    assert m.recurrent and all(op.sites for op in m.recurrent)
    assert m.rewrites
    return m


def check_rule(proto, F, monkeypatch, expect: set[str], lengths=(4, 7), refused=True):
    """The whole contract of a rule test: refused before (unless ``refused=False``: the rule only
    makes the graph plainer), exact after, accepted after, and a fixpoint."""
    reason = refused_without_rules(proto, monkeypatch) if refused else None
    out, applied = rewritten(proto)
    assert {a.rule for a in applied} == expect, applied
    assert_exact(proto, out, F, lengths=lengths)
    graph, _ = normalized(out)  # a fixpoint: nothing left to apply on the result
    assert normalize(graph) == []
    m = accepted(proto)
    assert [(a.rule, a.nodes) for a in m.rewrites] == [(a.rule, a.nodes) for a in applied]
    assert_slicing_exact(proto, F, lengths[-1])
    return reason, applied, m


def assert_slicing_exact(proto, F, length, seed=3):
    """Removing half of each direction's units from the rewritten model equals the original
    model with those units' W/R/B rows zeroed (the decomposition's exactness, through the rules)."""
    rng = np.random.default_rng(seed)
    m = Model(proto, source="pattern.onnx")
    zeroed = copy.deepcopy(proto)
    inits = {t.name: t for t in zeroed.graph.initializer}
    sels = {}
    for op in m.recurrent:
        H, D, G = op.hidden_size, op.directions, GATES[op.op_type]
        keep = [np.sort(rng.choice(H, H // 2, replace=False)) for _ in range(D)]
        sels[op.index] = UnitSelection.from_keep(H, keep)
        node = next(n for n in zeroed.graph.node if n.name == op.name)
        for i, per in ((1, G), (2, G), (3, 2 * G)):
            arr = numpy_helper.to_array(inits[node.input[i]]).copy()
            for d in range(D):
                gone = np.setdiff1d(np.arange(H), keep[d])
                arr[d, (np.arange(per)[:, None] * H + gone[None, :]).reshape(-1)] = 0
            name = f"{node.input[i]}/zeroed_for/{node.name}"  # exporters share equal initializers
            zeroed.graph.initializer.append(numpy_helper.from_array(arr, name))
            node.input[i] = name
    m.apply_selection(sels)
    x = rng.normal(0, 1, (3, length, F)).astype(np.float32)
    want = run(zeroed, x)
    assert not np.allclose(want[0], run(proto, x)[0], atol=1e-3)  # the removed units mattered
    for u, v in zip(run(m.export(), x), want):
        np.testing.assert_allclose(u, v, atol=1e-5, rtol=0)
