"""No rule fires on the committed fixtures (torch's legacy exporter): their analysis is unchanged."""
from pathlib import Path

import pytest

from onnxmod.graph import Model

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted(ROOT.glob("fixtures/*/*.onnx"))


def test_there_are_fixtures():
    assert len(FIXTURES) >= 30


@pytest.mark.parametrize("path", FIXTURES, ids=[f"{p.parent.name}/{p.name}" for p in FIXTURES])
def test_no_rule_fires(path):
    assert Model.load(path).rewrites == []
