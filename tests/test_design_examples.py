"""docs/design.md's worked examples are real: every fenced block tagged ``example=...`` runs here.

The rule and the front-end run as the package modules they would be (their relative imports
resolve); their registration blocks are run with the registry's own names in scope and must make
the real registry plus the one new entry; and the example's tests run as the tests they would be,
with the registry so made in place of the real one (``normalize`` and ``recognize`` read it)."""
import ast
import re
import sys
import types
from pathlib import Path

import pytest

import onnxmod.recurrence
import onnxmod.rewrite

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "design.md"
BLOCK = re.compile(r"^```python example=([\w-]+)\n(.*?)^```[ \t]*$", re.M | re.S)

# example -> (the module it would be, its class, the package whose registry it joins, the registry,
#             the tests folder its test would live in)
EXAMPLES = {
    "rule": ("onnxmod.rewrite.cancel_transposes", "CancelTransposes", onnxmod.rewrite, "RULES", "rewrite"),
    "frontend": ("onnxmod.recurrence.fused_lstm", "FusedLSTMOps", onnxmod.recurrence, "FRONTENDS", "recurrence"),
}


def blocks() -> dict[str, str]:
    """The tagged blocks of docs/design.md, by tag (each tag once)."""
    found = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    tags = [tag for tag, _ in found]
    assert len(tags) == len(set(tags)), f"{DOC.name}: a tag is used twice: {tags}"
    return dict(found)


def _test_names(example: str) -> list[str]:
    code = blocks().get(f"{example}-test", "")
    return [n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


CASES = [(example, name) for example in EXAMPLES for name in _test_names(example)]


def as_module(name: str, code: str, monkeypatch) -> types.ModuleType:
    """``code`` run as module ``name`` of the package (registered in ``sys.modules`` for this test)."""
    module = types.ModuleType(name)
    module.__package__ = name.rpartition(".")[0]
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(code, f"{DOC} [{name}]", "exec"), module.__dict__)
    return module


def register(example: str, monkeypatch) -> tuple[tuple, type]:
    """Run the example's file and registration blocks; put the registry they make in place of the
    package's own (for this test) and return it with the example's class."""
    module_name, cls_name, package, registry, _ = EXAMPLES[example]
    code = blocks()
    cls = getattr(as_module(module_name, code[example], monkeypatch), cls_name)
    scope = {k: v for k, v in vars(package).items() if k != "__annotations__"}
    exec(compile(code[f"{example}-registry"], f"{DOC} [{example}-registry]", "exec"), scope)
    made = scope[registry]
    monkeypatch.setattr(package, registry, made)
    return made, cls


def test_the_page_shows_both_examples_whole():
    assert set(blocks()) == {f"{e}{part}" for e in EXAMPLES for part in ("", "-registry", "-test")}
    assert all(_test_names(example) for example in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_registration_is_the_real_registry_plus_one_line(example, monkeypatch):
    _, _, package, registry, _ = EXAMPLES[example]
    real = getattr(package, registry)
    made, cls = register(example, monkeypatch)
    assert isinstance(made, tuple) and sum(isinstance(x, cls) for x in made) == 1
    assert [type(x) for x in made if not isinstance(x, cls)] == [type(x) for x in real], (
        f"docs/design.md's {registry} block is not onnxmod's {registry} plus the example: update the page")


@pytest.mark.parametrize(("example", "name"), CASES, ids=[f"{e}::{n}" for e, n in CASES])
def test_the_examples_test_passes(example, name, monkeypatch):
    """The example's test function ``name``, run with the example registered."""
    register(example, monkeypatch)
    monkeypatch.syspath_prepend(str(ROOT / "tests" / EXAMPLES[example][4]))  # where its test would live
    tests = as_module(f"docs_design_{example}_test", blocks()[f"{example}-test"], monkeypatch)
    fn = getattr(tests, name)
    fn(monkeypatch) if "monkeypatch" in fn.__code__.co_varnames[:fn.__code__.co_argcount] else fn()
