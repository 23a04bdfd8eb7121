"""The rules on real exporters' models (fixtures/exporters, when that folder is present): whatever
they rewrite computes the same outputs in onnxruntime at two batch sizes and two lengths."""
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from rewrite_util import rewritten

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted((ROOT / "fixtures" / "exporters").rglob("*.onnx"))


def _frozen(path) -> int | None:
    """The length an exporter froze the model's time axis at (the manifest records it), if any."""
    import json

    manifest = ROOT / "fixtures" / "exporters" / "manifest.json"
    if not manifest.exists():
        return None
    rel = str(path.relative_to(ROOT / "fixtures" / "exporters"))
    for m in json.loads(manifest.read_text())["models"]:
        if m["file"] == rel:
            return (m["check"].get("frozen_length") or {}).get("length")
    return None


def _feeds(proto, batch, length, rng):
    feeds = {}
    inits = {t.name for t in proto.graph.initializer}
    for vi in (x for x in proto.graph.input if x.name not in inits):
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        shape = [d if d else (batch if k == 0 else length) for k, d in enumerate(dims)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(1, 10, shape).astype(dtype)
        else:
            feeds[vi.name] = rng.normal(0, 1, shape).astype(dtype)
    return feeds


@pytest.mark.skipif(not MODELS, reason="no exporter fixtures in this checkout")
@pytest.mark.parametrize("path", MODELS, ids=[str(p.relative_to(ROOT / "fixtures" / "exporters")) for p in MODELS])
def test_rules_are_exact_on_exporter_models(path):
    proto = onnx.load(str(path))
    out, applied = rewritten(proto)
    rng = np.random.default_rng(0)
    a = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    frozen = _frozen(path)
    for batch in (1, 3):
        for length in ((frozen,) if frozen else (5, 8)):
            feeds = _feeds(proto, batch, length, rng)
            for u, v in zip(a.run(None, feeds), b.run(None, feeds)):
                np.testing.assert_allclose(u, v, atol=1e-6, rtol=0)
