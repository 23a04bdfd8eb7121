"""report.md, the printed table and report.html, on real decompositions of the shipped fixtures:
each shape's metric named in the header, the guard's decision in words, the warnings that matter,
and a self-contained HTML page that a real browser (headless Chromium, when installed) renders with
every image decoded."""
import base64
import html
import json
import re
import shutil
import subprocess
import warnings

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


def test_html_is_self_contained_and_deterministic(searched, tagger, translator):
    pytest.importorskip("matplotlib")
    for r, out, _ in (searched, tagger, translator):
        page = (out / "report.html").read_text()
        assert page == report_html.decomposition(r)  # same report, same bytes
        assert not re.search(r"(src|href)=\"(?!data:)", page), "the page must not load anything"
        assert "<script" not in page
        imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
        assert len(imgs) >= 3
        for b in imgs:
            assert base64.b64decode(b).startswith(b"\x89PNG\r\n\x1a\n")
        assert page.count("<table>") >= 2
        for m in r["modules"]:
            assert f"<td>{html.escape(m['name'])}</td>" in page


def test_html_without_matplotlib_keeps_the_tables(searched, monkeypatch):
    r, _, _ = searched
    monkeypatch.setattr(report_html, "_matplotlib", lambda: None)
    page = report_html.decomposition(r)
    assert "<img" not in page and "onnxmod[report]" in page
    assert page.count("<table>") == 2  # per class, and the size search's choices
    assert "Size search" in page and "kept after certification" in page


_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]);
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
    pytest.importorskip("matplotlib")
    for i, (r, out, _) in enumerate((searched, tagger, translator)):
        got = _render(out / "report.html", tmp_path / str(i))
        page = (out / "report.html").read_text()
        assert len(got["imgs"]) == page.count("<img") >= 3
        assert all(done and w > 0 and h > 0 for done, w, h in got["imgs"]), got
        assert got["tables"] == page.count("<table>") >= 2
        assert got["rows"] >= len(r["modules"]) + 2


@pytest.mark.skipif(_CHROMIUM is None, reason="no chromium (apt-get install chromium)")
def test_chromium_renders_an_evaluation_report(searched, tmp_path):
    pytest.importorskip("matplotlib")
    r, out, _ = searched
    data = fixture_path("math_topics", "data.npz")
    pair = tmp_path / "pair.onnx"
    api.compose([out / r["modules"][0]["file"], out / r["modules"][2]["file"]], pair)
    res = api.evaluate(pair, data, report=tmp_path / "pair.html")
    assert [c["name"] for c in res["per_class"]] == [r["modules"][0]["name"], r["modules"][2]["name"]]
    got = _render(tmp_path / "pair.html", tmp_path / "b")
    assert got["tables"] == 1 and len(got["imgs"]) == 1 and got["imgs"][0][1] > 0
