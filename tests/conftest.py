import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (CI included): a failure reproduces, and a run
# never fails on an example the previous one did not draw. HYPOTHESIS_PROFILE=explore draws new ones.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def fixture_path(task: str, name: str) -> Path:
    p = FIXTURES / task / name
    if not p.exists():
        pytest.fail(f"fixture {p} is missing; rebuild with python tools/build_fixtures.py")
    return p


@pytest.fixture
def math_lstm1():
    return fixture_path("math_topics", "lstm1.onnx"), fixture_path("math_topics", "data.npz")
