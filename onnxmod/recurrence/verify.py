"""The check that a lifted recurrence computes what the model's own graph computes, on the model's
own rows (``verify_forms``)."""
from __future__ import annotations

import numpy as np
import onnx

from .. import runtime
from ..errors import UnsupportedModelError
from .contract import Form

# Lifted and original states are the same function computed in another summation order: float32
# rounding grows along the sequence (measured: 2.9e-6 on a scripted GRU loop over 8 steps, 1.2e-5 on
# torch's unrolled RNN over 60 steps, 1.3e-4 on dynamo's unrolled tanh RNN of a roughly trained
# genre classifier, whose recurrent weight amplifies it), so the check allows 1e-3 of max(1, |value|):
# a wrong reading differs by tenths (a Keras mask over post-padded rows read as lengths: 5.33).
TOLERANCE = 1e-3


def verify_forms(model, x, threads=None) -> dict | None:
    """A recurrence a front-end lifted (``form`` other than ``native``) must compute what the model's
    own graph computes: its states (the tensors the front-end watched) and the model's outputs, run
    in onnxruntime on ``x`` (the traced rows), within ``TOLERANCE`` (of ``max(1, |value|)``: float32
    sums in another order differ by that much over long sequences). Returns what was compared (None
    when every recurrence is native); raises ``UnsupportedModelError`` with the gap otherwise."""
    lifted = [r for r in model.recurrent if r.form != Form.NATIVE]
    if not lifted:
        return None
    names = list(model.watched)

    def run(proto):
        p = onnx.ModelProto()
        p.CopyFrom(proto)
        have = {o.name for o in p.graph.output}
        for n in names:
            if n not in have:
                p.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
                p.graph.output[-1].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        sess = runtime.session(p, threads=threads)
        outs = [o.name for o in sess.get_outputs()]
        feeds = {model.input.name: x}
        return dict(zip(outs, sess.run(None, feeds)))

    want, got = run(model.original), run(model.runnable)
    def scaled(a, b):  # |a - b| / max(1, |a|): absolute for states (|h| <= 1 in most cells), relative for logits
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float((np.abs(a - b) / np.maximum(1.0, np.abs(a))).max()) if a.size else 0.0

    gap = max(scaled(want[k], got[k]) for k in want if k in got)
    if gap > TOLERANCE:
        forms = ", ".join(f"{r.name!r} ({r.form} -> {r.op_type})" for r in lifted)
        raise UnsupportedModelError(f"{model.source}: the recognized recurrence(s) {forms} differ from the model's own "
                                    f"states by {gap:.3g} (of max(1, |value|)) on {len(x)} traced rows "
                                    f"(tolerance {TOLERANCE:g})")
    return {"recurrences": [f"{r.name} ({r.form} -> {r.op_type})" for r in lifted], "rows": int(len(x)),
            "max_scaled_difference": gap, "compared": sorted(k for k in want if k in got)}


