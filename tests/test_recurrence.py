"""Recurrence front-ends behind one contract, against onnxruntime.

For every committed model of another exporter or form (``fixtures/exporters``, ``fixtures/cells``):
the recognized recurrence computes what the model's own graph computes on real rows, and removing
units through it equals zeroing them (so a module equals the original model with those units
removed). Hand-built bodies check the refusals: a miss says why, as data, naming the node.
"""
import glob
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxmod import runtime
from onnxmod.errors import UnsupportedModelError
from onnxmod.graph import Model
from onnxmod.recurrence import recognize, verify_forms
from onnxmod.units import UnitSelection

ROOT = Path(__file__).resolve().parent.parent
DATA = {"brown_genre": ROOT / "fixtures/brown_genre/data.npz", "brown_pos": ROOT / "fixtures/brown_pos/data.npz",
        "digits": ROOT / "fixtures/digits/data.npz", "math_topics": ROOT / "fixtures/math_topics/data.npz",
        "digits_pixels": ROOT / "fixtures/digits_pixels/data.npz"}

# model file -> (form of each recurrence, task)
RECOGNIZED = {
    "exporters/torch_dynamo/brown_genre_lstm1.onnx": (["native"], "brown_genre"),
    "exporters/torch_dynamo/brown_genre_gru1.onnx": (["native"], "brown_genre"),
    "exporters/torch_dynamo/brown_genre_lstm2.onnx": (["native", "native"], "brown_genre"),
    "exporters/torch_dynamo/brown_genre_lstm1_bi.onnx": (["native"], "brown_genre"),
    "exporters/torch_dynamo/brown_genre_rnn_tanh1.onnx": (["unrolled"], "brown_genre"),
    "exporters/torch_dynamo/brown_pos_lstm1.onnx": (["native"], "brown_pos"),
    "exporters/tf2onnx_tf_keras/brown_genre_gru_hard_sigmoid.onnx": (["loop"], "brown_genre"),
    "exporters/tf2onnx_tf_keras/brown_genre_lstm_hard_sigmoid.onnx": (["native"], "brown_genre"),
    "exporters/tf2onnx_keras3/brown_genre_lstm.onnx": (["native"], "brown_genre"),
    "exporters/tf2onnx_keras3/brown_genre_gru.onnx": (["loop"], "brown_genre"),
    "exporters/tf2onnx_keras3/brown_genre_simplernn.onnx": (["loop"], "brown_genre"),
    "exporters/tf2onnx_keras3/brown_genre_bilstm.onnx": (["native"], "brown_genre"),
    "exporters/tf2onnx_keras3/brown_genre_bigru.onnx": (["loop"], "brown_genre"),
    "exporters/tf2onnx_keras3/brown_genre_gru_mask.onnx": (["loop"], "brown_genre"),
    "exporters/tf2onnx_keras3/brown_genre_lstm_mask.onnx": (["loop"], "brown_genre"),
    "exporters/tf2onnx_keras3/brown_pos_lstm_dense.onnx": (["native"], "brown_pos"),
    "exporters/tf2onnx_keras3/brown_pos_lstm_timedistributed.onnx": (["native"], "brown_pos"),
    "cells/digits/grucell1_loop.onnx": (["loop"], "digits"),
    "cells/digits/indrnn1_loop.onnx": (["loop"], "digits"),
    "cells/digits/grucell1_unrolled.onnx": (["unrolled"], "digits"),
    "cells/digits/indrnn1_unrolled.onnx": (["unrolled"], "digits"),
    "cells/digits_pixels/indrnn1_unrolled.onnx": (["unrolled"], "digits_pixels"),
}


def _rows(task, n=64):
    return np.load(DATA[task])["x_test"][:n]


@pytest.mark.parametrize("rel", sorted(RECOGNIZED))
def test_recognized_recurrence_computes_what_the_model_computes(rel):
    forms, task = RECOGNIZED[rel]
    model = Model.load(ROOT / "fixtures" / rel)
    assert [op.form for op in model.recurrent] == forms
    checked = verify_forms(model, _rows(task))
    if set(forms) != {"native"}:
        assert checked["max_scaled_difference"] <= 1e-4 and "logits" in checked["compared"]
        assert len(checked["compared"]) >= 2  # the model's own states were compared too, not only its outputs
    x = _rows(task)
    want = runtime.session(model.original).run(None, {model.input.name: x})[0] if set(forms) == {"native"} else None
    got = runtime.session(model.runnable).run(None, {model.input.name: x})[0]
    if want is not None:
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def _zeroed(model: Model, keep: dict, T: int = 64) -> onnx.ModelProto:
    """The model with the removed units' weights zeroed in its (native) recurrences: those units
    output exactly 0 at every step from a zero state. A general cell has no gate rows: its removed
    units are held at 0 where the step reads them (``mask_states`` with a constant mask)."""
    m = model.fresh()
    for op in m.recurrent:
        if getattr(op, "flow", None) is not None:
            mask = np.isin(np.arange(op.hidden_size), keep[op.index][0]).astype(np.float32)
            op.mask_states(m.graph, [np.tile(mask, (T, 1))], f"zeroed/{op.index}", m.source)
            continue
        Wt, Rt, Bt = (a.copy() for a in op.weights())
        H, G = op.hidden_size, op.cell.num_gates
        for d in range(op.directions):
            gone = np.setdiff1d(np.arange(H), keep[op.index][d])
            rows = np.concatenate([g * H + gone for g in range(G)])
            Wt[d][rows] = 0
            Rt[d][rows] = 0
            Rt[d][:, gone] = 0
            Bt[d][rows] = 0
            Bt[d][G * H + rows] = 0
        for i, v in ((1, Wt), (2, Rt), (3, Bt)):
            op.handler._set(op.node, i, v, f"zeroed{i}")
    return m.export()


@pytest.mark.parametrize("rel", sorted(RECOGNIZED))
def test_removing_units_through_any_form_equals_zeroing_them(rel):
    _, task = RECOGNIZED[rel]
    model = Model.load(ROOT / "fixtures" / rel)
    x = _rows(task, 32)
    rng = np.random.default_rng(3)
    for _ in range(2):
        keep = {op.index: [np.flatnonzero(rng.random(op.hidden_size) < 0.6) for _ in range(op.directions)]
                for op in model.recurrent}
        m = model.fresh()
        m.apply_selection({i: UnitSelection.from_keep(model.recurrent[i].hidden_size, k) for i, k in keep.items()})
        got = runtime.session(m.export()).run(None, {model.input.name: x})[0]
        want = runtime.session(_zeroed(model, keep)).run(None, {model.input.name: x})[0]
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
        assert sum(op.hidden_size for op in m.recurrent) < sum(op.hidden_size for op in model.recurrent)


# ---- hand-built Loop bodies: what is recognized, and what is refused with its reason ------------

def _loop_model(body_nodes, body_inits, H=3, I=2, C=2, extra_state=False):
    """x [T, N, I] read step by step by a Loop (the step index as its iteration number); the
    body's new state h' is stacked as a scan output; the head reads the final state."""
    rng = np.random.default_rng(0)
    b_in = [helper.make_tensor_value_info("it", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", H])]
    b_out = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("h_new", TensorProto.FLOAT, ["N", H])]
    if extra_state:
        b_in.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", H]))
        b_out.append(helper.make_tensor_value_info("c_new", TensorProto.FLOAT, ["N", H]))
    b_out.append(helper.make_tensor_value_info("y_t", TensorProto.FLOAT, ["N", H]))
    nodes = [helper.make_node("Identity", ["cond"], ["cond_out"]),
             helper.make_node("Gather", ["x", "it"], ["x_t"], axis=0), *body_nodes,
             helper.make_node("Identity", ["h_new"], ["y_t"])]
    body = helper.make_graph(nodes, "body", b_in, b_out, body_inits)
    outer = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero_i"], ["T"], axis=0),
             helper.make_node("Shape", ["x"], ["shape2"]),
             helper.make_node("Gather", ["shape2", "one_i"], ["N"], axis=0),
             helper.make_node("Unsqueeze", ["N", "ax0"], ["N1"]),
             helper.make_node("Concat", ["N1", "H1"], ["hshape"], axis=0),
             helper.make_node("ConstantOfShape", ["hshape"], ["h0"]),
             helper.make_node("Loop", ["T", "true", "h0"] + (["h0"] if extra_state else []),
                              ["h_T"] + (["c_T"] if extra_state else []) + ["Y"], body=body),
             helper.make_node("Gemm", ["h_T", "head"], ["logits"], transB=1)]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero_i"),
             numpy_helper.from_array(np.array(1, np.int64), "one_i"),
             numpy_helper.from_array(np.array([0], np.int64), "ax0"),
             numpy_helper.from_array(np.array([H], np.int64), "H1"),
             numpy_helper.from_array(np.array(True), "true"),
             numpy_helper.from_array(rng.normal(0, 1, (C, H)).astype(np.float32), "head")]
    g = helper.make_graph(outer, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, I])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, C])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def _w(name, shape, seed):
    return numpy_helper.from_array(np.random.default_rng(seed).normal(0, 0.7, shape).astype(np.float32), name)


def test_a_keras_style_gru_loop_is_lifted_and_exact():
    """Keras' GRU as tf2onnx writes it (gates z, r, h; biases for the input and the recurrent
    product; h' = z h + (1 - z) n), on random weights: lifted to a native GRU that equals the loop."""
    H, I = 3, 2
    nodes = [helper.make_node("MatMul", ["x_t", "Wk"], ["xw"]), helper.make_node("Add", ["xw", "bx"], ["xp"]),
             helper.make_node("Split", ["xp"], ["xz", "xr", "xh"], axis=-1, num_outputs=3),
             helper.make_node("MatMul", ["h", "Uk"], ["hu"]), helper.make_node("Add", ["hu", "bh"], ["hp"]),
             helper.make_node("Split", ["hp"], ["hz", "hr", "hh"], axis=-1, num_outputs=3),
             helper.make_node("Add", ["xz", "hz"], ["zp"]), helper.make_node("Sigmoid", ["zp"], ["z"]),
             helper.make_node("Add", ["xr", "hr"], ["rp"]), helper.make_node("Sigmoid", ["rp"], ["r"]),
             helper.make_node("Mul", ["r", "hh"], ["rh"]), helper.make_node("Add", ["xh", "rh"], ["np_"]),
             helper.make_node("Tanh", ["np_"], ["n"]),
             helper.make_node("Mul", ["z", "h"], ["zh"]), helper.make_node("Sub", ["one", "z"], ["omz"]),
             helper.make_node("Mul", ["omz", "n"], ["on"]), helper.make_node("Add", ["zh", "on"], ["h_new"])]
    inits = [_w("Wk", (I, 3 * H), 1), _w("Uk", (H, 3 * H), 2), _w("bx", (3 * H,), 3), _w("bh", (3 * H,), 4),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    proto = _loop_model(nodes, inits, H, I)
    model = Model(proto, source="keras_gru.onnx")
    (op,) = model.recurrent
    assert (op.form, op.op_type, op.hidden_size) == ("loop", "GRU", H)
    x = np.random.default_rng(9).normal(0, 1, (5, 4, I)).astype(np.float32)  # [T, N, I]
    want = runtime.session(proto).run(None, {"x": x})[0]
    got = runtime.session(model.runnable).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_cell_no_native_op_computes_is_a_general_cell():
    """h' = tanh(x W) * h is none of the native cells: it runs as a general cell (a Scan of its
    step), computing what the loop computes."""
    H, I = 3, 2
    nodes = [helper.make_node("MatMul", ["x_t", "W"], ["xw"]), helper.make_node("Tanh", ["xw"], ["t"]),
             helper.make_node("Mul", ["t", "h"], ["h_new"])]
    proto = _loop_model(nodes, [_w("W", (I, H), 1)], H, I)
    graph = gs.import_onnx(proto)
    found, misses = recognize(graph, "odd.onnx")
    assert not misses and [(r.form, r.op_type, r.hidden_size) for r in found] == [("loop", "Cell", H)]
    model = Model(proto, source="odd.onnx")
    x = np.random.default_rng(9).normal(0, 1, (5, 4, I)).astype(np.float32)  # [T, N, I]
    np.testing.assert_allclose(runtime.session(model.runnable).run(None, {"x": x})[0],
                               runtime.session(proto).run(None, {"x": x})[0], atol=1e-6)


def test_a_two_state_loop_that_is_no_lstm_ties_its_states_into_units():
    """h' = tanh(x W + c), c' = x W + c: no LSTM, but a general cell whose h and c are tied position by
    position (element-wise): 3 units, each owning one position of both."""
    H, I = 3, 2
    nodes = [helper.make_node("MatMul", ["x_t", "W"], ["xw"]), helper.make_node("Add", ["xw", "c"], ["s"]),
             helper.make_node("Tanh", ["s"], ["h_new"]), helper.make_node("Identity", ["s"], ["c_new"])]
    proto = _loop_model(nodes, [_w("W", (I, H), 1)], H, I, extra_state=True)
    (op,) = Model(proto, source="two.onnx").recurrent
    assert (op.op_type, op.hidden_size) == ("Cell", H)
    assert [list(op.flow.state_labels(k)) for k in range(2)] == [[0, 1, 2], [0, 1, 2]]


def test_a_keras_style_lstm_loop_is_lifted_and_exact():
    """Keras' LSTM cell written in a loop (gates i, f, c, o in Keras' order; h and c carried): lifted
    to a native LSTM (ONNX order i, o, f, c) that equals the loop, and slicing it = zeroing."""
    H, I = 3, 2
    nodes = [helper.make_node("MatMul", ["x_t", "Wk"], ["xw"]), helper.make_node("MatMul", ["h", "Uk"], ["hu"]),
             helper.make_node("Add", ["xw", "hu"], ["s"]), helper.make_node("Add", ["s", "bk"], ["z"]),
             helper.make_node("Split", ["z"], ["zi", "zf", "zc", "zo"], axis=1, num_outputs=4),
             helper.make_node("Sigmoid", ["zi"], ["i"]), helper.make_node("Sigmoid", ["zf"], ["f"]),
             helper.make_node("Tanh", ["zc"], ["g"]), helper.make_node("Sigmoid", ["zo"], ["o"]),
             helper.make_node("Mul", ["f", "c"], ["fc"]), helper.make_node("Mul", ["i", "g"], ["ig"]),
             helper.make_node("Add", ["fc", "ig"], ["c_new"]), helper.make_node("Tanh", ["c_new"], ["tc"]),
             helper.make_node("Mul", ["o", "tc"], ["h_new"])]
    inits = [_w("Wk", (I, 4 * H), 1), _w("Uk", (H, 4 * H), 2), _w("bk", (4 * H,), 3)]
    proto = _loop_model(nodes, inits, H, I, extra_state=True)
    model = Model(proto, source="keras_lstm.onnx")
    (op,) = model.recurrent
    assert (op.form, op.op_type, op.hidden_size) == ("loop", "LSTM", H)
    x = np.random.default_rng(9).normal(0, 1, (5, 4, I)).astype(np.float32)  # [T, N, I]
    want = runtime.session(proto).run(None, {"x": x})[0]
    np.testing.assert_allclose(runtime.session(model.runnable).run(None, {"x": x})[0], want, atol=1e-5)
    keep = {0: [np.array([0, 2])]}
    m = model.fresh()
    m.apply_selection({0: UnitSelection.from_keep(H, keep[0])})
    np.testing.assert_allclose(runtime.session(m.export()).run(None, {"x": x})[0],
                               runtime.session(_zeroed(model, keep)).run(None, {"x": x})[0], atol=1e-5)


def test_a_recurrence_inside_if_is_refused_naming_the_construct():
    rng = np.random.default_rng(0)
    H, I = 2, 3
    lstm = helper.make_node("LSTM", ["x", "W", "R"], ["Y", "Y_h"], hidden_size=H)
    branch = helper.make_graph([lstm], "then", [], [helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None)],
                               [_w("W", (1, 4 * H, I), 1), _w("R", (1, 4 * H, H), 2)])
    other = helper.make_graph([helper.make_node("Identity", ["z"], ["o"])], "else", [],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.zeros((1, 1, H), np.float32), "z")])
    g = helper.make_graph([helper.make_node("If", ["flag"], ["hT"], then_branch=branch, else_branch=other),
                           helper.make_node("Squeeze", ["hT", "ax"], ["h"]),
                           helper.make_node("Gemm", ["h", "head"], ["logits"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, I]),
                           helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],  # decided at run time
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array([0], np.int64), "ax"),
                           numpy_helper.from_array(rng.normal(0, 1, (2, H)).astype(np.float32), "head")])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match=r"\(If\): holds a LSTM node .* then_branch"):
        Model(proto, source="vad.onnx")


def test_a_loop_recurrence_inside_if_is_refused_naming_the_construct():
    """A branch that runs a cell in a Loop (carrying its state) is a recurrence inside the If too: the
    refusal names the If and the Loop, not "no recurrent op found"."""
    H = 2
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]), helper.make_node("Tanh", ["h"], ["h_new"])], "body",
        [helper.make_tensor_value_info("it", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", H])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_new", TensorProto.FLOAT, ["N", H])])
    branch = helper.make_graph([helper.make_node("Loop", ["T", "", "x"], ["hT"], name="cell_loop", body=body)],
                               "then", [], [helper.make_tensor_value_info("hT", TensorProto.FLOAT, None)],
                               [numpy_helper.from_array(np.array(3, np.int64), "T")])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "else", [],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    g = helper.make_graph([helper.make_node("If", ["flag"], ["h"], name="vad_if", then_branch=branch,
                                            else_branch=other),
                           helper.make_node("Gemm", ["h", "head"], ["logits"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, H]),
                           helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.ones((2, H), np.float32), "head")])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match=r"'vad_if' \(If\): holds a Loop 'cell_loop' carrying 1 state"):
        Model(proto, source="vad.onnx")


def test_a_bidirectional_gru_of_two_loops_becomes_one_layer():
    """tf2onnx's Bidirectional(GRU): two Loops (the backward one on a reversed input) lifted, the
    backward one made a reverse op, the pair merged into one bidirectional GRU whose two directions'
    units the concatenated readout reads as one layer's."""
    model = Model.load(ROOT / "fixtures/exporters/tf2onnx_keras3/brown_genre_bigru.onnx")
    (op,) = model.recurrent
    assert (op.form, op.op_type, op.directions) == ("loop", "GRU", 2)
    assert {"reversed_input", "bidirectional_pair"} <= {a.rule for a in model.rewrites}
    assert len(model.watched) == 2  # both loops' own states are compared with the lifted op's


@pytest.mark.parametrize("name", ["brown_genre_gru_mask", "brown_genre_lstm_mask"])
def test_masked_keras_cells_are_lifted_for_any_padding_of_one_block_and_checked(name):
    """Keras mask_zero: the state (and the output) is held on masked steps. Over rows whose real steps
    are one block — padding before it (the fixture's rows), after it, or both — that is a forward op
    with sequence_lens = the real steps over each row rolled to start at its first real step. The
    check passes on all three; a mask with holes computes something else, and the check refuses."""
    model = Model.load(ROOT / f"fixtures/exporters/tf2onnx_keras3/{name}.onnx")
    (op,) = model.recurrent
    assert op.form == "loop" and op.lengths is not None and op.reversed_directions() == [False]
    x = _rows("brown_genre", 256)
    assert (x[:, 0] == 0).any() and (x[:, -1] != 0).all()  # the fixture's rows are pre-padded
    post = np.stack([np.concatenate([r[r != 0], r[r == 0]]) for r in x])  # the same tokens, padding last
    both = np.stack([np.roll(r, -(len(r) - (r != 0).sum()) // 2) for r in x])  # padding on both sides
    for rows in (x, post, both):
        checked = verify_forms(model, rows)
        assert checked["max_scaled_difference"] <= 1e-5 and len(checked["compared"]) >= 2
    holes = x.copy()
    holes[:, -3] = 0  # a padding token inside the real steps
    with pytest.raises(UnsupportedModelError, match=r"differ from the model's own states by"):
        verify_forms(model, holes)


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "fixtures/cells/*/durnn*.onnx"))))
def test_durnn_is_a_general_cell_of_two_state_vectors(path):
    """DuRNN has two state vectors and mixed activations: each layer is a general cell whose units
    are both vectors' positions, scored by their own rules (tests/recurrence has the rest)."""
    model = Model.load(path)
    for op in model.recurrent:
        d = op.describe()
        assert d["cell"] == "general" and sorted((s["width"], s["activation"]) for s in d["states"]) == \
            [(24, "Relu"), (24, "Tanh")]
        assert sorted(set(op.rule)) == ["logistic", "relu"]
