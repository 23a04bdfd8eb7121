"""onnxmod.search: a decomposition that removes nothing says so, once, whatever the reason (issue 22)."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np

from conftest import ROOT, fixture_path
from onnxmod import search
from onnxmod.concern import Concern


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "onnxmod", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("onnxmod: warning:")]


def test_a_guard_cap_that_rounds_to_no_unit_warns_once(tmp_path):
    """torch's default exporter's Brown genre LSTM (24 units): the guard accepts cap 0.025, which
    removes floor(0.025 x 24) = 0 units; every module is the model, and one line says so."""
    res = _cli("decompose", fixture_path("exporters", "torch_dynamo/brown_genre_lstm1.onnx"), "--data",
               fixture_path("brown_genre", "data.npz"), "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    lines = _warnings(res.stderr)
    assert len(lines) == 1, res.stderr
    assert "0.025" in lines[0] and "below one unit" in lines[0] and "whole model" in lines[0], lines[0]
    assert "Nothing was removed" in (tmp_path / "out" / "report.md").read_text()


def test_a_removal_cap_below_one_unit_warns_without_the_guard(tmp_path, math_lstm1):
    model, data = math_lstm1
    res = _cli("decompose", model, "--data", data, "--out", tmp_path / "out", "--removal-cap", "0.01", "--no-guard",
               "--no-evaluate")
    assert res.returncode == 0, res.stderr
    lines = _warnings(res.stderr)
    assert len(lines) == 1 and "removal cap 0.01 is below one unit" in lines[0] and "64 units" in lines[0], lines
    res = _cli("decompose", model, "--data", data, "--out", tmp_path / "out2", "--no-evaluate")
    assert res.returncode == 0 and not _warnings(res.stderr), res.stderr  # units removed: nothing to say


def test_the_guard_backing_off_to_cap_zero_is_one_line(tmp_path, math_lstm1):
    model, data = math_lstm1
    res = _cli("decompose", model, "--data", data, "--out", tmp_path / "out", "--guard", "-1", "--no-evaluate")
    assert res.returncode == 0, res.stderr
    lines = _warnings(res.stderr)
    assert len(lines) == 1 and "backed off to removal cap 0 " in lines[0] and "whole model" in lines[0], lines


def _concern(keep):
    return Concern(0, "a", "rolled", {0: np.asarray(keep, bool), 1: np.ones(8, bool)})


def test_reasons_in_words():
    model = SimpleNamespace(recurrent=[SimpleNamespace(name="enc", index=0), SimpleNamespace(name="dec", index=1)])
    kept = [_concern(np.ones(40)), _concern(np.ones(40))]
    assert search.removes_nothing(kept)
    assert not search.removes_nothing([_concern(np.arange(40) > 0), kept[1]])
    pruned = _concern(np.ones(40))
    pruned.vocabulary = np.arange(10) > 0
    assert not search.removes_nothing([pruned])
    # cap 0.05: one unit of the 40-unit layer could go, none of the 8-unit one; the scores marked none
    why = search.why_nothing_removed(model, kept, 0.05, None)
    assert "concern scores mark any unit" in why and "'dec'" in why, why
    why = search.why_nothing_removed(model, kept, 0.02, None)
    assert "below one unit of every layer" in why and "'enc' with 40 units" in why, why
    why = search.why_nothing_removed(model, kept, 0.05, {"kind": "guard", "cap": 0.0, "tolerance_points": 0.5})
    assert why.startswith("the guard backed off to removal cap 0 (") and "accuracy" in why, why
    why = search.why_nothing_removed(model, kept, 0.05, {"kind": "size search", "max_loss_points": 0.2})
    assert "certified no removal within --max-loss 0.2" in why, why
