"""The documentation points at things that exist: every relative link in README.md and docs/*.md
resolves to a file of the repository (and, with a ``#fragment``, to a heading of that file), every
repository path it mentions (``python tools/X.py``, ``fixtures/...``, ``tests/...``, ``docs/...``)
exists, and every page of docs/ is linked from the README."""
import glob
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
PATH = re.compile(r"(?<![\w./-])((?:tools|fixtures|tests|docs|\.ci)/[\w./*{},-]*[\w*}])")


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans (links inside code are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip()).lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated headings get GitHub's -1, -2 suffixes)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(page: Path) -> list[str]:
    return LINK.findall(_prose(page.read_text(encoding="utf-8")))


def _expand(path: str) -> list[str]:
    """``a/{b,c}.onnx`` -> ``a/b.onnx``, ``a/c.onnx``."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [q for alt in m.group(1).split(",") for q in _expand(path[:m.start()] + alt + path[m.end():])]


def mentioned_paths(page: Path) -> list[str]:
    """Repository paths written in a page, in prose or code (placeholders like ``<task>`` skipped)."""
    text = page.read_text(encoding="utf-8")
    found = []
    for m in PATH.finditer(text):
        if "<" in text[m.start():m.end() + 1] or m.group(1).endswith("/"):
            continue
        found.extend(_expand(m.group(1).rstrip(".,:;")))
    return found


def test_the_pages_exist():
    names = {p.name for p in PAGES[1:]}
    assert {"method.md", "flow.md", "exporters.md", "performance.md", "reliability.md", "zoo.md"} <= names


def test_slug_matches_github():
    assert slug("Text recognizers (CTC heads)") == "text-recognizers-ctc-heads"
    assert slug("Smaller modules (`--max-loss`)") == "smaller-modules---max-loss"
    assert slug("What today's onnxmod makes of them") == "what-todays-onnxmod-makes-of-them"
    assert slug("5. Removing units: physical and exact") == "5-removing-units-physical-and-exact"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    bad = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, fragment = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.is_relative_to(ROOT) or not dest.exists():
            bad.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{fragment} in {dest.relative_to(ROOT)}")
    assert not bad, bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_mentioned_paths_exist(page):
    missing = [p for p in mentioned_paths(page) if not glob.glob(str(ROOT / p))]
    assert not missing, f"{page.relative_to(ROOT)} mentions paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_tools_commands_exist(page):
    text = page.read_text(encoding="utf-8")
    missing = [t for t in re.findall(r"python (tools/[\w/]+\.py)", text) if not (ROOT / t).exists()]
    assert not missing, missing


# a line that is one upper-case token: numbers left to fill (a draft's BENCH_CELLS, say)
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]{4,}$")


def placeholders(page) -> list[str]:
    return [line for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines()
            if PLACEHOLDER.match(line.strip())]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_placeholder_is_left(page):
    assert not placeholders(page), f"{page.relative_to(ROOT)} has placeholders where numbers belong"


def test_every_docs_page_is_linked_from_the_readme():
    readme = ROOT / "README.md"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in links(readme)}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link (add them to its documentation list): {orphans}"


def test_the_checks_can_fail(tmp_path):
    page = tmp_path / "x.md"
    page.write_text("See [gone](nowhere.md), `python tools/no_such_tool.py` and `fixtures/no/such.onnx`.\n"
                    "```\n[in code](ignored.md)\n```\n")
    assert links(page) == ["nowhere.md"]
    assert "fixtures/no/such.onnx" in mentioned_paths(page) and "tools/no_such_tool.py" in mentioned_paths(page)
    assert _expand("a/{b,c}.onnx") == ["a/b.onnx", "a/c.onnx"]
    page.write_text("| a | b |\n\nBENCH_CELLS\n\nSee `BENCH` in prose.\n")
    assert placeholders(page) == ["BENCH_CELLS"]
