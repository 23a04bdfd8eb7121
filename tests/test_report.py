"""report.md, the printed table and report.html, on real decompositions of the shipped fixtures:
each shape's metric named in the header, the guard's decision in words, the warnings that matter,
and a self-contained HTML page that a real browser (headless Chromium, when installed) renders with
every chart drawn."""
import html
import json
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from conftest import fixture_path

from onnxmod import api, report_html
from onnxmod import report as rep


def _decompose(tmp_path_factory, task, model, **kw):
    out = tmp_path_factory.mktemp(task) / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = model.rsplit("/", 1)[0] + "/data.npz" if "/" in model else "data.npz"
        r = api.decompose(fixture_path(task, model), fixture_path(task, data), out, progress=False, **kw)
    return r, out, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    return _decompose(tmp_path_factory, "translation", "en_frdeit/lstm.onnx")


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return _decompose(tmp_path_factory, "cmu_phones", "lstm1.onnx")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    return _decompose(tmp_path_factory, "math_topics", "lstm1.onnx", max_loss=1.0)


def test_translator_table_shows_bleu_per_language(translator):
    r, out, _ = translator
    table = rep.table(r)
    head = table.splitlines()[1]
    assert "model BLEU" in head and "composed BLEU" in head and "acc%" not in head
    assert table.splitlines()[0].startswith("BLEU per target language")
    for m in r["modules"]:
        row = next(ln for ln in table.splitlines() if re.match(rf"\s*{m['class']}\s+{m['name']}\s", ln))
        assert "—" not in row
        assert f"{r['monolithic_bleu'][m['name']]:.2f}" in row and f"{r['composed_bleu'][m['name']]:.2f}" in row
    md = (out / "report.md").read_text()
    assert "| model BLEU | composed BLEU |" in md and "mean BLEU" in md
    assert "teacher-forced next-token accuracy" in md  # the 71.30 is labelled now


def test_guard_backing_off_to_cap_zero_warns_and_says_why(translator):
    r, out, caught = translator
    assert r["size_search"]["cap"] == 0.0 and all(m["jaccard"] == 1.0 for m in r["modules"])
    assert any("backed off to removal cap 0" in w and "modules are the whole model" in w for w in caught), caught
    md = (out / "report.md").read_text()
    assert "modules are the whole model" in md and "cap 0.05" in md and "rejected" in md


def test_tagger_table_names_token_accuracy(tagger):
    r, out, caught = tagger
    assert r["shape"] == "1:N" and r["mode"] == "unrolled"
    head = rep.table(r).splitlines()[1]
    assert "model tok-acc%" in head and "composed tok-acc%" in head
    assert "token accuracy" in (out / "report.md").read_text()
    assert not any("cap 0" in w for w in caught)
    for m in r["modules"]:  # the heat map's data: per step, per layer, never more than the layer has
        for layer, steps in m["kept_units_per_step"].items():
            assert len(steps) > 1 and all(0 < k <= m["units"][layer] for k in steps)


def test_size_search_that_grew_the_composition_warns(searched):
    r, out, caught = searched
    s = r["size_search"]
    assert s["kind"] == "size search"
    grew = r["composed_params"] > s["reference_cap_params"]
    assert grew == any("bigger than the default removal cap" in w for w in caught), caught
    md = (out / "report.md").read_text()
    assert ("bigger than the default removal cap" in md) == grew
    assert "accuracy % per class" in md and "| model acc% | composed acc% |" in md


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, flags=re.S)


def test_html_is_self_contained_and_deterministic(searched, tagger, translator):
    import xml.etree.ElementTree as ET

    for r, out, _ in (searched, tagger, translator):
        page = (out / "report.html").read_text()
        assert page == report_html.decomposition(r)  # same report, same bytes
        assert not re.search(r"\b(src|href)=", page), "the page must not load anything"
        assert "<script" not in page and "<img" not in page
        charts = _svgs(page)
        assert len(charts) >= 3
        for svg in charts:
            root = ET.fromstring(svg)  # well-formed
            assert root.get("role") == "img" and root.find("{http://www.w3.org/2000/svg}title").text
            assert float(root.get("width")) > 100 and float(root.get("height")) > 100
        assert page.count("<table>") >= 2
        for m in r["modules"]:
            assert f"<td>{html.escape(m['name'])}</td>" in page


def test_plots_need_nothing_beyond_the_runtime_dependencies(math_lstm1, tmp_path):
    """Issue 22: the README's first command wrote report.html without plots unless the [report]
    extra (matplotlib) was installed. Charts are inline SVG now: a decomposition where matplotlib
    cannot even be imported still draws them, and pyproject's runtime dependencies are all it needs."""
    import subprocess
    import sys

    import tomllib
    from conftest import ROOT

    model, data = math_lstm1
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # any import of matplotlib fails
            "from onnxmod.cli import main\n"
            f"sys.exit(main(['decompose', {str(model)!r}, '--data', {str(data)!r}, '--out', "
            f"{str(tmp_path / 'out')!r}, '-q']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "out" / "report.html").read_text()
    titles = re.findall(r"<svg[^>]*>\s*<title>([^<]*)</title>", page)
    assert len(titles) >= 4, titles  # δ per class, kept units, units dropped, the guard's trail
    assert "need matplotlib" not in page
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any("matplotlib" in d for d in project["dependencies"])
    assert not any("matplotlib" in d for extra in project["optional-dependencies"].values() for d in extra)


def _recurrent_weight(path):
    """R of the one LSTM of a model or module file."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    node = next(n for n in g.node if n.op_type == "LSTM")
    return numpy_helper.to_array(next(t for t in g.initializer if t.name == node.input[2]))


def _svg_of(page: str, title_part: str) -> str:
    return next(s for s in _svgs(page) if title_part in s.split("</title>")[0])


def test_heat_maps_use_a_fixed_labelled_scale_and_show_each_class_s_dropped_units(searched, tagger):
    """Issue 22: the kept-units scale was auto-ranged (0.95 kept drawn as the darkest colour) and a
    one-layer model's map was one uniform column. Now 0-1, labelled, and a units x classes map per
    layer shows which units each class drops, with the share of classes dropping each unit."""
    from onnxmod import plots

    r, out, _ = searched
    page = (out / "report.html").read_text()
    kept = _svg_of(page, "kept units per class and layer")
    assert "share of units kept" in kept and all(f">{t}</text>" in kept for t in ("0", "0.5", "1"))
    m = r["modules"][0]
    layer = next(iter(m["units"]))
    frac = m["kept_units"][layer] / m["units"][layer]
    assert f'fill="{plots.colour(frac)}"' in kept and plots.colour(frac) != plots.colour(0.0)  # fixed scale
    dropped = _svg_of(page, "units dropped per class")
    assert "share of classes" in dropped and "1 = dropped" in dropped
    R = _recurrent_weight(r["model"])
    H = R.shape[-1]
    for mod in r["modules"]:  # what the map draws is what the module file holds: R without those units
        gone = mod["dropped_units"][layer]
        assert len(gone) == mod["units"][layer] - mod["kept_units"][layer]
        keep = np.setdiff1d(np.arange(H), gone)
        rows = np.concatenate([g * H + keep for g in range(R.shape[1] // H)])
        np.testing.assert_array_equal(_recurrent_weight(out / mod["file"]), R[:, rows][:, :, keep])
    rows = [set(mod["dropped_units"][layer]) for mod in r["modules"]]
    assert len({frozenset(x) for x in rows}) > 1  # classes drop different units: the map is no uniform column
    r2, out2, _ = tagger
    page2 = (out2 / "report.html").read_text()
    assert "share of steps dropped" in _svg_of(page2, "units dropped per class")
    for mod in r2["modules"]:
        for lay, units in mod["dropped_units"].items():
            assert len(units) == len(mod["dropped_unit_steps"][lay])
            T = len(mod["kept_units_per_step"][lay])
            assert all(1 <= k <= T for k in mod["dropped_unit_steps"][lay])
            kept = mod["kept_units_per_step"][lay]
            assert sum(mod["dropped_unit_steps"][lay]) == sum(mod["units"][lay] - k for k in kept)


_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.querySelectorAll('svg')].map(s => { const r = s.getBoundingClientRect();
    return [true, r.width, r.height]; });
  document.body.setAttribute('data-probe', JSON.stringify({imgs,
    tables: document.querySelectorAll('table').length, rows: document.querySelectorAll('tr').length}));
});</script></body>"""


def _render(page_path, tmp_path):
    """Load a copy of the page (the probe appended) in headless Chromium; the DOM after load."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    probe = tmp_path / "probe.html"
    probe.write_text(page_path.read_text().replace("</body>", _PROBE))
    res = subprocess.run([_CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'data-probe="([^"]*)"', res.stdout)
    assert m, (res.returncode, res.stderr[-2000:])
    return json.loads(html.unescape(m.group(1)))


@pytest.mark.skipif(_CHROMIUM is None, reason="no chromium (apt-get install chromium)")
def test_chromium_decodes_every_image_and_shows_the_tables(searched, tagger, translator, tmp_path):
    for i, (r, out, _) in enumerate((searched, tagger, translator)):
        got = _render(out / "report.html", tmp_path / str(i))
        page = (out / "report.html").read_text()
        assert len(got["imgs"]) == page.count("<svg") >= 3
        assert all(done and w > 0 and h > 0 for done, w, h in got["imgs"]), got
        assert got["tables"] == page.count("<table>") >= 2
        assert got["rows"] >= len(r["modules"]) + 2


@pytest.mark.skipif(_CHROMIUM is None, reason="no chromium (apt-get install chromium)")
def test_chromium_renders_an_evaluation_report(searched, tmp_path):
    r, out, _ = searched
    data = fixture_path("math_topics", "data.npz")
    pair = tmp_path / "pair.onnx"
    api.compose([out / r["modules"][0]["file"], out / r["modules"][2]["file"]], pair)
    res = api.evaluate(pair, data, report=tmp_path / "pair.html")
    assert [c["name"] for c in res["per_class"]] == [r["modules"][0]["name"], r["modules"][2]["name"]]
    got = _render(tmp_path / "pair.html", tmp_path / "b")
    assert got["tables"] == 1 and len(got["imgs"]) == 1 and got["imgs"][0][1] > 0
