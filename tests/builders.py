"""Small ONNX models built directly with onnx.helper, for tests about mechanics.

``stack_model`` builds the layout torch's exporter emits: batch-first input, Transpose to
sequence-major, k recurrent ops joined by Squeeze (one direction) or Transpose+Reshape (two),
then a Gemm on the last step (one output) or MatMul+Add on every step (many outputs). The spec
it returns records every weight, so a test can zero units independently of onnxmod's code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass
class LayerSpec:
    op: str
    hidden: int
    directions: int
    W: np.ndarray
    R: np.ndarray
    B: np.ndarray
    attrs: dict = field(default_factory=dict)


@dataclass
class StackSpec:
    features: int
    layers: list[LayerSpec]
    classes: int
    head_w: np.ndarray  # [C, K] (Gemm transB=1) or [K, C] (MatMul)
    head_b: np.ndarray
    many_output: bool
    bi_cat: bool = False  # one-output, bidirectional last layer: cat(y[:, -1, :H], y[:, 0, H:]) as torch does


def random_stack(rng: np.random.Generator, op: str, layers: int, hidden: int, directions: int,
                 features: int = 5, classes: int = 4, many_output: bool = False, relu: bool = False,
                 linear_before_reset: int = 1, scale: float = 0.6) -> StackSpec:
    specs = []
    inp = features
    G = GATES[op]
    for _ in range(layers):
        W = rng.normal(0, scale, (directions, G * hidden, inp)).astype(np.float32)
        R = rng.normal(0, scale, (directions, G * hidden, hidden)).astype(np.float32)
        B = rng.normal(0, 0.3, (directions, 2 * G * hidden)).astype(np.float32)
        attrs = {"hidden_size": hidden}
        if directions == 2:
            attrs["direction"] = "bidirectional"
        if op == "GRU":
            attrs["linear_before_reset"] = linear_before_reset
        if op == "RNN" and relu:
            attrs["activations"] = ["Relu"] * directions
        specs.append(LayerSpec(op, hidden, directions, W, R, B, attrs))
        inp = hidden * directions
    K = inp
    head_w = rng.normal(0, 1, (K, classes) if many_output else (classes, K)).astype(np.float32)
    head_b = rng.normal(0, 0.5, (classes,)).astype(np.float32)
    return StackSpec(features, specs, classes, head_w, head_b, many_output)


def build(spec: StackSpec, opset: int = 17) -> onnx.ModelProto:
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    nodes.append(helper.make_node("Transpose", ["x"], ["x_t"], perm=[1, 0, 2], name="to_seq"))
    cur = "x_t"
    for i, L in enumerate(spec.layers):
        ins = [cur, const(f"W{i}", L.W), const(f"R{i}", L.R), const(f"B{i}", L.B)]
        outs = [f"Y{i}", f"Yh{i}"] + ([f"Yc{i}"] if L.op == "LSTM" else [])
        nodes.append(helper.make_node(L.op, ins, outs, name=f"rnn{i}", **L.attrs))
        if L.directions == 1:
            nodes.append(helper.make_node("Squeeze", [f"Y{i}", const(f"ax{i}", np.array([1]))], [f"S{i}"],
                                          name=f"squeeze{i}"))
        else:
            nodes.append(helper.make_node("Transpose", [f"Y{i}"], [f"T{i}"], perm=[0, 2, 1, 3], name=f"tr{i}"))
            nodes.append(helper.make_node("Reshape", [f"T{i}", const(f"shape{i}", np.array([0, 0, -1]))],
                                          [f"S{i}"], name=f"reshape{i}"))
        cur = f"S{i}"
    nodes.append(helper.make_node("Transpose", [cur], ["bf"], perm=[1, 0, 2], name="to_batch"))
    if spec.many_output:
        nodes.append(helper.make_node("MatMul", ["bf", const("head_w", spec.head_w)], ["mm"], name="head"))
        nodes.append(helper.make_node("Add", [const("head_b", spec.head_b), "mm"], ["logits"], name="head_bias"))
        out_shape = ["batch", "seq", spec.classes]
    else:
        if spec.bi_cat and spec.layers[-1].directions == 2:
            H = spec.layers[-1].hidden
            nodes.append(helper.make_node("Slice", ["bf", const("s0", np.array([0])), const("s1", np.array([H])),
                                                    const("sax", np.array([2]))], ["fw_all"], name="fw_slice"))
            nodes.append(helper.make_node("Gather", ["fw_all", const("lastf", np.array(-1))], ["fw"], axis=1,
                                          name="fw_last"))
            nodes.append(helper.make_node("Slice", ["bf", const("b0", np.array([H])), const("b1", np.array([2 * H])),
                                                    const("bax", np.array([2]))], ["bw_all"], name="bw_slice"))
            nodes.append(helper.make_node("Gather", ["bw_all", const("firstb", np.array(0))], ["bw"], axis=1,
                                          name="bw_first"))
            nodes.append(helper.make_node("Concat", ["fw", "bw"], ["last_step"], axis=-1, name="cat"))
        else:
            nodes.append(helper.make_node("Gather", ["bf", const("last", np.array(-1))], ["last_step"], axis=1,
                                          name="last"))
        nodes.append(helper.make_node("Gemm", ["last_step", const("head_w", spec.head_w),
                                               const("head_b", spec.head_b)], ["logits"], transB=1, name="head"))
        out_shape = ["batch", spec.classes]
    graph = helper.make_graph(
        nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", spec.features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def zeroed(spec: StackSpec, keep: list[list[np.ndarray]]) -> StackSpec:
    """The same model with removed units' weights zeroed (``keep[layer][direction]``: bool [H]).

    Removed unit j of direction d: its rows in W, R and both bias halves for every gate, its column
    in R, and its input column (``d * H + j``) in the next layer or head.
    """
    import copy

    s = copy.deepcopy(spec)
    for i, L in enumerate(s.layers):
        G, H = GATES[L.op], L.hidden
        for d in range(L.directions):
            gone = np.flatnonzero(~keep[i][d])
            rows = np.concatenate([g * H + gone for g in range(G)]) if gone.size else np.array([], int)
            L.W[d][rows] = 0
            L.R[d][rows] = 0
            L.R[d][:, gone] = 0
            L.B[d][np.concatenate([rows, G * H + rows])] = 0
            cols = d * H + gone
            if i + 1 < len(s.layers):
                s.layers[i + 1].W[:, :, cols] = 0
            elif s.many_output:
                s.head_w[cols, :] = 0
            else:
                s.head_w[:, cols] = 0
    return s


def build_encdec(enc: LayerSpec, dec: LayerSpec, head_w: np.ndarray, head_b: np.ndarray, features: int,
                 state_mask: np.ndarray | None = None, opset: int = 17) -> onnx.ModelProto:
    """Encoder op -> its final state (Y_h, and Y_c for LSTM) initialises a decoder op -> MatMul head.

    Inputs ``src`` and ``tgt`` float ``[batch, seq, features]``; output ``logits`` ``[batch, T, C]``.
    ``state_mask`` ``[D, 1, H]`` multiplies the state on its way (the zeroed reference of a removed
    decoder unit)."""
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    nodes.append(helper.make_node("Transpose", ["src"], ["src_t"], perm=[1, 0, 2], name="src_seq"))
    nodes.append(helper.make_node("Transpose", ["tgt"], ["tgt_t"], perm=[1, 0, 2], name="tgt_seq"))
    lstm = enc.op == "LSTM"
    enc_outs = ["eY", "eH"] + (["eC"] if lstm else [])
    nodes.append(helper.make_node(enc.op, ["src_t", const("eW", enc.W), const("eR", enc.R), const("eB", enc.B)],
                                  enc_outs, name="encoder", **enc.attrs))
    states = ["eH"] + (["eC"] if lstm else [])
    if state_mask is not None:
        const("mask", state_mask.astype(np.float32))
        for s in list(states):
            nodes.append(helper.make_node("Mul", [s, "mask"], [s + "m"], name=s + "_mask"))
        states = [s + "m" for s in states]
    ins = ["tgt_t", const("dW", dec.W), const("dR", dec.R), const("dB", dec.B), ""] + states
    nodes.append(helper.make_node(dec.op, ins, ["dY", "dH"] + (["dC"] if lstm else []), name="decoder", **dec.attrs))
    if dec.directions == 1:
        nodes.append(helper.make_node("Squeeze", ["dY", const("ax", np.array([1]))], ["dS"], name="squeeze"))
    else:
        nodes.append(helper.make_node("Transpose", ["dY"], ["dT"], perm=[0, 2, 1, 3], name="tr"))
        nodes.append(helper.make_node("Reshape", ["dT", const("shape", np.array([0, 0, -1]))], ["dS"], name="reshape"))
    nodes.append(helper.make_node("Transpose", ["dS"], ["bf"], perm=[1, 0, 2], name="to_batch"))
    nodes.append(helper.make_node("MatMul", ["bf", const("head_w", head_w)], ["mm"], name="head"))
    nodes.append(helper.make_node("Add", ["mm", const("head_b", head_b)], ["logits"], name="head_bias"))
    graph = helper.make_graph(
        nodes, "encdec",
        [helper.make_tensor_value_info("src", TensorProto.FLOAT, ["batch", "s", features]),
         helper.make_tensor_value_info("tgt", TensorProto.FLOAT, ["batch", "t", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "t", head_w.shape[1]])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
