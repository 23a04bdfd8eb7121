"""The committed fixtures are what they claim: onnxruntime reproduces torch's logits, every model has
native recurrent ops and the metadata onnxmod reads."""
import json

import numpy as np
import onnx
import pytest
from conftest import FIXTURES

from onnxmod import runtime
from onnxmod.graph import Model

TASKS = ["math_topics", "brown_genre", "brown_pos", "cmu_phones"]


def _models(task):
    z = np.load(FIXTURES / task / "data.npz")
    return z, [str(s) for s in z["model_names"]]


@pytest.mark.parametrize("task", TASKS)
def test_onnxruntime_reproduces_torch_logits(task):
    z, names = _models(task)
    assert names, task
    x = z["x_test"][:64]
    for i, stem in enumerate(names):
        got = runtime.session(FIXTURES / task / f"{stem}.onnx").run(None, {"tokens": x})[0]
        np.testing.assert_allclose(got, z["torch_logits_test"][i], atol=1e-4, rtol=1e-4, err_msg=f"{task}/{stem}")


@pytest.mark.parametrize("task", TASKS)
def test_fixture_models_are_native_and_described(task):
    manifest = json.loads((FIXTURES / "manifest.json").read_text())["tasks"][task]
    _, names = _models(task)
    for stem in names:
        proto = onnx.load(str(FIXTURES / task / f"{stem}.onnx"))
        ops = {n.op_type for n in proto.graph.node}
        assert ops & {"LSTM", "GRU", "RNN"} and not ops & {"Loop", "Scan"}
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["onnxmod.class_names"]) == manifest["class_names"]
        m = Model(proto)
        assert m.shape == manifest["shape"] == meta["onnxmod.shape"]
