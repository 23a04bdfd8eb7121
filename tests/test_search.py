"""onnxmod.search: a decomposition that removes nothing says so, once, whatever the reason (issue 22)."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
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


def test_class_losses_count_answers_turned_wrong_and_their_error_over_sequences():
    y = np.array([[0, 0, 1, -1], [0, 1, 1, 1]])
    ref = np.array([[0, 0, 1, 2], [0, 1, 1, 1]])  # every labelled answer right
    lab = np.array([[1, 1, 1, 0], [0, 1, 0, 1]])  # class 0 loses two answers in sequence 0; class 1 one in seq 1
    got = search.class_losses(lab, ref, y, y >= 0, [0, 1, 2])
    assert set(got) == {0, 1}  # class 2 has no labelled answer
    loss, se, n = got[0]
    assert n == 3 and loss == 2 / 3 and abs(se - 2 / 3) < 1e-12  # both losses in one sequence: sqrt(2^2) / 3
    loss, se, n = got[1]
    assert n == 4 and loss == 1 / 4 and abs(se - 1 / 4) < 1e-12
    assert search.class_over_bound(lab, ref, y, y >= 0, [0, 1], tolerance=0.1, z=0.0)[0] == 0  # the widest margin
    assert search.class_over_bound(lab, ref, y, y >= 0, [0, 1], tolerance=0.1, z=1.0) is None  # within its error
    assert search.class_over_bound(ref, ref, y, y >= 0, [0, 1], tolerance=0.0, z=0.0) is None


def test_flags_name_classes_far_below_the_bound():
    import warnings

    report = {"modules": [{"class": 0, "name": "a", "delta": -0.003, "delta_se": 0.002},
                          {"class": 1, "name": "b", "delta": -0.08, "delta_se": 0.02},
                          {"class": 2, "name": "c", "delta": -0.08, "delta_se": 0.04},
                          {"class": 3, "name": "d", "delta": None, "delta_se": None}]}
    flagged = search.flag_classes(report, 1.0, "--max-loss 1.0 points")
    assert [f["name"] for f in flagged] == ["b"] == [f["name"] for f in report["flagged_classes"]]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        search.warn(report)  # once the files are written
    assert len(w) == 1 and "'b' -8.00 (± 2.00)" in str(w[0].message) and "--max-loss 1.0" in str(w[0].message)
    assert search.flag_classes({"modules": report["modules"]}, None, "no bound") == []


def test_max_loss_bounds_each_class_on_brown_pos(tmp_path):
    """Issue 22's acceptance: `decompose fixtures/brown_pos/lstm1.onnx --mode rolled --max-loss 1.0`
    lost 1.03 points overall while PRT lost 15.91, NUM 5.45 and X 5.21, and nothing said so. Now the
    search bounds each class's recall too, and every class still below -5.0 on test is named in a
    warning (and in the report)."""
    import json

    res = _cli("decompose", fixture_path("brown_pos", "lstm1.onnx"), "--data", fixture_path("brown_pos", "data.npz"),
               "--mode", "rolled", "--max-loss", "1.0", "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "out" / "report.json").read_text())
    assert r["delta"] >= -0.010, r["delta"]
    lines = _warnings(res.stderr)
    low = [m["name"] for m in r["modules"] if m["delta"] < -0.05]
    for name in low:
        assert any(f"'{name}'" in ln and "far more" in ln for ln in lines), (name, lines)
    assert {f["name"] for f in r["flagged_classes"]} >= set(low)
    prt = next(m for m in r["modules"] if m["name"] == "PRT")
    assert prt["delta"] > -0.05, prt  # the class that collapsed is bounded now
    assert any(t.get("class_over_bound") for t in r["size_search"]["trail"])  # the per-class bound refused steps
    if low:
        assert "Beyond the bound" in (tmp_path / "out" / "report.md").read_text()


def test_loss_bound_takes_its_error_over_sequences():
    """One answer per row: (lost - won + sqrt(changed)) / n. Answers in one sequence move
    together, so a tagger's error is taken over sentences: the same four changed words bound
    higher when they are one sentence's than when they are four sentences'."""
    y, ref, lab = np.array([0, 1, 2, 0]), np.array([0, 1, 1, 1]), np.array([1, 1, 2, 0])
    assert search.loss_bound(lab, ref, y, np.ones(4, bool)) == pytest.approx((1 - 2 + np.sqrt(3)) / 4)
    y2 = np.zeros((4, 4), dtype=np.int64)
    ref2 = np.zeros_like(y2)
    spread, clumped = ref2.copy(), ref2.copy()
    spread[np.arange(4), np.arange(4)] = 1  # one lost word in each sentence
    clumped[0] = 1  # four lost words in one sentence
    rows = np.ones_like(y2, dtype=bool)
    assert search.loss_bound(spread, ref2, y2, rows) == pytest.approx((4 + 2) / 16)
    assert search.loss_bound(clumped, ref2, y2, rows) == pytest.approx((4 + 4) / 16)
    rows[:, 2:] = False  # unlabelled steps count nowhere
    assert search.loss_bound(clumped, ref2, y2, rows) == pytest.approx((2 + 2) / 8)


def test_the_guard_is_one_loop_whatever_the_metric():
    """``search.guard`` tries the caps in order until one is within the tolerance; cap 0 ends it
    either way (a smaller cap does not exist), and the trail names what was measured."""
    built = []

    def build(cap):
        built.append(cap)
        return ("composition at", cap)

    def run(got, caps=(0.1, 0.05, 0.0), tolerance=0.5):
        built.clear()
        return search.guard(list(caps), build, lambda cap, b: got[cap], 80.0, tolerance, "heldout_bleu")

    chosen, cap, trail = run({0.1: 79.6, 0.05: 80.0, 0.0: 80.0})
    assert (chosen, cap, built) == (("composition at", 0.1), 0.1, [0.1])
    assert trail == [{"cap": 0.1, "heldout_bleu": 79.6, "accepted": True}]
    chosen, cap, trail = run({0.1: 70.0, 0.05: 79.0, 0.0: 79.0})
    assert cap == 0.0 and built == [0.1, 0.05, 0.0] and [t["accepted"] for t in trail] == [False, False, False]
    chosen, cap, trail = run({0.0: 70.0}, caps=search.caps_of(0.0))  # --removal-cap 0: nothing smaller to try
    assert cap == 0.0 and len(trail) == 1 and not trail[0]["accepted"]
