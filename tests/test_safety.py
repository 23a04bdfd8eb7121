"""onnxmod.safety: what onnxmod may write over and what it may clean up (issue 12)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from onnxmod import safety
from onnxmod.errors import UsageError


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_output_holding_an_input_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    model = tmp_path / "in" / "m.onnx"
    model.write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "in")
    for out in (tmp_path / "in", tmp_path, tmp_path / "link", tmp_path / "in" / "sub" / ".."):
        with pytest.raises(UsageError, match="holds the input"):
            safety.check_not_over_inputs(out, [model])
    safety.check_not_over_inputs(tmp_path / "in" / "out", [model])  # beside the inputs: fine


def test_foreign_names_what_onnxmod_did_not_write(tmp_path):
    out = tmp_path / "out"
    (out / "modules").mkdir(parents=True)
    (out / "modules" / "a.onnx").write_bytes(b"m")
    (out / "composed.onnx").write_bytes(b"c")
    (out / "report.json").write_bytes(b"{}")
    assert safety.foreign(out) is None  # the layout written before the marker existed
    (out / safety.MARKER).write_bytes(safety.marker_bytes(["modules/a.onnx", "composed.onnx", "report.json"]))
    assert safety.foreign(out) is None
    (out / "notes.txt").write_text("mine")
    assert "'notes.txt'" in safety.foreign(out)
    (out / "notes.txt").unlink()
    (out / safety.MARKER).write_text(json.dumps({"onnxmod_output": 1, "files": "all"}))
    assert "damaged" in safety.foreign(out)
    (out / safety.MARKER).unlink()
    (out / "modules" / "b.txt").write_text("x")
    assert "no .onnxmod-output marker" in safety.foreign(out)


def test_marker_is_deterministic():
    assert safety.marker_bytes(["b", "a"]) == safety.marker_bytes(["a", "b"])


def test_force_replaces_only_onnxmod_files(tmp_path):
    (tmp_path / "notes.onnx").write_text("not a model")
    with pytest.raises(UsageError, match="already exists"):
        safety.check_output_file(tmp_path / "notes.onnx", force=False)
    with pytest.raises(UsageError, match="not an ONNX file written by onnxmod"):
        safety.check_output_file(tmp_path / "notes.onnx", force=True)
    assert safety.check_output_file(tmp_path / "new.onnx", force=True) == tmp_path / "new.onnx"


def test_sweep_removes_only_provably_stale_leftovers(tmp_path):
    dead = _dead_pid()
    final = tmp_path / "out"
    stale = tmp_path / f".out.{dead}.abc.partial"
    stale.mkdir()
    (stale / safety.MARKER).write_text(json.dumps({"onnxmod_output": 0, "pid": dead, "host": os.uname().nodename}))
    stale_tmp = tmp_path / f".out.{dead}.x1.tmp"
    stale_tmp.write_bytes(b"half")
    other_tmp = tmp_path / f".other.onnx.{dead}.k2x_9qa1.tmp"  # another output's, in the same folder
    other_tmp.write_bytes(b"half")
    other = tmp_path / f".other.{dead}.abc.partial"
    other.mkdir()
    (other / safety.MARKER).write_text(json.dumps({"onnxmod_output": 0, "pid": dead, "host": os.uname().nodename}))
    keep = [tmp_path / f".out.{dead}.nomark.partial",  # no stamp: not provably ours
            tmp_path / f".out.{os.getpid()}.live.partial",  # a live writer
            tmp_path / f".other.{os.getpid()}.x.tmp",  # another output's, live writer
            tmp_path / f".other.{dead}.x.txt",  # not onnxmod's naming
            tmp_path / f".{dead}.x.tmp",  # no output name
            tmp_path / f".out.{dead}.x.txt"]  # not onnxmod's naming
    for p in keep:
        p.mkdir() if p.suffix == ".partial" else p.write_bytes(b"x")
    wrong = tmp_path / f".out.{dead}.wrongpid.partial"
    wrong.mkdir()
    (wrong / safety.MARKER).write_text(json.dumps({"onnxmod_output": 0, "pid": dead + 1, "host": os.uname().nodename}))
    keep.append(wrong)
    removed = safety.sweep_stale(final)
    assert sorted(removed) == sorted([stale, stale_tmp, other_tmp, other])
    assert all(p.exists() for p in keep)
