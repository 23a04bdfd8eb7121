"""Progress and verbosity at scale (``onnxmod.progress``, ``-v``/``-vv``): every phase that can take
long draws a bar, and ``-v`` says what starts, with its size."""
import numpy as np
from conftest import fixture_path
from test_cli import onnxmod

from onnxmod import api
from onnxmod import progress as P
from onnxmod.concern import ConcernConfig


class _Recorder:
    """Stands in for ``progress.bar``: records (label, unit, total) of every bar asked for."""

    def __init__(self):
        self.bars = []

    def __call__(self, total, unit="rows", desc=None):
        self.bars.append((desc or P._state["step"], unit, total))
        return _Bar()


class _Bar:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def update(self, n=1):
        pass

    def close(self):
        pass


def test_every_phase_draws_a_bar(tmp_path, monkeypatch):
    rec = _Recorder()
    monkeypatch.setattr(P, "bar", rec)
    model, data = fixture_path("ctc", "crnn_batch_first.onnx"), fixture_path("ctc", "data.npz")
    with P.shown(True):
        api.decompose(model, data, tmp_path / "o", labels="model", config=ConcernConfig(removal_cap=0.05))
    steps = {(label, unit) for label, unit, _ in rec.bars}
    assert ("labels", "rows") in steps  # the model's answers on each split
    assert any(u == "classes" for _, u in steps)  # scoring, per class
    assert ("guard", "modules") in steps and ("guard", "rows") in steps  # building, checking
    assert ("evaluate", "rows") in steps
    assert any(u == "files" for _, u in steps)  # writing module files
    totals = {u: t for _, u, t in rec.bars}
    assert totals["classes"] == 10 and totals["files"] == 10


def test_verbose_says_each_step_with_its_size(math_lstm1, tmp_path):
    model, data = math_lstm1
    res = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o", "-v")
    assert res.returncode == 0, res.stderr
    info = [ln[len("onnxmod: info: "):] for ln in res.stderr.splitlines() if ln.startswith("onnxmod: info: ")]
    starts = ["reading ", "model: 1:1, 8 classes", "identifying concerns (rolled mode", "tracing 3,936 training rows",
              "scoring 64 units of 1 recurrent layer for 8 classes", "guard: the model scores",
              "guard: removal cap 0.05: building 8 modules", "fusing 8 modules",
              "evaluating the model and the composition on 2,359 test rows",
              "writing "]
    at = [next((i for i, ln in enumerate(info) if ln.startswith(s)), None) for s in starts]
    assert None not in at, (starts, info)
    assert at == sorted(at), info
    debug = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "p", "-vv", "--no-guard")
    lines = debug.stderr.splitlines()
    assert any("onnxmod: debug: class algebra: 500 positive and" in ln for ln in lines), debug.stderr[-2000:]
    assert any(ln.startswith("onnxmod: debug: module algebra: 202,600 parameters, kept units") for ln in lines)
    assert np.all([not ln.startswith("onnxmod: debug:") for ln in res.stderr.splitlines()])
