"""Every model of fixtures/surround/ (what practitioners put around a recurrence, from torch's two
exporters, tf2onnx and onnxruntime's quantization) decomposes end to end: modules and compositions
pass the full checker, run in onnxruntime, are no larger than the model, and the composition loses
at most a point against the model on the test split (string accuracy for the CTC models)."""
import json

import numpy as np
import onnx
import pytest
from conftest import FIXTURES

from onnxmod import api, runtime
from onnxmod.concern import ConcernConfig
from onnxmod.graph import count_parameters_proto

ROOT = FIXTURES / "surround"
ENTRIES = json.loads((ROOT / "manifest.json").read_text())["models"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{e['source']}/{e['name']}" for e in ENTRIES])
def test_surround_model_decomposes(entry, tmp_path):
    model = ROOT / entry["file"]
    data = FIXTURES.parent / entry["data"]
    ctc = entry["task"] == "digits_ctc"
    config = ConcernConfig()
    config.sampling.positives = config.sampling.negatives = 120
    r = api.decompose(model, data, tmp_path / "out", mode="rolled", config=config, progress=False, threads=1,
                      modules="standalone", **({"labels": "model", "ctc_blank": 0} if ctc else {}))
    delta = r["ctc"]["delta_string_accuracy"] if ctc else r["delta"]
    assert delta >= -0.01, delta
    limit = count_parameters_proto(onnx.load(str(model)))
    x = np.load(data)["x_test"][:8]
    files = sorted((tmp_path / "out" / "modules").glob("*.onnx")) + [tmp_path / "out" / "composed.onnx"]
    for f in files:
        proto = onnx.load(str(f))
        onnx.checker.check_model(proto, full_check=True)
        sess = runtime.session(proto)
        sess.run(None, {sess.get_inputs()[0].name: x})
        if f.parent.name == "modules":
            assert count_parameters_proto(proto) <= limit, f.name
