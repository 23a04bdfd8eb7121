"""Unrolled chains are recognized by what they compute, not by one spelling (issue 20, item 3).

A vanilla RNN and an LSTM written step by step (seeded random weights: mechanics) are exported
with each step reading the input by ``Gather``, ``Slice`` + ``Squeeze``, ``Split`` + ``Squeeze`` or
``SplitToSequence`` + ``SequenceAt``, with the weights shared or copied at every step (torch's dynamo
exporter writes one copy per step). Each is lifted into the native op (one set of weights: the
copies are one weight), computes what the chain computes, and removing units equals holding them
at 0; the same for torch's own exports (``nn.RNN`` with a static length, ``nn.LSTMCell`` unrolled by
hand, a backward direction made by flipping the sequence at both ends)."""
import numpy as np
import onnx
import pytest
from cell_export import export

from onnxmod import runtime
from onnxmod.graph import Model
from onnxmod.recurrence import verify_forms
from onnxmod.units import UnitSelection

I, H, T, C = 4, 6, 5, 3


def rnn(o, x, states):
    (h,) = states
    h2 = o.op("Tanh", o.op("Add", o.op("Add", o.op("MatMul", x, o.w("W")), o.op("MatMul", h, o.w("R"))), o.w("b")))
    return [h2], h2


def lstm(o, x, states):
    """An LSTM cell in plain ops (gates i, f, g, o as torch orders them), h and c carried."""
    h, c = states
    z = o.op("Add", o.op("Add", o.op("MatMul", x, o.w("W")), o.op("MatMul", h, o.w("R"))), o.w("b"))
    i, f, g, og = o.op("Split", z, o.c([H] * 4, np.int64), n_out=4, axis=1)
    c2 = o.op("Add", o.op("Mul", o.op("Sigmoid", f), c), o.op("Mul", o.op("Sigmoid", i), o.op("Tanh", g)))
    h2 = o.op("Mul", o.op("Sigmoid", og), o.op("Tanh", c2))
    return [h2, c2], h2


def weights(cell, seed=0):
    rng = np.random.default_rng(seed)
    G = 4 if cell is lstm else 1
    return {"W": rng.normal(0, 0.6, (I, G * H)), "R": rng.normal(0, 0.4, (H, G * H)), "b": rng.normal(0, 0.2, G * H)}


def _run(proto, x):
    return runtime.session(proto).run(None, {"x": x})[0]


def _sliced_vs_zeroed(model, keep, x):
    """The model with units removed physically, and with the same units held at 0 after every step."""
    a = model.fresh()
    a.apply_selection({op.index: UnitSelection.from_keep(op.hidden_size, [np.flatnonzero(keep)]) for op in a.recurrent})
    b = model.fresh()
    for op in b.recurrent:
        op.mask_states(b.graph, [np.tile(keep.astype(np.float32), (x.shape[1], 1))], f"zeroed/{op.index}", b.source)
    return _run(a.export(), x), _run(b.export(), x)


def _check(proto, op_type, x, directions=1):
    model = Model(proto, source="chain.onnx")
    (op,) = model.recurrent
    assert (op.form, op.op_type, op.directions) == ("unrolled", op_type, directions)
    checked = verify_forms(model, x)
    assert checked["max_scaled_difference"] <= 1e-5
    keep = np.random.default_rng(1).random(op.hidden_size) < 0.5
    keep[0] = True
    if directions == 1:
        got, want = _sliced_vs_zeroed(model, keep, x)
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert not np.allclose(want, _run(model.runnable, x), atol=1e-4)
    return model


@pytest.mark.parametrize("cell,op_type", [(rnn, "RNN"), (lstm, "LSTM")], ids=["rnn", "lstm"])
@pytest.mark.parametrize("reads", ["gather", "slice", "split", "sequence"])
@pytest.mark.parametrize("copies", [False, True], ids=["shared", "copies"])
def test_every_step_read_and_weight_copies_lift_to_the_native_op(cell, op_type, reads, copies):
    rng = np.random.default_rng(2)
    head = (rng.normal(0, 1, (C, H)), np.zeros(C))
    proto = export(cell, weights(cell), [H] * (2 if cell is lstm else 1), I, "unrolled", T, head=head, reads=reads,
                   copies=copies)
    x = rng.normal(0, 1, (7, T, I)).astype(np.float32)
    model = _check(proto, op_type, x)
    params = sum(v.size for v in weights(cell).values())
    # the copies are one weight: the lifted model holds one set (W's bias is the same b)
    assert model.parameter_count() < params + C * H + C + 8 * H


# ---- torch's own exports --------------------------------------------------------------------------
torch = pytest.importorskip("torch")


class _RNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc = torch.nn.RNN(I, H, batch_first=True), torch.nn.Linear(H, C)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


class _RNN2(torch.nn.Module):
    """Two bidirectional layers: the exporter unrolls every direction of every layer, the backward
    ones over the input flipped in time, their outputs stacked flipped back."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.RNN(I, H, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(2 * H, C)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


class _Cells(torch.nn.Module):
    """nn.LSTMCell unrolled by hand; ``both``: a second cell over the sequence flipped in time, its
    outputs flipped back and joined to the first's (a bidirectional layer written by hand)."""

    def __init__(self, both: bool):
        super().__init__()
        self.both = both
        self.f, self.b = torch.nn.LSTMCell(I, H), torch.nn.LSTMCell(I, H)
        self.fc = torch.nn.Linear(2 * H if both else H, C)

    def run(self, cell, x):
        h = torch.zeros(x.shape[0], H)
        c = torch.zeros(x.shape[0], H)
        ys = []
        for t in range(x.shape[1]):
            h, c = cell(x[:, t], (h, c))
            ys.append(h)
        return torch.stack(ys, 1)

    def forward(self, x):
        y = self.run(self.f, x)
        if self.both:
            y = torch.cat([y, torch.flip(self.run(self.b, torch.flip(x, [1])), [1])], 2)
        return self.fc(y[:, -1])


def _export(module, dynamo, path):
    torch.manual_seed(0)
    m = module().eval() if not isinstance(module, torch.nn.Module) else module
    kw = ({"dynamic_shapes": {"x": {0: torch.export.Dim.AUTO}}} if dynamo else {"dynamic_axes": {"x": {0: "N"}}})
    torch.onnx.export(m, (torch.randn(2, T, I),), str(path), dynamo=dynamo, input_names=["x"],
                      output_names=["logits"], external_data=False, **kw)
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def torch_exports(tmp_path_factory):
    import warnings

    d = tmp_path_factory.mktemp("torch_chains")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        out["rnn_dynamo"] = _export(_RNN(), True, d / "rnn.onnx")
        torch.manual_seed(0)
        out["rnn2_dynamo"] = _export(_RNN2(), True, d / "rnn2.onnx")
        for both in (False, True):
            torch.manual_seed(0)
            cells = _Cells(both).eval()
            out[f"cells{int(both)}_legacy"] = _export(cells, False, d / f"cells{int(both)}_legacy.onnx")
            out[f"cells{int(both)}_dynamo"] = _export(cells, True, d / f"cells{int(both)}_dynamo.onnx")
    return out


def test_torch_dynamo_rnn_unrolled_with_a_static_length(torch_exports):
    proto = torch_exports["rnn_dynamo"]
    assert not any(n.op_type == "RNN" for n in proto.graph.node)  # the exporter unrolled it
    x = np.random.default_rng(0).normal(0, 1, (3, T, I)).astype(np.float32)
    model = _check(proto, "RNN", x)
    assert model.parameter_count() == I * H + H * H + 2 * H + H * C + C


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("both", [0, 1], ids=["forward", "flipped_backward"])
def test_torch_lstm_cells_unrolled_by_hand(torch_exports, exporter, both):
    proto = torch_exports[f"cells{both}_{exporter}"]
    x = np.random.default_rng(0).normal(0, 1, (3, T, I)).astype(np.float32)
    model = _check(proto, "LSTM", x, directions=2 if both else 1)
    if both:
        assert model.recurrent[0].reversed_directions() == [False, True]
        assert {"reversed_input", "bidirectional_pair"} <= {a.rule for a in model.rewrites}


def test_torch_dynamo_two_bidirectional_layers_unrolled(torch_exports):
    proto = torch_exports["rnn2_dynamo"]
    x = np.random.default_rng(0).normal(0, 1, (3, T, I)).astype(np.float32)
    model = Model(proto, source="rnn2.onnx")
    assert [(op.form, op.op_type, op.directions) for op in model.recurrent] == [("unrolled", "RNN", 2)] * 2
    assert all(op.reversed_directions() == [False, True] for op in model.recurrent)
    assert verify_forms(model, x)["max_scaled_difference"] <= 1e-5
    assert model.parameter_count() == 2 * (I * H + H * H + 2 * H) + 2 * (2 * H * H + H * H + 2 * H) + 2 * H * C + C
