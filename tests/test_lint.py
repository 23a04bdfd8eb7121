"""The code is ``ruff`` clean: ``python -m ruff check onnxmod tests tools`` with the rule set of
pyproject.toml (``[tool.ruff]``), run by the README's test command so CI enforces it. The ruff
that runs is the one installed with the ``test`` extra (pinned there: another version may know
other rules)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pinned_ruff() -> str | None:
    """The ruff version the ``test`` extra pins in pyproject.toml (None when it pins none)."""
    m = re.search(r'"ruff==([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return m.group(1) if m else None


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_test_extra_pins_ruff():
    assert _pinned_ruff(), "pyproject.toml's test extra should pin ruff (\"ruff==X.Y.Z\")"


def test_ruff_is_clean():
    """No finding of ``ruff check`` over the package, the tests and the tools (the cache is not
    written: the test leaves the working tree as it found it)."""
    version = _ruff("--version")
    assert version.returncode == 0, (
        f"ruff is not installed in this environment ({version.stderr.strip()}); pip install -e '.[test]'")
    got = _ruff("check", "--no-cache", "--output-format", "concise", "onnxmod", "tests", "tools")
    assert got.returncode == 0, (
        f"{version.stdout.strip()} (pyproject pins {_pinned_ruff()}) finds problems; fix them or run "
        f"`python -m ruff check --fix onnxmod tests tools`:\n{got.stdout}{got.stderr}")
