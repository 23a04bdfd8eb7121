"""onnxmod.pipeline: decompose's steps below the API (issue 23): the caller's configuration stays
as it was given, and nothing under onnxmod/ but the CLI climbs back up to ``onnxmod.api``."""
from __future__ import annotations

import ast
import copy
import json

import numpy as np
import pytest
from conftest import ROOT, fixture_path

from onnxmod import api, pipeline
from onnxmod.concern import ConcernConfig
from onnxmod.errors import UsageError
from onnxmod.sampling import SamplingConfig

PACKAGE = ROOT / "onnxmod"


def _small_config() -> ConcernConfig:
    return ConcernConfig(sampling=SamplingConfig(positives=40, negatives=40, max_sequences=120))


@pytest.mark.parametrize("options", [{}, {"max_loss": 1.0}], ids=["guard", "size search"])
def test_decompose_leaves_the_callers_config_as_it_was(tmp_path, options):
    """``seed`` reaches the sampling through a copy: the ConcernConfig the caller passed (and its
    SamplingConfig) is not changed, by the guard's run nor by the size search's."""
    cfg = _small_config()
    before = copy.deepcopy(cfg)
    r = api.decompose(fixture_path("math_topics", "lstm1.onnx"), fixture_path("math_topics", "data.npz"),
                      tmp_path / "out", mode="rolled", seed=3, config=cfg, progress=False, evaluate=False, **options)
    assert cfg == before and cfg.sampling.seed == 0
    assert r["config"]["sampling"]["seed"] == 3  # ... while the run used the seed it was given
    assert json.loads((tmp_path / "out" / "report.json").read_text())["config"]["sampling"]["seed"] == 3


def test_a_refused_option_leaves_the_callers_config_as_it_was(tmp_path):
    cfg = _small_config()
    cfg.removal_cap = 2.0  # outside 0..1: refused by validate, after the seed is applied to the copy
    before = copy.deepcopy(cfg)
    with pytest.raises(UsageError, match="removal cap"):
        api.decompose(fixture_path("math_topics", "lstm1.onnx"), fixture_path("math_topics", "data.npz"),
                      tmp_path / "out", seed=5, config=cfg, progress=False)
    assert cfg == before


def _imports_api(path, text: str | None = None) -> list[int]:
    """The lines of ``path`` (or of ``text`` as if it were that file) that import ``onnxmod.api``
    (absolute or relative, the module or a name of it)."""
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text)
    depth = len(path.relative_to(PACKAGE).parts) - 1  # folders below onnxmod/
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            lines += [node.lineno for a in node.names if a.name == "onnxmod.api"]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            elif node.level - 1 > depth:
                continue
            else:  # a relative import, resolved against the file's package
                package = ["onnxmod", *path.relative_to(PACKAGE).parts[:-1]]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            if base == "onnxmod.api" or (base == "onnxmod" and any(a.name == "api" for a in node.names)):
                lines.append(node.lineno)
    return lines


def _is_cli(path) -> bool:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] == "cli" or (len(rel.parts) == 1 and rel.name.startswith("cli"))


def test_nothing_below_the_cli_imports_the_api():
    """``api`` is the façade the CLI calls: the floors below it (the pipeline, zoo, search, ...)
    never import it, so it can change without a circle (issue 23 found api <-> zoo)."""
    files = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "pipeline" / "decomposition.py" in files and PACKAGE / "zoo.py" in files
    offenders = {str(p.relative_to(ROOT)): _imports_api(p) for p in files
                 if p.name != "api.py" and not _is_cli(p)}
    assert {p: lines for p, lines in offenders.items() if lines} == {}
    assert any(_imports_api(p) for p in (PACKAGE / "cli").rglob("*.py"))  # the checker sees the CLI's import


def test_the_checker_sees_every_way_of_importing_the_api():
    """The test above can fail: each spelling of an import of ``onnxmod.api`` is found."""
    sub = PACKAGE / "pipeline" / "decomposition.py"  # a file one folder below onnxmod/
    for text in ("from .. import api", "from ..api import decompose", "import onnxmod.api",
                 "from onnxmod import api, zoo", "from onnxmod.api import decompose"):
        assert _imports_api(sub, text) == [1], text
    assert _imports_api(PACKAGE / "zoo.py", "from . import api") == [1]
    assert _imports_api(sub, "from . import api\nfrom .. import zoo") == []  # onnxmod.pipeline.api is not onnxmod.api


def test_the_api_keeps_its_public_names():
    """What cli.py, tests and tools call: still importable from onnxmod.api, and the same objects
    as the pipeline's."""
    for name in ("decompose", "compose", "replace", "split", "evaluate", "inspect", "fingerprint", "zoo_index",
                 "zoo_find", "resolve_mode", "load_dataset_for", "identify_concerns", "module_file_names",
                 "vocab_fingerprint", "MODES", "MONITORS", "MAX_NAME"):
        assert callable(getattr(api, name)) or isinstance(getattr(api, name), (tuple, int)), name
    assert api.identify_concerns is pipeline.identify_concerns and api.module_file_names is pipeline.module_file_names


def test_the_size_search_reads_more_validation_rows_than_the_guard():
    """The guard reads at most GUARD_ROWS seeded rows (it only compares caps); the size search
    reads up to SEARCH_ROWS, because its certification needs every row it can get."""
    from onnxmod.io import Dataset
    from onnxmod.pipeline.holdout import GUARD_ROWS, holdout

    n = GUARD_ROWS * 2
    x = np.arange(n * 3, dtype=np.int64).reshape(n, 3)
    d = Dataset("d.npz", x[:10], np.zeros(10, np.int64), x[:10], np.zeros(10, np.int64),
                x_val=x, y_val=np.arange(n, dtype=np.int64) % 4)
    _, xg, yg = holdout(d, seed=0, guard=True)
    _, xs, ys = holdout(d, seed=0, guard=False)
    assert len(yg) == GUARD_ROWS and len(ys) == n
    assert np.array_equal(xs, x) and np.isin(xg[:, 0], x[:, 0]).all()
    assert np.array_equal(holdout(d, seed=0, guard=True)[1], xg)  # seeded
