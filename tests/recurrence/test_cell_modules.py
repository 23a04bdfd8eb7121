"""The custom-cell fixtures (``fixtures/cells``) decomposed: DuRNN (1 and 2 layers), IndRNN and the
GRU cell in plain ops, each in both of torch's exports (issue 14, acceptance 1).

* **sliced = zeroed** in onnxruntime within 1e-5, over random keep sets: for every layer and every
  state vector, that vector cut down to a random few units (the others whole), and one random set
  over every unit of every layer. *Zeroed* is the model whose removed units are held at 0 (the
  recurrence's ``mask_states`` with a constant mask), sliced the physically smaller one.
* **decomposed**: rolled modules, δ ≥ −1.0 point, every module physically smaller than the model.
"""
import json
import zlib

import numpy as np
import onnx
import pytest

from onnxmod import api, runtime
from onnxmod.graph import Model
from onnxmod.units import UnitSelection

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
CELLS = ROOT / "fixtures" / "cells"
MODELS = [(task, f"{cell}_{form}") for task in ("digits", "digits_pixels")
          for cell in ("durnn1", "durnn2", "indrnn1", "grucell1") for form in ("loop", "unrolled")] + \
         [("brown_genre", "durnn1_loop"), ("brown_genre", "durnn1_unrolled")]


def _x(task, n=40):
    return np.load(ROOT / "fixtures" / task / "data.npz")["x_test"][:n]


def _run(proto, name, x):
    return runtime.session(proto).run(None, {name: x})[0]


def _state_groups(op):
    """Per state vector, its unit ids (a native op has one: h, with c tied to it)."""
    flow = getattr(op, "flow", None)
    if flow is None:
        return [np.arange(op.hidden_size)]
    return [np.unique(flow.state_labels(k)) for k in range(flow.step.n_states)]


def _keep_sets(model, rng):
    """(what, {layer: keep}) pairs: each state vector of each layer thinned, then everything at once."""
    whole = {op.index: np.ones(op.hidden_size, bool) for op in model.recurrent}
    for op in model.recurrent:
        for k, units in enumerate(_state_groups(op)):
            keep = {i: v.copy() for i, v in whole.items()}
            drop = rng.choice(units, size=max(1, int(0.7 * len(units))), replace=False)
            keep[op.index][drop] = False
            yield f"layer {op.index} state {k}", keep
    keep = {op.index: rng.random(op.hidden_size) < 0.5 for op in model.recurrent}
    for v in keep.values():
        v[rng.integers(len(v))] = True
    yield "every layer", keep


@pytest.mark.parametrize("task,stem", MODELS, ids=[f"{t}/{s}" for t, s in MODELS])
def test_sliced_equals_zeroed(task, stem):
    model = Model.load(CELLS / task / f"{stem}.onnx")
    x = _x(task)
    T = x.shape[1]
    name = model.input.name
    reference = _run(model.runnable, name, x)
    rng = np.random.default_rng(zlib.crc32(f"{task}/{stem}".encode()))
    for what, keep in _keep_sets(model, rng):
        a = model.fresh()
        a.apply_selection({k: UnitSelection.from_keep(len(v), [np.flatnonzero(v)]) for k, v in keep.items()})
        sliced = a.export()
        b = model.fresh()
        for op in b.recurrent:
            op.mask_states(b.graph, [np.tile(keep[op.index].astype(np.float32), (T, 1))], f"zeroed/{op.index}",
                           b.source)
        got, want = _run(sliced, name, x), _run(b.export(), name, x)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{task}/{stem}: {what}")
        assert np.abs(want - reference).max() > 1e-4, what  # the removal mattered
        assert sliced.ByteSize() < model.runnable.ByteSize()


def _manifest_models():
    man = json.loads((CELLS / "manifest.json").read_text())
    return [(t, m["file"]) for t, task in man["tasks"].items() for m in task["models"]
            if m["export"] != "native" and t != "digits_pixels"]


@pytest.mark.parametrize("task,file", _manifest_models())
def test_decompose_rolled(task, file, tmp_path):
    """Rolled modules on the shipped defaults: δ ≥ −1.0 point, modules smaller than the model (the
    64-step pixel models run in tools/cell_modules.py, which prints the whole table)."""
    r = api.decompose(ROOT / "fixtures" / file, ROOT / "fixtures" / task / "data.npz", tmp_path / "out",
                      mode="rolled", progress=False)
    assert r["delta"] >= -0.01
    assert r["recurrence_forms"]["max_scaled_difference"] < 1e-4
    for m in r["modules"]:
        assert m["params"] < r["model_params"]
        proto = onnx.load(tmp_path / "out" / m["file"])
        assert proto.ByteSize() < (ROOT / "fixtures" / file).stat().st_size
