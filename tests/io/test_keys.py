"""``onnxmod.io.keys``: the ``onnxmod.*`` metadata keys are named once. Read from the source with
``ast``: no module of onnxmod but ``io/keys.py`` spells a key as a string literal — neither a bare
``"onnxmod.kind"`` nor a key inside a message (``f"metadata 'onnxmod.kind' is ..."``) — and every
key named there is used somewhere.

Not keys, and so not flagged: docstrings (prose that names modules, ``onnxmod.cells``, and keys, in
double backquotes), node-name prefixes (``"onnxmod/..."``: a slash, not a dot), the logger's and the
producer's name (``"onnxmod"``: no dot)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from onnxmod.io import keys

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "onnxmod"
KEYS_FILE = PACKAGE / "io" / "keys.py"
KEY_SHAPED = re.compile(r"onnxmod\.[a-z][a-z0-9_]*")


def named_keys() -> dict[str, str]:
    """Every key constant of ``onnxmod.io.keys`` (name -> value), ``PREFIX`` left out."""
    return {n: v for n, v in vars(keys).items() if n.isupper() and n != "PREFIX" and isinstance(v, str)}


def _docstrings(tree: ast.AST) -> set[int]:
    """``id`` of every docstring's Constant node (module, class, function)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def key_literals(source: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, text) of every string literal of ``source`` that spells a metadata key: one that is
    exactly ``onnxmod.<name>``, or (a message, a help text, an f-string's text) that contains a key
    of ``known``. Docstrings are prose and left out."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in skip:
            continue
        text = node.value
        if KEY_SHAPED.fullmatch(text) or any(m.group(0) in known for m in KEY_SHAPED.finditer(text)):
            found.append((node.lineno, text))
    return sorted(found)


def test_no_module_spells_a_metadata_key_as_a_literal():
    known = set(named_keys().values())
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == KEYS_FILE:
            continue
        for line, text in key_literals(path.read_text(encoding="utf-8"), known):
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {text[:60]!r}")
    assert not offenders, "use onnxmod.io.keys instead of:\n" + "\n".join(offenders)


def test_the_scan_finds_keys_in_literals_and_messages_but_not_in_prose():
    """The scan above can fail: a bare key, a dict key, a key in an f-string's text or a help text
    are found; a docstring, a node-name prefix and the logger's name are not."""
    source = '''"""Module prose: ``onnxmod.kind`` and ``onnxmod.cells``."""
import logging
log = logging.getLogger("onnxmod")
def f(meta, where):
    """Reads ``onnxmod.class_index``."""
    name = "onnxmod/scores"
    a = meta.get("onnxmod.kind")
    b = {"onnxmod.some_new_key": 1}
    raise ValueError(f"{where}: metadata 'onnxmod.ctc_blank' is {a!r}")
HELP = "default: the model's onnxmod.ctc_blank metadata"
'''
    found = key_literals(source, {keys.KIND, keys.CTC_BLANK, keys.CLASS_INDEX})
    assert [line for line, _ in found] == [7, 8, 9, 10], found


def test_the_keys_are_distinct_prefixed_and_all_used():
    """One constant per key, each ``PREFIX`` + a lowercase name, and each read or written somewhere
    in onnxmod (``keys.NAME``): a key nobody uses is a stale entry of the vocabulary."""
    named = named_keys()
    assert len(set(named.values())) == len(named)
    for name, value in named.items():
        assert KEY_SHAPED.fullmatch(value) and value == keys.PREFIX + name.lower(), name
    used = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == KEYS_FILE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "keys":
                used.add(node.attr)
    assert set(named) - used == set(), f"keys named in onnxmod/io/keys.py but never used: {set(named) - used}"
