"""Property tests at onnxmod's input boundary: on any input, the model loader, the data loader and the
slicers either succeed or raise an ``OnnxmodError`` subclass (with a one-line message) — never another
exception type. ``tools/fuzz.py`` runs the same targets on 10,000+ inputs; these keep a modest
number of examples so the file runs in well under a minute.
"""
from __future__ import annotations

import io
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import build, random_stack
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from onnxmod.errors import OnnxmodError
from onnxmod.graph import Model
from onnxmod.io import load_data, load_onnx
from onnxmod.ops.base import UnitSelection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import fuzz  # noqa: E402  (tools/fuzz.py: the long-run fuzzer; its generators are reused here)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CELLS = [("LSTM", 0, False), ("GRU", 0, False), ("GRU", 1, False), ("RNN", 0, False), ("RNN", 0, True)]


@pytest.fixture(scope="module")
def workdir():
    fuzz._quiet()
    with tempfile.TemporaryDirectory(prefix="onnxmod-fuzz-test-") as d:
        yield Path(d)


def _one_line_refusal(exc: OnnxmodError, name) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg, msg
    if name:
        assert any(n in msg for n in (name if isinstance(name, tuple) else (name,))), msg  # names the file


def refused_or_ok(fn, name: str | None = None):
    """Run ``fn``: fine if it returns or raises an OnnxmodError; any other exception fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except OnnxmodError as exc:
        _one_line_refusal(exc, name)
        return None
    except fuzz.RuntimeInvalid:  # a slicer met a model onnxruntime cannot run either (see tools/fuzz.py)
        return None


# ---- base models -----------------------------------------------------------------------------

@st.composite
def specs(draw):
    op, lbr, relu = draw(st.sampled_from(CELLS))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return random_stack(rng, op, draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.sampled_from([1, 2])),
                        features=draw(st.integers(1, 4)), classes=draw(st.integers(1, 4)),
                        many_output=draw(st.booleans()), relu=relu, linear_before_reset=lbr)


_BASE: dict[int, bytes] = {}


def base_bytes(i: int) -> bytes:
    """A few base models, built once: generated stacks and (when present) the real fixture."""
    if i not in _BASE:
        fixture = FIXTURES / "math_topics" / "lstm1.onnx"
        if i == 0 and fixture.exists():
            _BASE[i] = fixture.read_bytes()
        else:
            op, lbr, relu = CELLS[i % len(CELLS)]
            spec = random_stack(np.random.default_rng(i), op, 1 + i % 2, 2 + i % 3, 1 + (i // 2) % 2,
                                many_output=bool(i % 3 == 0), relu=relu, linear_before_reset=lbr)
            _BASE[i] = build(spec).SerializeToString()
    return _BASE[i]


def load_and_analyse(path: Path):
    proto = load_onnx(path)
    model = Model(proto, source=str(path))
    model.describe()
    return model


# ---- the model loader ----------------------------------------------------------------------------

@st.composite
def mutated_bytes(draw):
    raw = bytearray(base_bytes(draw(st.integers(0, 5))))
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "delete"]))
    if kind == "flip":
        for pos, bit in draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 7)), min_size=1,
                                      max_size=12)):
            raw[pos] ^= 1 << bit
    elif kind == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif kind == "splice":
        pos = draw(st.integers(0, len(raw) - 1))
        chunk = draw(st.binary(min_size=1, max_size=48))
        raw[pos:pos + len(chunk)] = chunk
    else:
        pos = draw(st.integers(0, len(raw) - 1))
        del raw[pos:pos + draw(st.integers(1, 48))]
    return kind, bytes(raw)


@settings(max_examples=120, **SETTINGS)
@given(mutated_bytes())
def test_model_loader_on_mutated_bytes(workdir, case):
    kind, raw = case
    path = workdir / "mutated.onnx"
    path.write_bytes(raw)
    refused_or_ok(lambda: load_and_analyse(path), "mutated.onnx")


ATTRS = ["hidden_size", "direction", "activations", "activation_alpha", "clip", "input_forget", "layout",
         "linear_before_reset", "perm", "axis", "axes", "transB", "allowzero", "keepdims"]
attr_values = st.one_of(st.integers(-(2**40), 2**40), st.sampled_from([0, 1, 2, 3, -1]),
                        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(fuzz.STRINGS),
                        st.lists(st.integers(-3, 4), min_size=1, max_size=4),
                        st.lists(st.sampled_from(fuzz.STRINGS), min_size=1, max_size=4))


@st.composite
def field_edits(draw):
    proto = onnx.ModelProto.FromString(base_bytes(draw(st.integers(0, 5))))
    g = proto.graph
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attr", "attr_del", "op_type", "input", "init_dims", "io_dim", "opset"]))
        node = g.node[draw(st.integers(0, len(g.node) - 1))] if len(g.node) else None
        if kind == "attr" and node is not None:
            name, value = draw(st.sampled_from(ATTRS)), draw(attr_values)
            keep = [a for a in node.attribute if a.name != name]
            del node.attribute[:]
            node.attribute.extend(keep + [helper.make_attribute(name, value)])
        elif kind == "attr_del" and node is not None and len(node.attribute):
            del node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
        elif kind == "op_type" and node is not None:
            node.op_type = draw(st.sampled_from(fuzz.OPS))
        elif kind == "input" and node is not None and len(node.input):
            names = [i.name for i in g.input] + [t.name for t in g.initializer] + ["", "nowhere"]
            node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(names))
        elif kind == "init_dims" and len(g.initializer):
            t = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
            dims = draw(st.lists(st.integers(0, 9), max_size=4))
            del t.dims[:]
            t.dims.extend(dims)
        elif kind == "io_dim" and len(g.input[0].type.tensor_type.shape.dim):
            d = g.input[0].type.tensor_type.shape.dim[-1]
            d.dim_value = draw(st.sampled_from([0, 1, 2, 7, 2**40]))
        elif kind == "opset":
            proto.opset_import[0].version = draw(st.integers(1, 30))
        edits.append(kind)
    return edits, proto.SerializeToString()


@settings(max_examples=120, **SETTINGS)
@given(field_edits())
def test_model_loader_on_protobuf_field_edits(workdir, case):
    edits, raw = case
    path = workdir / "edited.onnx"
    path.write_bytes(raw)
    refused_or_ok(lambda: load_and_analyse(path), "edited.onnx")


WIRE = ["Relu", "Tanh", "Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Gather", "Flatten",
        "Softmax", "ReduceMean", "Add", "MatMul", "Concat", "Expand", "Shape", "Cast", "Slice"]


@st.composite
def wired_models(draw):
    """Random ops (with random attributes/constants) inserted between a recurrent op and its consumers."""
    proto = onnx.ModelProto.FromString(base_bytes(draw(st.integers(1, 5))))
    g = proto.graph
    rec = [n for n in g.node if n.op_type in ("LSTM", "GRU", "RNN")]
    node = rec[draw(st.integers(0, len(rec) - 1))]
    src = node.output[draw(st.integers(0, min(1, len(node.output) - 1)))]
    consumers = [(n, i) for n in g.node for i, x in enumerate(n.input) if x == src]
    cur, chain = src, []
    for k in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(WIRE))
        name = f"w{k}_{op}"
        ins, attrs = [cur], {}
        if op in ("Reshape", "Expand", "Squeeze", "Unsqueeze", "Gather", "Slice", "Add", "MatMul", "Concat"):
            shape = draw(st.lists(st.integers(1, 4), max_size=3))
            ints = draw(st.lists(st.integers(-4, 6), min_size=1, max_size=4))
            value = (np.array(ints, np.int64) if op in ("Reshape", "Expand", "Squeeze", "Unsqueeze", "Slice")
                     else np.array(ints[0], np.int64) if op == "Gather"
                     else np.ones(shape, np.float32))
            g.initializer.append(numpy_helper.from_array(value, f"{name}_c"))
            ins.append(f"{name}_c")
            if op == "Slice":
                ins.append(f"{name}_c")
        if op in ("Transpose",):
            attrs["perm"] = draw(st.permutations(list(range(draw(st.integers(2, 4))))))
        if op in ("Gather", "Flatten", "Softmax", "Concat"):
            attrs["axis"] = draw(st.integers(-4, 4))
        if op == "Cast":
            attrs["to"] = draw(st.sampled_from([TensorProto.FLOAT, TensorProto.INT64, TensorProto.DOUBLE]))
        g.node.append(helper.make_node(op, ins, [f"{name}_out"], name=name, **attrs))
        cur = f"{name}_out"
        chain.append(op)
    for n, i in consumers:
        n.input[i] = cur
    fuzz._toposort(g)
    return chain, proto.SerializeToString()


@settings(max_examples=120, **SETTINGS)
@given(wired_models(), st.integers(0, 2**31 - 1))
def test_model_loader_and_slicers_on_random_ops_wired_to_recurrent_outputs(workdir, case, seed):
    chain, raw = case
    path = workdir / "wired.onnx"
    path.write_bytes(raw)

    def go():
        model = load_and_analyse(path)
        fuzz.slice_checked(np.random.default_rng(seed), model)  # an accepted graph must slice cleanly

    refused_or_ok(go, "wired.onnx")


@settings(max_examples=80, **SETTINGS)
@given(st.integers(0, 2**31 - 1))
def test_model_target_of_the_long_fuzzer(workdir, seed):
    """A sample of tools/fuzz.py's model generator (byte edits, field edits, wiring) with its checks."""
    pool = _pool()
    rng = np.random.default_rng(seed)
    desc, raw = fuzz.gen_model(rng, pool)
    refused_or_ok(lambda: fuzz.run_model(rng, raw, workdir), "case.onnx")


_POOL = []


def _pool():
    if not _POOL:
        _POOL.append(fuzz.Pool(0, size=8))
    return _POOL[0]


# ---- the data loader ---------------------------------------------------------------------------

DTYPES = [np.int8, np.int32, np.int64, np.uint8, np.uint64, np.float16, np.float32, np.float64, np.bool_,
          np.complex64]
arrays = st.one_of(
    hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    hnp.arrays(np.dtype("U3"), hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)),
)
KEYS = ["x_train", "y_train", "x_test", "y_test", "x_val", "y_val", "class_names", "vocab", "other"]


@st.composite
def data_files(draw):
    z = draw(st.dictionaries(st.sampled_from(KEYS), arrays, max_size=8))
    if draw(st.booleans()):  # start from a well-formed file, then spoil one key
        n, t = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        base = {"x_train": np.zeros((n, t), np.int64), "y_train": np.zeros(n, np.int64),
                "x_test": np.ones((n, t), np.int64), "y_test": np.ones(n, np.int64)}
        base.update(dict(list(z.items())[:1]))
        z = base
    buf = io.BytesIO()
    container = draw(st.sampled_from(["savez", "compressed", "npy", "bytes"]))
    if container == "savez":
        np.savez(buf, **z)
    elif container == "compressed":
        np.savez_compressed(buf, **z)
    elif container == "npy":
        np.save(buf, next(iter(z.values()), np.zeros(2)))
    else:
        buf.write(draw(st.binary(max_size=200)))
    raw = bytearray(buf.getvalue())
    if raw and container.startswith(("savez", "compressed")) and draw(st.booleans()):
        for pos in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4)):
            raw[pos] ^= 0xFF
    expect = {"num_classes": draw(st.one_of(st.none(), st.integers(1, 5))),
              "many_output": draw(st.one_of(st.none(), st.booleans())),
              "input_dtype": draw(st.sampled_from([np.int64, np.int32, np.float32])),
              "input_shape": draw(st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(0, 4),
                                                                            st.just("seq")), max_size=4))),
              "max_token": draw(st.one_of(st.none(), st.integers(0, 5)))}
    return bytes(raw), expect


@settings(max_examples=200, **SETTINGS)
@given(data_files())
def test_data_loader_on_generated_npz(workdir, case):
    raw, expect = case
    path = workdir / "data.npz"
    path.write_bytes(raw)
    refused_or_ok(lambda: load_data(path, **expect), "data.npz")


@settings(max_examples=80, **SETTINGS)
@given(st.integers(0, 2**31 - 1))
def test_data_target_of_the_long_fuzzer(workdir, seed):
    desc, raw, expect = fuzz.gen_data(np.random.default_rng(seed))
    refused_or_ok(lambda: fuzz.run_data(raw, expect, workdir), "case.npz")


# ---- the slicers -----------------------------------------------------------------------------------

@settings(max_examples=60, **SETTINGS)
@given(specs(), st.data())
def test_apply_selection_with_random_keep_sets(spec, data):
    model = Model(build(spec))
    sels = {}
    for op in model.recurrent:
        H = op.hidden_size
        keep = [data.draw(st.lists(st.integers(0, H - 1), max_size=2 * H)) for _ in range(op.directions)]
        sels[op.index] = UnitSelection.from_keep(H, keep)

    def go():
        model.apply_selection(sels)
        out = model.export()
        onnx.checker.check_model(out, full_check=True)
        for op in model.recurrent:  # every direction keeps the same, padded, width
            assert op.hidden_size == sels[op.index].width

    refused_or_ok(go)


@settings(max_examples=40, **SETTINGS)
@given(specs(), st.integers(0, 2**31 - 1))
def test_module_builders_with_random_concerns(spec, seed):
    """Rolled and unrolled modules (slicing + head channeling + full check) for random concerns."""
    model = Model(build(spec))
    refused_or_ok(lambda: fuzz.slice_model(np.random.default_rng(seed), model))


# ---- modules and compositions ------------------------------------------------------------------

@pytest.fixture(scope="module")
def modules(workdir):
    return fuzz.Modules(0, workdir)


@settings(max_examples=60, **SETTINGS)
@given(st.integers(0, 2**31 - 1))
def test_inspect_compose_evaluate_on_edited_module_metadata(workdir, modules, seed):
    """Hand-edited or damaged ``onnxmod.*`` metadata: refused with the key named, never a crash, and
    compose leaves no temporary output."""
    desc, payload = fuzz.gen_module(np.random.default_rng(seed), modules)
    refused_or_ok(lambda: fuzz.run_module(payload, modules, workdir), ("case", "modules-data.npz"))


def test_composing_two_graph_identical_modules_gives_a_valid_graph(workdir, modules):
    """Found by the fuzzer: identical module graphs (same model, relabelled class) made the shared-node
    elimination drop a vote node the scores still read (an invalid composition, internal error)."""
    from onnxmod.compose import compose

    a = onnx.ModelProto.FromString(modules.files[0])
    b = onnx.ModelProto.FromString(modules.files[0])
    for e in b.metadata_props:
        if e.key == "onnxmod.class_index":
            e.value = "7"
        if e.key == "onnxmod.class_name":
            e.value = "relabelled"
    onnx.checker.check_model(compose([a, b], ["a.onnx", "b.onnx"]), full_check=True)


# ---- issue 12: nested metadata, computed heads, IR 3, folding bombs, zip bombs -----------------------

@settings(max_examples=40, **SETTINGS)
@given(st.integers(0, 2**31 - 1))
def test_issue12_model_shapes(workdir, seed):
    """IR 3 stacks, computed head biases and folding bombs (tools/fuzz.py gen_shape): accepted or
    refused with the file named; a refused folding bomb names its node."""
    rng = np.random.default_rng(seed)
    desc, proto = fuzz.gen_shape(rng)
    path = workdir / "shape.onnx"
    path.write_bytes(proto.SerializeToString())
    try:
        fuzz.run_model(rng, path.read_bytes(), workdir)
    except OnnxmodError as exc:
        _one_line_refusal(exc, "case.onnx")
        if "folding bomb" in desc and "folding limit" in str(exc):
            assert "'fz_big'" in str(exc), str(exc)
    except fuzz.RuntimeInvalid:
        pass
    if "IR 3" in desc:  # unedited IR 3 stacks are read as IR 4 and decompose like any other
        Model(load_onnx(workdir / "case.onnx"))
    if "computed head" in desc:
        with pytest.raises(OnnxmodError, match="computed"):
            Model(load_onnx(workdir / "case.onnx"))


@settings(max_examples=40, **SETTINGS)
@given(st.integers(0, 2**31 - 1))
def test_issue12_nested_metadata_and_replace(workdir, modules, seed):
    """Damaged nested onnxmod.modules entries, through inspect/compose/evaluate/replace."""
    rng = np.random.default_rng(seed)
    proto = modules.pick(rng, composition=True)
    fuzz.nested_edit(rng, proto)
    mod = modules.pick(rng, composition=False)
    payload = ("replace" if rng.random() < 0.5 else "evaluate", [proto.SerializeToString(), mod.SerializeToString()])
    refused_or_ok(lambda: fuzz.run_module(payload, modules, workdir), ("case", "modules-data.npz"))


@settings(max_examples=12, **SETTINGS)
@given(st.integers(0, 2**31 - 1))
def test_issue12_lying_npz_headers(workdir, seed):
    """.npy headers declaring more than the member holds: refused before any allocation."""
    rng = np.random.default_rng(seed)
    z, expect = fuzz._valid_arrays(rng)
    key = str(rng.choice(["x_train", "y_train", "x_test", "y_test"]))
    n = int(rng.integers(0, 50))
    path = workdir / "bomb.npz"
    fuzz.write_npz_bomb(path, {k: v for k, v in z.items() if k != key}, key, n, n + 1 + int(rng.integers(0, 10**12)))
    from onnxmod.io import NpzArrays

    with pytest.raises(OnnxmodError, match=f"'{key}' declares"):
        NpzArrays(path)[key]
    refused_or_ok(lambda: load_data(path, **expect), "bomb.npz")


# ---- issue 22: fingerprints and zoos read through the same guarded readers --------------------------

@pytest.fixture(scope="module")
def zoo(workdir, modules):
    return fuzz.Zoo(modules, workdir)


def _refused_naming_a_case_file(fn) -> None:
    """``refused_or_ok`` where a refusal names a ``case*`` file, except a usage error (an option's
    value, e.g. ``--probes 0``), which names the option instead."""
    from onnxmod.errors import UsageError

    try:
        refused_or_ok(fn, ("case",))
    except AssertionError:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn()
        except UsageError as exc:
            _one_line_refusal(exc, None)
            return
        raise


@settings(max_examples=30, **SETTINGS)
@given(st.integers(0, 2**31 - 1))
def test_fingerprint_target_of_the_long_fuzzer(workdir, modules, seed):
    """tools/fuzz.py's fingerprint generator: edited files, probe data valid, mutated, bombs or broken."""
    _, payload = fuzz.gen_fingerprint(np.random.default_rng(seed), modules)
    _refused_naming_a_case_file(lambda: fuzz.run_fingerprint(payload, workdir))


@settings(max_examples=30, **SETTINGS)
@given(st.integers(0, 2**31 - 1))
def test_zoo_target_of_the_long_fuzzer(workdir, zoo, seed):
    """tools/fuzz.py's zoo generator: find on a damaged index, index of a zoo with damaged members."""
    _, payload = fuzz.gen_zoo(np.random.default_rng(seed), zoo)
    _refused_naming_a_case_file(lambda: fuzz.run_zoo(payload, workdir))


def _peak_mb(code: str) -> tuple[str, float]:
    """Run ``code`` in a fresh interpreter; (its last line of output, its own peak RSS in MB)."""
    import subprocess

    code += "\nprint(next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM')))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert res.returncode == 0, res.stderr
    *out, peak = res.stdout.strip().splitlines()
    return "\n".join(out), int(peak) / 1024


def test_fingerprint_probe_data_bomb_is_refused_before_it_inflates(workdir):
    """Issue 22: `fingerprint --probe-data` with a 2 MB .npz whose x_train inflates to 2 GB peaked at
    2 GB, then MemoryError (exit 70). Now refused from the zip header, within tens of MB."""
    bomb = workdir / "fp-bomb.npz"
    fuzz.write_npz_bomb(bomb, {"x_test": np.zeros((4, 40), np.int64)}, "x_train", fuzz.BIG_BOMB)
    assert bomb.stat().st_size < 16 << 20
    model = FIXTURES / "math_topics" / "lstm1.onnx"
    out, peak = _peak_mb(
        "from onnxmod import api\nfrom onnxmod.errors import InputError\n"
        f"try:\n    api.fingerprint([{str(model)!r}], {str(workdir / 'fp.npz')!r}, probe_data={str(bomb)!r})\n"
        "except InputError as e:\n    print(e)")
    assert str(bomb) in out and "'x_train'" in out and "limit" in out, out
    assert peak < 600, peak


def test_zoo_member_data_bomb_skips_the_member_without_inflating(workdir, zoo):
    """A zoo member whose data file is a bomb (its classes picked by zoo.classes, so onnxmod reads it
    itself): the member is skipped with one warning, memory stays bounded."""
    import shutil

    z = workdir / "bombzoo"
    shutil.rmtree(z, ignore_errors=True)
    shutil.copytree(zoo.root, z)
    fuzz.write_npz_bomb(z / "data" / "d.npz", {k: v for k, v in zoo.valid.items() if k != "x_train"}, "x_train",
                        fuzz.BIG_BOMB)
    out, peak = _peak_mb(
        "import warnings\nfrom onnxmod import api\nfrom onnxmod.errors import InputError\n"
        "with warnings.catch_warnings(record=True) as w:\n    warnings.simplefilter('always')\n"
        f"    try:\n        api.zoo_index({str(z)!r}, {str(workdir / 'bombidx')!r}, probes=8)\n"
        "    except InputError as e:\n        print(e)\n"
        "print(sum('skipped zoo member' in str(x.message) and 'x_train' in str(x.message) for x in w))")
    assert out.splitlines()[-1] == str(len(zoo.members)) and "no member could be indexed" in out, out
    assert peak < 600, peak


def test_damaged_zoo_indexes_are_refused_naming_the_file(workdir, zoo):
    import json
    import shutil

    from onnxmod import zoo as zs

    idx = workdir / "dmg-index"
    for text, words in ((b"[" * 100000 + b"]" * 100000, "not valid JSON"),
                        (json.dumps({"modules": [{"file": 3}]}).encode(), "module entry 0 field 'file'"),
                        (json.dumps({"modules": "x"}).encode(), "no 'modules' list")):
        shutil.rmtree(idx, ignore_errors=True)
        shutil.copytree(zoo.index, idx)
        (idx / "index.json").write_bytes(text)
        with pytest.raises(OnnxmodError, match=words) as e:
            zs.load_index(idx)
        _one_line_refusal(e.value, "index.json")
    shutil.rmtree(idx)
    shutil.copytree(zoo.index, idx)
    np.savez(idx / "fingerprints.npz", fingerprints=np.zeros(3), files=np.array(["a"]))
    with pytest.raises(OnnxmodError, match="expected a 2-D float table"):
        zs.load_index(idx)
