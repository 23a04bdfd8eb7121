"""tools/bench.py's comparison with older commits (issue 22): each commit's onnxmod is extracted
apart from this tree and the ratios are printed side by side. The timings themselves are never
asserted (they are measured by the tool, not tested)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import bench  # noqa: E402


def _has(commit: str) -> bool:
    res = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    return res.returncode == 0


@pytest.mark.skipif(not (_has(bench.BASELINE) and _has(bench.SLOWED)), reason="a clone without the history")
def test_older_commits_are_extracted_apart_and_shown_side_by_side(tmp_path, capsys):
    before = bench._tree(bench.BASELINE, tmp_path / "before")
    assert (before / "onnxmod" / "api.py").exists() and not (before / "onnxmod" / "plots.py").exists()
    slowed = bench._tree(bench.SLOWED, tmp_path / "slowed")
    assert "matplotlib" in (slowed / "onnxmod" / "report_html.py").read_text()  # what slowed decompose
    o = {"target": "t/m", "plain_pass_s": [0.01, 0.012],
         "ratios": {n: {bench.BASELINE: 23.7, bench.SLOWED: 59.1, "this tree": 22.0} for n in bench.CONFIGS},
         "cpu_s": {n: {bench.BASELINE: 0.3, bench.SLOWED: 0.6, "this tree": 0.3} for n in bench.CONFIGS}}
    bench.show_comparison(o, [bench.BASELINE, bench.SLOWED])
    out = capsys.readouterr().out
    assert f"{bench.BASELINE} (before)" in out and f"{bench.SLOWED} (slowed)" in out and "this tree" in out
    for name in bench.CONFIGS:
        assert any(line.strip().startswith(name) and "59.1x" in line and "22.0x" in line for line in out.splitlines())
