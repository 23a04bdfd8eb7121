"""The command line as a user runs it: real subprocesses, exit codes, one-line errors."""
import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from builders import build, random_stack
from onnx import TensorProto, helper, numpy_helper


def onnxmod(*args, cwd=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "onnxmod", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def assert_one_line_error(res, code, *words):
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("onnxmod: error: "), lines[0]
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def _no_recurrent_model(path):
    w = numpy_helper.from_array(np.ones((3, 2), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["logits"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _peephole_model(path):
    spec = random_stack(np.random.default_rng(0), "LSTM", 1, 3, 1)
    proto = build(spec)
    node = next(n for n in proto.graph.node if n.op_type == "LSTM")
    proto.graph.input.append(helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, None, 3]))
    node.input.extend([""] * (5 - len(node.input)) + ["h_in"])
    onnx.save(proto, str(path))


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("case", ["not_onnx", "no_recurrent", "peepholes", "bad_data_shape", "missing_key",
                                  "label_out_of_range"])
def test_bad_input_gives_one_line_error_and_writes_nothing(case, tmp_path, math_lstm1):
    model, data = math_lstm1
    want = {"not_onnx": (3, ["not an ONNX model"]), "no_recurrent": (4, ["no recurrent op"]),
            "peepholes": (4, ["initial_h", "graph input", "LSTM"]), "bad_data_shape": (3, ["x_train", "shape", "40"]),
            "missing_key": (3, ["missing key", "y_test"]), "label_out_of_range": (3, ["y_train", "label"])}
    if case == "not_onnx":
        model = tmp_path / "notes.onnx"
        model.write_text("this is not a model\n")
    elif case == "no_recurrent":
        model = tmp_path / "dense.onnx"
        _no_recurrent_model(model)
    elif case == "peepholes":
        model = tmp_path / "peep.onnx"
        _peephole_model(model)
    else:
        z = dict(np.load(data))
        if case == "bad_data_shape":
            z["x_train"] = z["x_train"][:, :30]  # the 1:1 model reads exactly 40 tokens
        elif case == "missing_key":
            del z["y_test"]
        else:
            z["y_train"] = z["y_train"].copy()
            z["y_train"][0] = 99
        data = tmp_path / "bad.npz"
        np.savez(data, **z)
    before = _tree_digest(tmp_path)
    res = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "out")
    code, words = want[case]
    assert_one_line_error(res, code, *words)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert _tree_digest(tmp_path) == before


def test_decompose_prints_table_and_refuses_existing_output(math_lstm1, tmp_path):
    model, data = math_lstm1
    res = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "composed acc%" in res.stdout and "algebra" in res.stdout
    again = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o")
    assert_one_line_error(again, 2, "already exists", "--force")
    forced = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o", "--force", "--quiet")
    assert forced.returncode == 0, forced.stderr


def test_inspect_and_evaluate(math_lstm1, tmp_path):
    model, data = math_lstm1
    res = onnxmod("inspect", model)
    assert res.returncode == 0 and "1:1 model" in res.stdout and "LSTM" in res.stdout
    res = onnxmod("evaluate", model, "--data", data, "--json")
    assert res.returncode == 0, res.stderr
    import json

    assert 0.5 < json.loads(res.stdout)["accuracy"] <= 1


def assert_usage_error(res, prog, *words):
    """A usage error: the (sub)command's usage line, then one `PROG: error: ...` line, exit 2."""
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith(f"usage: {prog} "), res.stderr
    last = res.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"{prog}: error: "), last
    assert res.stderr.count("error:") == 1 and "onnxmod: onnxmod" not in res.stderr  # one prefix
    for w in words:
        assert w in last, (w, last)


def test_usage_errors_show_usage_and_name_the_subcommand():
    assert_usage_error(onnxmod("decompose"), "onnxmod decompose", "required", "MODEL", "--data", "--out")
    assert_usage_error(onnxmod("frobnicate"), "onnxmod", "invalid choice")
    assert_usage_error(onnxmod(), "onnxmod", "required", "COMMAND")
    assert_usage_error(onnxmod("evaluate", "m.onnx", "--data", "d.npz", "--threads", "x"), "onnxmod evaluate",
                       "--threads", "invalid int")
    assert_usage_error(onnxmod("compose", "--out", "x.onnx"), "onnxmod compose", "MODULE")


def test_decompose_without_evaluation_writes_the_same_modules(tmp_path):
    """--no-evaluate skips only the test-split scoring: the modules are byte-identical to a full
    run's, the report says nothing it did not measure, and `evaluate` scores the files later."""
    import json

    from conftest import fixture_path

    model, data = fixture_path("math_topics", "lstm1.onnx"), fixture_path("math_topics", "data.npz")
    full = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "full")
    quick = onnxmod("decompose", model, "--data", data, "--out", tmp_path / "quick", "--no-evaluate")
    assert full.returncode == 0 and quick.returncode == 0, quick.stderr
    assert "—" in quick.stdout and "fused.onnx" in quick.stdout
    r = json.loads((tmp_path / "quick" / "report.json").read_text())
    assert r["delta"] is None and all(m["delta"] is None and m["params"] > 0 for m in r["modules"])
    for m in r["modules"]:
        assert (tmp_path / "quick" / m["file"]).read_bytes() == (tmp_path / "full" / m["file"]).read_bytes()
    later = onnxmod("evaluate", tmp_path / "quick" / "composed.onnx", "--data", data, "--json")
    assert later.returncode == 0, later.stderr
    assert abs(json.loads(later.stdout)["accuracy"] -
               json.loads((tmp_path / "full" / "report.json").read_text())["composed_accuracy"]) < 1e-12


def test_the_size_option_is_refused_for_translators(tmp_path):
    from conftest import fixture_path

    res = onnxmod("decompose", str(fixture_path("translation", "en_frdeit/lstm.onnx")), "--data",
                  str(fixture_path("translation", "en_frdeit/data.npz")), "--out", str(tmp_path / "t"),
                  "--max-loss", "0.8")
    assert_one_line_error(res, 2, "lstm.onnx", "--max-loss", "encoder-decoder")
    assert not (tmp_path / "t").exists()


def _parsers():
    from onnxmod.cli import build_parser

    top = build_parser()
    sub = next(a for a in top._actions if a.__class__.__name__ == "_SubParsersAction")
    return top, sub.choices


def test_every_argument_has_help_and_every_subcommand_examples():
    top, subs = _parsers()
    assert set(subs) >= {"inspect", "decompose", "compose", "replace", "evaluate"}
    for name, p in [("onnxmod", top), *subs.items()]:
        for a in p._actions:
            assert a.help and a.help.strip(), (name, a.option_strings or a.dest)
        text = p.format_help()
        assert "SPEC" not in text and "§" not in text, name  # no documents the user does not have
        if p is not top:
            assert "examples:\n  onnxmod " + name in text, name
            assert "-v, --verbose" in text and "-q, --quiet" in text
    d = subs["decompose"].format_help()
    assert "(default: 500)" in d and "(default: 0.05)" in d and "(default: auto)" in d  # defaults shown
    groups = [g.title for g in subs["decompose"]._action_groups]
    assert {"output", "runtime", "messages"} <= set(groups)


def test_help_runs_for_every_subcommand():
    _, subs = _parsers()
    for name in subs:
        res = onnxmod(name, "--help")
        assert res.returncode == 0 and res.stdout.startswith(f"usage: onnxmod {name}"), res.stderr


def test_verbosity_maps_to_log_levels(math_lstm1, tmp_path):
    import logging

    from onnxmod import cli

    assert cli._configure_logging(0, False) == logging.WARNING
    assert cli._configure_logging(1, False) == logging.INFO
    assert cli._configure_logging(2, False) == logging.DEBUG
    assert cli._configure_logging(0, True) == logging.ERROR
    model, data = math_lstm1
    # a removal cap of 90 % loses accuracy at 0.9 and 0.45: the guard backs off to 0 and warns
    args = ["decompose", model, "--data", data, "--removal-cap", "0.9", "--guard", "0"]
    loud = onnxmod(*args, "--out", tmp_path / "a", "-v")
    assert loud.returncode == 0, loud.stderr
    assert "onnxmod: info: timings (s): trace" in loud.stderr
    warn = [ln for ln in loud.stderr.splitlines() if ln.startswith("onnxmod: warning:")]
    assert len(warn) == 1 and "modules are the whole model" in warn[0], loud.stderr
    quiet = onnxmod(*args, "--out", tmp_path / "b", "-q")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert "composed acc%" in quiet.stdout


def _in_pty(*args, timeout=300):
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe); return (code, stdout, stderr)."""
    import pty
    import select

    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="100")
    p = subprocess.Popen([sys.executable, "-m", "onnxmod", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=slave, env=env)
    os.close(slave)
    err = b""
    while True:
        r, _, _ = select.select([master], [], [], 1.0)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            err += chunk
        elif p.poll() is not None:
            break
    out = p.stdout.read().decode()
    code = p.wait(timeout=timeout)
    os.close(master)
    return code, out, err.decode(errors="replace")


def test_progress_bars_on_a_terminal_and_never_with_json():
    from conftest import fixture_path

    model = fixture_path("translation", "en_frdeit/lstm.onnx")
    data = fixture_path("translation", "en_frdeit/data.npz")
    code, out, err = _in_pty("evaluate", model, "--data", data)  # greedy decoding: several seconds
    assert code == 0, err
    assert "decode" in err and "sentences" in err and "%|" in err, err[-500:]
    assert "%|" not in out
    code, out, err = _in_pty("evaluate", model, "--data", data, "--json")
    assert code == 0, err
    assert "%|" not in err and "decode" not in err, err[-500:]
    import json

    assert json.loads(out)["metric"] == "BLEU"


def test_inspect_is_readable_and_json_is_raw(math_lstm1, tmp_path):
    import json

    model, data = math_lstm1
    assert onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o", "-q").returncode == 0
    mod = tmp_path / "o" / "modules" / "algebra.onnx"
    res = onnxmod("inspect", mod)
    assert res.returncode == 0, res.stderr
    assert re.search(r"0 algebra: from sha256 [0-9a-f]{12}, rolled; kept /rnn/LSTM \d+ of 64", res.stdout), res.stdout
    assert "{" not in res.stdout
    pair = tmp_path / "pair.onnx"
    assert onnxmod("compose", mod, tmp_path / "o" / "modules" / "calculus.onnx", "--out", pair).returncode == 0
    res = onnxmod("inspect", pair)
    lines = res.stdout.splitlines()
    assert len(lines) == 4 and "algebra" in lines[1] and "calculus" in lines[2] and len(res.stdout) < 600, res.stdout
    raw = json.loads(onnxmod("inspect", pair, "--json").stdout)
    mods = raw["metadata"]["onnxmod.modules"]
    assert isinstance(mods[0]["onnxmod.concern"], dict)  # decoded, not escaped JSON in a string
    assert raw["modules"][0]["units"] == {"/rnn/LSTM": 64}


def test_evaluate_scores_a_subset_composition_on_its_classes(math_lstm1, tmp_path):
    import json

    model, data = math_lstm1
    assert onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o", "-q").returncode == 0
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    pair = tmp_path / "pair.onnx"
    mods = [tmp_path / "o" / "modules" / f"{n}.onnx" for n in ("algebra", "calculus")]
    assert onnxmod("compose", *mods, "--out", pair).returncode == 0
    res = onnxmod("evaluate", pair, "--data", data)
    assert res.returncode == 0, res.stderr
    assert "2 of 8 classes this composition covers (algebra, calculus)" in res.stdout
    got = json.loads(onnxmod("evaluate", pair, "--data", data, "--json").stdout)
    assert [c["name"] for c in got["per_class"]] == ["algebra", "calculus"]
    z = np.load(data)
    assert got["samples"] == int(np.isin(z["y_test"], [0, 2]).sum())
    # each covered class's accuracy is the class's recall in the full composition only if no other
    # class's module steals its samples; the pair has fewer competitors, so never lower
    full = {m["name"]: m["composed_accuracy"] for m in r["modules"]}
    assert all(c["accuracy"] >= full[c["name"]] - 1e-12 for c in got["per_class"])
    every = json.loads(onnxmod("evaluate", pair, "--data", data, "--json", "--all-classes").stdout)
    assert len(every["per_class"]) == 8 and every["accuracy"] < got["accuracy"]
    chosen = json.loads(onnxmod("evaluate", pair, "--data", data, "--json", "--classes", "calculus").stdout)
    assert [c["name"] for c in chosen["per_class"]] == ["calculus"]
    assert_one_line_error(onnxmod("evaluate", pair, "--data", data, "--classes", "geometry"), 2, "geometry")


def test_module_evaluation_reports_auc(math_lstm1, tmp_path):
    import json

    from onnxmod import evaluate as ev
    from onnxmod import runtime

    model, data = math_lstm1
    assert onnxmod("decompose", model, "--data", data, "--out", tmp_path / "o", "-q").returncode == 0
    mod = tmp_path / "o" / "modules" / "calculus.onnx"
    res = onnxmod("evaluate", mod, "--data", data)
    assert res.returncode == 0 and "binary accuracy" in res.stdout and "ROC AUC" in res.stdout, res.stdout
    got = json.loads(onnxmod("evaluate", mod, "--data", data, "--json").stdout)
    z = np.load(data)
    score = runtime.session(str(mod)).run(["score"], {"tokens": z["x_test"]})[0][:, 1]
    assert abs(got["auc"] - ev.roc_auc(score, z["y_test"] == 2)) < 1e-12
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    assert abs(got["auc"] - r["modules"][2]["auc"]) < 1e-6
    res = onnxmod("evaluate", mod, "--data", data, "--report", tmp_path / "calculus.md")
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "calculus.md").read_text()
    assert f"ROC AUC {got['auc']:.4f}" in md and "| 1 | calculus |" in md
    again = onnxmod("evaluate", mod, "--data", data, "--report", tmp_path / "calculus.md")
    assert_one_line_error(again, 2, "calculus.md", "already exists")
    assert_one_line_error(onnxmod("evaluate", mod, "--data", data, "--report", tmp_path / "r.txt"), 2, ".html", ".md")


def test_unrecognized_arguments_are_usage_errors_of_their_subcommand():
    """Issue 22: `--bogus` got `onnxmod: error: unrecognized arguments` with no usage line and no
    subcommand; now it is a usage error like any other, of the (sub)command it was given to."""
    assert_usage_error(onnxmod("decompose", "x.onnx", "--data", "y.npz", "--out", "z", "--bogus"),
                       "onnxmod decompose", "unrecognized arguments: --bogus")
    assert_usage_error(onnxmod("zoo", "find", "--index", "i", "--class", "1", "--signature-of", "s.onnx", "--top",
                               "3", "extra"), "onnxmod zoo find", "unrecognized arguments: extra")
    assert_usage_error(onnxmod("inspect", "m.onnx", "--bogus=1"), "onnxmod inspect", "--bogus=1")


# the order in which the help examples run: producers of out/... first
_EXAMPLE_ORDER = ("decompose", "split", "compose", "replace", "evaluate", "inspect", "fingerprint", "zoo")


def _help_examples() -> list[tuple[str, str]]:
    """(subcommand, command line) for every example of every subcommand's help text."""
    _, subs = _parsers()
    assert set(subs) <= set(_EXAMPLE_ORDER), set(subs) - set(_EXAMPLE_ORDER)
    out = []
    for name in _EXAMPLE_ORDER:
        text = subs[name].format_help()
        block = text.split("examples:\n", 1)[1]
        out += [(name, ln.strip()) for ln in block.splitlines() if ln.strip().startswith("onnxmod ")]
    return out


def test_every_help_example_names_shipped_files_and_runs(tmp_path):
    """Issue 22: `fingerprint -h` and `zoo find -h` showed paths that do not exist. Every help
    example's shipped paths (fixtures/...) exist, and every example runs as printed, in order, from
    a folder holding the repository's fixtures (outputs go to out/)."""
    import glob
    import shlex

    from conftest import FIXTURES

    (tmp_path / "fixtures").symlink_to(FIXTURES)
    examples = _help_examples()
    assert len(examples) >= 15
    for name, line in examples:
        args = shlex.split(line)[1:]
        expanded = []
        for a in args:
            if a.startswith("fixtures/"):
                hits = sorted(glob.glob(a, root_dir=tmp_path))
                assert hits, f"`{line}` ({name} -h) names {a}, which does not exist"
                expanded += hits
            elif any(c in a for c in "*?["):
                hits = sorted(glob.glob(a, root_dir=tmp_path))
                assert hits, f"`{line}` ({name} -h): {a} matches nothing after the examples before it"
                expanded += hits
            else:
                expanded.append(a)
        res = onnxmod(*expanded, cwd=tmp_path)
        assert res.returncode == 0, f"`{line}` ({name} -h) exited {res.returncode}: {res.stderr}"


def test_onnxruntime_errors_keep_their_details_on_one_line(tmp_path):
    """Issue 22: onnxruntime's message was cut to its first line, which drops the useful part."""
    from onnxmod import runtime
    from onnxmod.errors import InputError

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    sess = runtime.session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    with pytest.raises(InputError) as e:
        runtime.run_batched(sess, np.zeros((256, 3), np.float32))
    msg = str(e.value)
    assert "index: 0 Got: 256 Expected: 1" in msg and "\n" not in msg and "[ONNXRuntimeError]" not in msg, msg
