"""The CLI package's registries are data: one ordered ``COMMANDS`` tuple that the parser follows,
every command class in it, argument groups whose ``parse`` gives the API what its own defaults
would; and no import cycle among onnxmod's modules (``cli`` once had one with ``cli_zoo``)."""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import onnxmod
from onnxmod import cli
from onnxmod.cli.args import ConcernArgs, DataArgs, ScopeArgs
from onnxmod.cli.base import CliUsage, Command
from onnxmod.concern import ConcernConfig


def _subparsers(parser):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_the_parser_lists_the_commands_of_the_tuple_in_its_order():
    assert isinstance(cli.COMMANDS, tuple)
    names = [c.name for c in cli.COMMANDS]
    assert len(set(names)) == len(names)
    assert list(_subparsers(cli.build_parser())) == names
    assert names[:2] == ["inspect", "decompose"] and names[-2:] == ["fingerprint", "zoo"]


def test_every_command_class_of_the_package_is_in_the_tuple():
    """A command written in its own file but left out of ``COMMANDS`` would never be reachable."""
    listed = {type(c) for c in cli.COMMANDS}
    defined = set()
    for m in pkgutil.iter_modules(cli.__path__):
        mod = importlib.import_module(f"onnxmod.cli.{m.name}")
        defined |= {v for v in vars(mod).values() if inspect.isclass(v) and issubclass(v, Command)
                    and v is not Command and v.__module__ == mod.__name__}
    assert defined == listed, defined ^ listed
    for c in cli.COMMANDS:
        assert c.help and c.help == c.description.splitlines()[0], c.name
        assert c.examples.startswith("examples:\n  onnxmod " + c.name), c.name


def test_concern_group_parses_to_the_apis_defaults():
    """With no option given, the configuration the CLI builds is the API's default one."""
    args = cli.parse(cli.build_parser(), ["decompose", "m.onnx", "--data", "d.npz", "--out", "o"])
    api_kwargs = ConcernArgs().parse(args)
    assert api_kwargs["config"] == ConcernConfig()
    assert api_kwargs["mode"] == "auto" and api_kwargs["seed"] == 0 and api_kwargs["max_loss"] is None
    assert DataArgs().parse(args) == {"labels": "data", "classes": None, "ctc_blank": None, "modules": "auto"}


def test_concern_group_carries_every_option_into_the_configuration():
    args = cli.parse(cli.build_parser(), [
        "decompose", "m.onnx", "--data", "d.npz", "--out", "o", "--seed", "7", "--positives", "11",
        "--negatives", "13", "--max-sequences", "17", "--removal-cap", "0.3", "--mad-cutoff", "1.5",
        "--relu-rule", "inactive", "--relu-threshold", "0.1", "--tangling", "--tangling-rate", "0.2",
        "--unrolled-semantics", "state", "--compensate", "--no-guard", "--classes", "a, b"])
    cfg = ConcernArgs().parse(args)["config"]
    assert (cfg.removal_cap, cfg.mad_cutoff, cfg.relu_rule, cfg.relu_threshold) == (0.3, 1.5, "inactive", 0.1)
    assert (cfg.tangling, cfg.tangling_rate, cfg.unrolled, cfg.compensate, cfg.guard) == (True, 0.2, "state", True,
                                                                                          None)
    s = cfg.sampling
    assert (s.positives, s.negatives, s.max_sequences, s.seed) == (11, 13, 17, 7)
    assert DataArgs().parse(args)["classes"] == ["a", "b"]


def test_scope_group_refuses_classes_with_all_classes():
    parser = cli.build_parser()
    args = cli.parse(parser, ["evaluate", "m.onnx", "--data", "d.npz", "--classes", "a", "--all-classes"])
    try:
        ScopeArgs().parse(args)
    except CliUsage as exc:
        assert exc.parser.prog == "onnxmod evaluate" and "exclude each other" in str(exc)
    else:
        raise AssertionError("--classes with --all-classes was accepted")
    args = cli.parse(parser, ["evaluate", "m.onnx", "--data", "d.npz", "--all-classes"])
    assert ScopeArgs().parse(args)["classes"] == "all"


def _module_imports() -> dict[str, set[str]]:
    """onnxmod module -> the onnxmod modules it imports at module level (imports inside functions are
    deferred on purpose and cannot form an import-time cycle)."""
    root = Path(onnxmod.__file__).parent
    mods = {}
    for p in root.rglob("*.py"):
        parts = ["onnxmod", *p.relative_to(root).with_suffix("").parts]
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, p in mods.items():
        package = name.split(".") if p.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                target = base if node.level else node.module
                deps |= {f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_no_import_cycle_among_onnxmods_modules():
    graph = _module_imports()
    assert graph["onnxmod.cli.runner"] >= {"onnxmod.cli.commands"}  # the walk sees relative imports
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(v, path):
        state[v] = 1
        for w in sorted(graph[v]):
            assert state.get(w) != 1, " -> ".join([*path, v, w])
            if w not in state:
                visit(w, [*path, v])
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v, [])
