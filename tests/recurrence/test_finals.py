"""torch's ``h_n``: the front-end side of picking one layer's final state out of it (issue 20) — which
recurrence, direction and state each position of the packed axis is."""
import numpy as np
import onnx_graphsurgeon as gs
import pytest

from onnxmod.io import load_onnx
from onnxmod.prepare import prepare_graph
from onnxmod.recurrence import packed_final_states, recognize
from onnxmod.rewrite import normalize

torch = pytest.importorskip("torch")


class _Stacked(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn = getattr(torch.nn, cell)(4, 5, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(10, 3)

    def forward(self, x):
        _, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h
        return self.fc(torch.cat([h[-2], h[-1]], 1))


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_each_position_of_h_n_is_named_by_its_layer_and_direction(cell, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "h_n.onnx"
    torch.onnx.export(_Stacked(cell).eval(), (torch.randn(2, 6, 4),), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "N", 1: "T"}})
    graph, _ = prepare_graph(load_onnx(path), str(path))
    normalize(graph)
    found, misses = recognize(graph, str(path))
    assert not misses and len(found) == 2
    packs = [n.outputs[0] for n in graph.nodes if n.op == "Concat" and int(n.attrs.get("axis", 0)) == 0
             and packed_final_states(n.outputs[0], found) is not None and len(n.inputs) == 2]
    (h_n,) = packs
    got = [(f.recurrence.index, f.direction, f.state) for f in packed_final_states(h_n, found)]
    assert got == [(0, 0, "h"), (0, 1, "h"), (1, 0, "h"), (1, 1, "h")]
    # what the model picks: h_n[-2] and h_n[-1], the last layer's two directions
    picks = [n for n in h_n.outputs if n.op == "Gather"]
    idx = sorted(int(np.asarray(p.inputs[1].values)) % 4 for p in picks if isinstance(p.inputs[1], gs.Constant))
    assert [got[i][:2] for i in idx] == [(1, 0), (1, 1)]
    assert packed_final_states(found[0].y, found) is None  # Y is no final state
