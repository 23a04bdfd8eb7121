"""The README's "Your own model" runs as written: every ``python`` and ``bash`` block of the section,
in order, from a folder that sees the repository's fixtures. A block whose first line is
``# needs: MODULE ...`` runs only where those modules import: torch blocks skip without torch; the
Keras block runs with the python named by ``ONNXMOD_KERAS_PYTHON`` (a venv with TensorFlow and
tf2onnx, as ``tools/build_exporter_fixtures.py --keras-python``), or this one if it has them."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def blocks() -> list[tuple[str, set, str]]:
    """(language, needed modules, code) of every fenced block in the section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Your own model\n", 1)[1].split("\n## ", 1)[0]
    out = []
    for lang, code in re.findall(r"```(python|bash)\n(.*?)\n```", section, flags=re.S):
        first = code.splitlines()[0]
        needs = set(first.split(":", 1)[1].split()) if first.startswith("# needs:") else set()
        out.append((lang, needs, code))
    return out


def _has(modules) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _python_for(needs: set) -> str | None:
    """The interpreter that runs a block needing ``needs`` here, or None (skip it)."""
    if not needs or _has(needs):
        return sys.executable
    keras = os.environ.get("ONNXMOD_KERAS_PYTHON")
    if keras and needs <= {"tensorflow", "tf2onnx", "keras"}:
        return keras
    return None


def test_the_section_shows_every_path():
    got = blocks()
    needs = [n for _, n, _ in got]
    assert {"torch"} in needs and {"tensorflow", "tf2onnx"} in needs and set() in needs
    code = "\n".join(c for _, _, c in got)
    for what in ("dynamo=False", "dynamo=True", "Dim.AUTO", "tf2onnx.convert.from_keras", "x_train=x, x_test",
                 "y_train=y", "[N, T=8, F=8]", "[N, C=1, H=8, W=8]", "--labels model", "onnxmod decompose"):
        assert what in code, what


def test_the_section_runs(tmp_path):
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3")
    ran, skipped = [], []
    for lang, needs, code in blocks():
        python = _python_for(needs)
        if python is None:
            skipped.append(sorted(needs))
            continue
        if lang == "python":
            cmd = [python, "-c", code]
        else:  # `onnxmod` is this repository's, whatever is installed
            cmd = ["bash", "-c", f'set -e\nonnxmod() {{ "{sys.executable}" -m onnxmod "$@"; }}\n{code}']
        res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, (code, res.stdout[-2000:], res.stderr[-3000:])
        ran.append((lang, sorted(needs)))
    own = tmp_path / "out" / "own"
    for f in ("tokens.npz", "tokens_labelled.npz", "rows.npz", "pictures.npz", "digits/composed.onnx"):
        assert (own / f).exists(), f
    if ["torch"] in [n for _, n in ran]:
        for d in ("tagger", "tagger_dynamo"):
            assert (own / d / "composed.onnx").exists() and (own / d / "report.json").exists()
    if ["tensorflow", "tf2onnx"] in [n for _, n in ran]:
        assert (own / "keras" / "composed.onnx").exists()
    if skipped:
        pytest.skip(f"ran {len(ran)} blocks; skipped those needing {skipped}")
