"""One more cell written in torch, in this file alone, trained a few epochs on the sequential digits and
exported both ways torch offers (``torch.jit.script`` through the legacy exporter: a ``Loop``; the
default exporter: an unrolled chain), then decomposed (issue 14, acceptance 2). Needs torch and
onnxscript (the ``[torch]`` extra, build-time only): skipped without them.

The *leaky-gated cell*: a tanh state ``h`` (20 units) leaking into a ReLU accumulator ``m`` (12
units) through an input-dependent gate of its own width, emitting ``[m; h]``:

    h' = tanh(x W + h U + b)
    k  = sigmoid(x K + c)                         (12 wide, read from the input only)
    m' = relu(k * m + (1 - k) * (h' V))
"""
import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from onnxmod import api, runtime  # noqa: E402
from onnxmod.concern import ConcernConfig  # noqa: E402
from onnxmod.graph import Model  # noqa: E402

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
DATA = ROOT / "fixtures" / "digits" / "data.npz"
H, M = 20, 12


class LeakyGated(torch.nn.Module):
    def __init__(self, inputs: int = 8, classes: int = 10):
        super().__init__()
        self.h_size, self.m_size = H, M
        self.W, self.U = torch.nn.Linear(inputs, H), torch.nn.Linear(H, H, bias=False)
        self.K, self.V = torch.nn.Linear(inputs, M), torch.nn.Linear(H, M, bias=False)
        self.out = torch.nn.Linear(H + M, classes)

    def forward(self, x):
        h = torch.zeros(x.shape[0], self.h_size)
        m = torch.zeros(x.shape[0], self.m_size)
        y = torch.zeros(x.shape[0], self.h_size + self.m_size)
        for t in range(x.shape[1]):
            xt = x[:, t]
            h = torch.tanh(self.W(xt) + self.U(h))
            k = torch.sigmoid(self.K(xt))
            m = torch.relu(k * m + (1 - k) * self.V(h))
            y = torch.cat([m, h], dim=1)
        return self.out(y)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = np.load(DATA)
    torch.manual_seed(0)
    model = LeakyGated()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.tensor(d["x_train"]), torch.tensor(d["y_train"])
    for _ in range(6):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    model.eval()
    folder = tmp_path_factory.mktemp("torch_cell")
    example = torch.tensor(d["x_test"][:4])
    loop, unrolled = folder / "loop.onnx", folder / "unrolled.onnx"
    torch.onnx.export(torch.jit.script(model), (example,), str(loop), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch", 1: "seq"}, "logits": {0: "batch"}})
    torch.onnx.export(model, (example,), str(unrolled), dynamo=True, input_names=["x"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    with torch.no_grad():
        want = model(torch.tensor(d["x_test"])).numpy()
    return {"loop": loop, "unrolled": unrolled}, want


@pytest.mark.parametrize("form", ["loop", "unrolled"])
def test_a_torch_cell_of_ones_own_decomposes(exported, form, tmp_path):
    files, want = exported
    x = np.load(DATA)["x_test"]
    np.testing.assert_allclose(runtime.session(onnx.load(files[form])).run(None, {"x": x})[0], want, atol=1e-4)
    (op,) = Model.load(files[form]).recurrent
    assert op.op_type == "Cell" and op.hidden_size == H + M
    assert list(op.rule) == ["relu"] * M + ["logistic"] * H  # emitted [m; h]: each unit by its own rule
    r = api.decompose(files[form], DATA, tmp_path / "out", mode="rolled", config=ConcernConfig(guard=None),
                      progress=False)
    assert r["monolithic_accuracy"] > 0.8
    assert all(m["params"] < r["model_params"] for m in r["modules"])
    assert r["fused"]["file"] == "fused.onnx"
