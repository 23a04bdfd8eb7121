"""A small exporter for cells written in the tests: a step function over ONNX ops, exported the two
ways torch writes a scripted cell (a ``Loop`` whose body reads the weights from the outer scope and
stacks its outputs with ``SequenceInsert``/``ConcatFromSequence``; or a chain unrolled step by step
with ``Gather(x, t)``, ``Unsqueeze`` and ``Concat``) or the way tf2onnx writes one (a batch-major
``Scan`` whose body is the cell), and a head fit by least squares on the last
step's output (an echo-state model: the cell's weights are the seeded random ones it was given).

A cell is ``step(o, x_t, states) -> (new_states, y_t)``: ``o`` builds nodes (``o.op``), ``o.w(name)``
names one of the cell's weights.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxmod import runtime


class Ops:
    def __init__(self, prefix: str, weights: dict):
        self.prefix, self.weights, self.nodes, self.consts, self.n = prefix, weights, [], [], 0

    def name(self, tag: str) -> str:
        self.n += 1
        return f"{self.prefix}/{tag}_{self.n}"

    def w(self, key: str) -> str:
        return f"cell.{key}"

    def c(self, value, dtype=np.float32) -> str:
        out = self.name("const")
        value = numpy_helper.from_array(np.asarray(value, dtype))
        self.nodes.append(helper.make_node("Constant", [], [out], value=value))
        return out

    def op(self, op_type: str, *inputs, n_out: int = 1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs


def _read_step(o, outer, t: int, T: int, reads: str, split_cache: dict):
    """Step ``t`` of ``x`` ``[batch, T, I]`` the way an exporter reads it (``reads``)."""
    if reads == "gather":
        return o.op("Gather", "x", o.c(t, np.int64), axis=1)
    if reads == "slice":
        return o.op("Squeeze", o.op("Slice", "x", o.c([t], np.int64), o.c([t + 1], np.int64), o.c([1], np.int64)),
                    o.c([1], np.int64))
    if reads == "split":  # one Split into T steps of 1, each squeezed
        if "parts" not in split_cache:
            split_cache["parts"] = outer.op("Split", "x", outer.c([1] * T, np.int64), n_out=T, axis=1)
        return o.op("Squeeze", split_cache["parts"][t], o.c([1], np.int64))
    if reads == "sequence":  # SplitToSequence without sizes (keepdims=0), SequenceAt per step
        if "seq" not in split_cache:
            split_cache["seq"] = outer.op("SplitToSequence", "x", axis=1, keepdims=0)
        return o.op("SequenceAt", split_cache["seq"], o.c(t, np.int64))
    raise ValueError(reads)


def export(step, weights: dict, widths: list[int], I: int, form: str, T: int, head=None, opset: int = 17,
           reads: str = "gather", copies: bool = False):
    """The cell over ``x`` ``[batch, T, I]`` (``T`` dynamic for ``loop``), last step's output through
    ``head`` (``(W [C, Wy], b [C])``) as ``logits``, or the last step's output itself as ``y``.
    Unrolled: ``reads`` is how each step reads ``x`` (``gather``, ``slice`` + Squeeze, ``split`` +
    Squeeze, ``sequence``: SplitToSequence + SequenceAt); ``copies`` gives every step its own copy of
    the weights (as torch's dynamo exporter writes them)."""
    outer = Ops("outer", weights)
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), f"cell.{k}") for k, v in weights.items()]
    shape = outer.op("Shape", "x")
    batch = outer.op("Unsqueeze", outer.op("Gather", shape, outer.c(0, np.int64)), outer.c([0], np.int64))
    zeros = []
    for w in widths:
        dims = outer.op("Concat", batch, outer.c([w], np.int64), axis=0)
        if form == "loop":
            zeros.append(outer.op("ConstantOfShape", dims, value=numpy_helper.from_array(np.zeros(1, np.float32))))
        else:
            zeros.append(outer.op("Expand", outer.c(0.0), dims))
    if form == "loop":
        body = Ops("body", weights)
        it, cond, seq = "it", "cond", "seq_in"
        body.step_index = it  # what a cell that reads the loop counter reads
        states = [f"state{k}" for k in range(len(widths))]
        x_t = body.op("Gather", "x", it, axis=1)
        new, y = step(body, x_t, states)
        cond_out = body.op("Identity", cond)
        seq_out = body.op("SequenceInsert", seq, y)
        outs = [body.op("Identity", s) for s in new]
        g = helper.make_graph(
            body.nodes, "cell_body",
            [helper.make_tensor_value_info(it, TensorProto.INT64, []),
             helper.make_tensor_value_info(cond, TensorProto.BOOL, []),
             *[helper.make_tensor_value_info(s, TensorProto.FLOAT, None) for s in states],
             helper.make_tensor_sequence_value_info(seq, TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
             *[helper.make_tensor_value_info(s, TensorProto.FLOAT, None) for s in outs],
             helper.make_tensor_sequence_value_info(seq_out, TensorProto.FLOAT, None)])
        steps_ = outer.op("Gather", shape, outer.c(1, np.int64))
        empty = outer.op("SequenceEmpty", dtype=TensorProto.FLOAT)
        loop_outs = outer.op("Loop", steps_, outer.c(True, np.bool_), *zeros, empty, n_out=len(widths) + 1, body=g)
        stacked = outer.op("ConcatFromSequence", loop_outs[-1], axis=1, new_axis=1)
    elif form == "scan":  # tf2onnx's form: a batch-major Scan whose body is the cell
        body = Ops("body", weights)
        states = [f"state{k}" for k in range(len(widths))]
        new, y = step(body, "x_t", states)
        outs = [body.op("Identity", s) for s in new] + [body.op("Identity", y)]
        g = helper.make_graph(body.nodes, "cell_body",
                              [*[helper.make_tensor_value_info(s, TensorProto.FLOAT, ["batch", w])
                                 for s, w in zip(states, widths)],
                               helper.make_tensor_value_info("x_t", TensorProto.FLOAT,
                                                                                                 ["batch", I])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs])
        scan_outs = outer.op("Scan", *zeros, "x", n_out=len(widths) + 1, body=g, num_scan_inputs=1,
                             scan_input_axes=[1], scan_output_axes=[1])
        stacked = scan_outs[-1]
    else:
        states = zeros
        ys, cache = [], {}
        for t in range(T):
            o = Ops(f"step{t}", weights)
            if copies:
                o.w = lambda key, t=t: f"cell.{key}.copy{t}"
                inits += [numpy_helper.from_array(np.asarray(v, np.float32), f"cell.{k}.copy{t}")
                          for k, v in weights.items()]
            x_t = _read_step(o, outer, t, T, reads, cache)
            states, y = step(o, x_t, states)
            ys.append(o.op("Unsqueeze", y, o.c([1], np.int64)))
            outer.nodes += o.nodes
        stacked = outer.op("Concat", *ys, axis=1)
    last = outer.op("Gather", stacked, outer.c(-1, np.int64), axis=1)
    outputs = []
    if head is None:
        outer.nodes.append(helper.make_node("Identity", [last], ["y"]))
        outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    else:
        W, b = head
        inits += [numpy_helper.from_array(W.astype(np.float32), "head.W"),
                  numpy_helper.from_array(b.astype(np.float32), "head.b")]
        outer.nodes.append(helper.make_node("Gemm", [last, "head.W", "head.b"], ["logits"], transB=1, name="head"))
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(b)]))
    graph = helper.make_graph(outer.nodes, f"cell_{form}", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["batch", T if form == "unrolled" else "seq", I])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def fit_head(step, weights, widths, data, ridge: float = 1e-2):
    """Least-squares head on the last step's output over the training split (one-hot targets)."""
    x, y = data["x_train"], data["y_train"]
    T, I = x.shape[1], x.shape[2]
    feats = runtime.session(export(step, weights, widths, I, "loop", T)).run(None, {"x": x})[0].astype(np.float64)
    F = np.concatenate([feats, np.ones((len(feats), 1))], axis=1)
    C = int(y.max()) + 1
    Y = np.eye(C)[y]
    coef = np.linalg.solve(F.T @ F + ridge * np.eye(F.shape[1]), F.T @ Y)
    return coef[:-1].T.copy(), coef[-1].copy()
