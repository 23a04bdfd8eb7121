"""Quantized recurrences (issue 20, item 5): ``onnxruntime.quantization.quantize_dynamic`` writes an
LSTM as ``com.microsoft`` ``DynamicQuantizeLSTM`` (int8 W ``[D, I, 4H]`` and R ``[D, H, 4H]``, scales
and zero points per tensor or per channel). onnxmod reads it through its dequantized weights and
removes units in its integer form: the sliced model computes what the dequantized model with those
units zeroed computes, and its recurrent weights stay int8."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxmod import runtime
from onnxmod.errors import UnsupportedModelError
from onnxmod.graph import Model, count_parameters_proto
from onnxmod.ops import handler_for
from onnxmod.units import UnitSelection

quantization = pytest.importorskip("onnxruntime.quantization")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "fixtures" / "math_topics" / "data.npz"


def _quantized(tmp_path, name: str, per_channel: bool, only_lstm: bool) -> Path:
    out = tmp_path / f"{name}{'_pc' if per_channel else ''}{'_lstm' if only_lstm else ''}.onnx"
    quantization.quantize_dynamic(ROOT / "fixtures" / "math_topics" / f"{name}.onnx", out,
                                  weight_type=quantization.QuantType.QInt8, per_channel=per_channel,
                                  op_types_to_quantize=["LSTM"] if only_lstm else None)
    return out


def _dequantized_zeroed(proto: onnx.ModelProto, keep: list[np.ndarray]) -> onnx.ModelProto:
    """The quantized model with its LSTM made a float ONNX LSTM (the dequantized weights), the units
    not in ``keep[d]`` zeroed in W, R and B."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    node = next(n for n in out.graph.node if n.op_type == "DynamicQuantizeLSTM")
    import onnx_graphsurgeon as gs

    g = gs.import_onnx(out)
    gnode = next(n for n in g.nodes if n.name == node.name)
    Wt, Rt, Bt = (a.copy() for a in handler_for("DynamicQuantizeLSTM").weights(gnode))
    H = int(gnode.attrs["hidden_size"])
    for d, k in enumerate(keep):
        gone = np.setdiff1d(np.arange(H), k)
        rows = np.concatenate([g_ * H + gone for g_ in range(4)])
        Wt[d][rows] = Rt[d][rows] = 0
        Rt[d][:, gone] = 0
        Bt[d][np.concatenate([rows, 4 * H + rows])] = 0
    names = []
    for tag, v in (("W", Wt), ("R", Rt), ("B", Bt)):
        names.append(f"dequantized_{tag}")
        out.graph.initializer.append(numpy_helper.from_array(v.astype(np.float32), names[-1]))
    node.op_type, node.domain = "LSTM", ""
    inputs = [node.input[0], *names, *list(node.input[4:8])]
    del node.input[:]
    node.input.extend(inputs)
    return out


def _zeroed_quantized(proto: onnx.ModelProto, keep: list[np.ndarray]) -> onnx.ModelProto:
    """The quantized model with the units not in ``keep[d]`` zeroed in its integer form: their columns
    of W and R (and their rows of R) set to the zero point, their biases to 0."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    node = next(n for n in out.graph.node if n.op_type == "DynamicQuantizeLSTM")
    inits = {t.name: t for t in out.graph.initializer}
    H = next(a.i for a in node.attribute if a.name == "hidden_size")

    def arr(i):
        return numpy_helper.to_array(inits[node.input[i]]).copy()

    def put(i, v):
        inits[node.input[i]].CopyFrom(numpy_helper.from_array(v, node.input[i]))

    for i, zero in ((1, 9), (2, 11)):
        q, z = arr(i), arr(zero)
        for d, k in enumerate(keep):
            gone = np.setdiff1d(np.arange(H), k)
            cols = np.concatenate([g * H + gone for g in range(4)])
            zd = z[d] if z.ndim == 1 else z[d]
            q[d][:, cols] = zd if z.ndim == 1 else zd[cols]
            if i == 2:
                q[d][gone, :] = zd if z.ndim == 1 else zd[None, :]
        put(i, q)
    b = arr(3)
    for d, k in enumerate(keep):
        gone = np.setdiff1d(np.arange(H), k)
        rows = np.concatenate([g * H + gone for g in range(4)])
        b[d][np.concatenate([rows, 4 * H + rows])] = 0
    put(3, b)
    return out


@pytest.mark.parametrize("name", ["lstm1", "lstm1_bi"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_a_quantized_lstm_is_sliced_in_its_integer_form(tmp_path, name, per_channel):
    path = _quantized(tmp_path, name, per_channel, only_lstm=True)
    proto = onnx.load(path)
    model = Model.load(path)
    (op,) = model.recurrent
    assert op.node.op == "DynamicQuantizeLSTM" and op.op_type == "LSTM" and op.form == "native"
    # the int8 weights count (canonicalization makes equal constants one: W's and R's zero points)
    int8 = sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8)
    assert int8 > 0 and int8 <= model.parameter_count() <= count_parameters_proto(proto)
    rng = np.random.default_rng(0)
    keep = [np.sort(rng.choice(op.hidden_size, op.hidden_size // 2, replace=False)) for _ in range(op.directions)]
    m = model.fresh()
    m.apply_selection({0: UnitSelection.from_keep(op.hidden_size, keep)})
    sliced = m.export()
    node = next(n for n in sliced.graph.node if n.op_type == "DynamicQuantizeLSTM")
    inits = {t.name: numpy_helper.to_array(t) for t in sliced.graph.initializer}
    assert inits[node.input[1]].dtype == np.int8 and inits[node.input[2]].dtype == np.int8
    assert inits[node.input[2]].shape == (op.directions, op.hidden_size // 2, 4 * (op.hidden_size // 2))
    x = np.load(DATA)["x_test"][:200]
    got = runtime.session(sliced).run(None, {"tokens": x})[0]
    # the same op with those units zeroed in its integer form computes the same
    want = runtime.session(_zeroed_quantized(proto, keep)).run(None, {"tokens": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    # and what the dequantized float model with those units zeroed computes, within the rounding of the
    # activations onnxruntime quantizes at run time
    ref = runtime.session(_dequantized_zeroed(proto, keep)).run(None, {"tokens": x})[0]
    assert np.abs(got - ref).max() < 0.1 and (got.argmax(1) == ref.argmax(1)).mean() >= 0.98
    full = runtime.session(proto).run(None, {"tokens": x})[0]
    assert not np.allclose(got, full, atol=0.1)  # the removed units mattered
    assert count_parameters_proto(sliced) < count_parameters_proto(proto)


def test_inspect_counts_integer_weights_and_names_the_quantized_op(tmp_path):
    from onnxmod.graph import describe_leniently

    path = _quantized(tmp_path, "lstm1", False, only_lstm=False)
    d = describe_leniently(onnx.load(path), str(path))
    # 212,200 weights and biases, W's and R's scales and zero points (equal ones made one)
    assert 212_200 < d["parameters"] <= 212_208
    (rec,) = d["recurrences"]
    assert rec["op_type"] == "DynamicQuantizeLSTM" and rec["cell"] == "LSTM" and rec["input_size"] == 640
    assert not d["not_recognized"]


def test_state_semantics_refuses_a_quantized_lstm(tmp_path):
    model = Model.load(_quantized(tmp_path, "lstm1", False, only_lstm=True))
    m = model.fresh()
    (op,) = m.recurrent
    with pytest.raises(UnsupportedModelError, match="quantized"):
        op.mask_states(m.graph, [np.ones((3, op.hidden_size), np.float32)], "p", m.source)
