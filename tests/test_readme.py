"""The README's set-up command works as written (its onnxmod part, run on the shipped fixture)."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Set up", 1)[1].split("## Usage", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", block, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
    cmds = _setup_commands()
    assert len(cmds) == 2, cmds
    assert cmds[1].strip() == "pip install -e '.[test]' && python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1].strip() in ci  # CI runs the README's test command


def test_readme_main_command_runs(tmp_path):
    first = _setup_commands()[0].strip()
    assert first.startswith("pip install -e . && onnxmod decompose ")
    args = shlex.split(first.split("&&", 1)[1])[1:]  # drop 'onnxmod'
    out = args.index("--out")
    args[out + 1] = str(tmp_path / "out")
    res = subprocess.run([sys.executable, "-m", "onnxmod", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert "composed acc%" in res.stdout and "all" in res.stdout
    assert (tmp_path / "out" / "composed.onnx").exists() and (tmp_path / "out" / "report.json").exists()
