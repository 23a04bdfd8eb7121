#!/usr/bin/env python
"""Fuzz onnxmod's input boundary: every bad input must be refused with an ``OnnxmodError``.

    python tools/fuzz.py --count 10000 [--seed N] [--jobs 2] [--targets model data slice]
    python tools/fuzz.py --seed N --case I        # re-run one case, with its traceback

Six targets, each input generated from ``(seed, case index)`` so any finding is reproducible:

* ``model`` — ``onnxmod.io.load_onnx`` + ``onnxmod.graph.Model`` (+ ``describe()``, and a random
  unit selection + export when the model is accepted) on mutated bytes of real and generated
  models: bit flips, truncations, byte splices, random protobuf field edits (attributes, op types,
  inputs, initializer dims/types/data, I/O types, opsets, ...) and random ops wired onto the
  recurrent ops' outputs.
* ``data`` — ``onnxmod.io.load_data`` on generated ``.npz`` files with random keys, dtypes, shapes
  and values (NaN, inf, negative, huge), broken containers (truncated, bit-flipped, compressed,
  ``.npy``, pickles, random bytes) and random expectations (classes, rank, dtype, static dims).
* ``slice`` — ``Model.apply_selection`` (rolled), ``unrolled.apply_unrolled`` (per step) and the
  whole module builder with random keep sets on generated stacks, then the ONNX checker.
* ``module`` — ``api.inspect``/``api.compose``/``api.evaluate``/``api.replace`` on real modules and
  compositions whose ``onnxmod.*`` metadata (nested ``onnxmod.modules`` entries included) and
  sometimes graph was edited; no temporary output may remain.
* ``fingerprint`` — ``api.fingerprint`` (every kind, odd probe and chain counts) on modules,
  compositions and models, sometimes edited, with generated probe data: valid, mutated, issue 22's
  2 GB ``x_train`` bomb, and the ``data`` target's broken containers.
* ``zoo`` — ``api.zoo_find`` on a real index whose ``index.json`` (retyped or dropped fields,
  truncation, deep nesting) or ``fingerprints.npz`` (as probe data above) was damaged, and
  ``api.zoo_index`` on zoos whose members' ``zoo.*`` metadata (paths out of the zoo, bad class
  lists and accuracies), graphs or data file were damaged.

Issue 12's generators run inside these targets (counted apart in the summary): IR 3 stacks
(weights also graph inputs), Gemm heads with a computed bias, folding bombs (``ConstantOfShape``
/ ``Expand`` / ``Tile`` up to ``[2^31, 2^31]`` into the head's bias), zip bombs (a member, used or
not, inflating past the cap, or an ``.npy`` header declaring more than it holds) and damaged
nested metadata. The summary gives each worker's peak RSS after each kind of case: an upper bound
of any one case's peak memory.

Outcome of a case: ``ok``, the ``OnnxmodError`` subclass raised, ``UNCAUGHT <type>`` (any other
exception: a bug) or ``HANG`` (over ``--timeout`` seconds). An ``OnnxmodError`` whose message does
not name the input file is counted as ``unnamed`` (reported, not fatal). The summary is printed;
the exit status is 1 when any case was uncaught or hung, 0 otherwise. No onnxruntime session is
created per input (graphsurgeon's constant folding may run one for foldable subgraphs only).
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import copy
import io as _io
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # builders.py: small models built with onnx.helper
sys.path.insert(0, str(ROOT))

from builders import build, random_stack  # noqa: E402

from onnxmod.errors import OnnxmodError  # noqa: E402
from onnxmod.graph import Model  # noqa: E402
from onnxmod.io import load_data, load_onnx  # noqa: E402
from onnxmod.ops.base import UnitSelection  # noqa: E402

FIXTURE = ROOT / "fixtures" / "math_topics" / "lstm1.onnx"
TARGETS = ("model", "data", "slice", "module", "fingerprint", "zoo")
WEIGHTS = {"model": 0.45, "data": 0.3, "slice": 0.13, "module": 0.12, "fingerprint": 0.05, "zoo": 0.05}

# ---- base models ------------------------------------------------------------------------------

CELLS = [("LSTM", 0, False), ("GRU", 0, False), ("GRU", 1, False), ("RNN", 0, False), ("RNN", 0, True)]


def random_spec(rng: np.random.Generator):
    op, lbr, relu = CELLS[rng.integers(len(CELLS))]
    layers, hidden, dirs = int(rng.integers(1, 3)), int(rng.integers(1, 6)), int(rng.integers(1, 3))
    many = bool(rng.integers(2))
    spec = random_stack(np.random.default_rng(int(rng.integers(2**31))), op, layers, hidden, dirs,
                        features=int(rng.integers(1, 6)), classes=int(rng.integers(1, 5)), many_output=many,
                        relu=relu, linear_before_reset=lbr)
    desc = f"{layers}x{op}{'-relu' if relu else ''} H={hidden} D={dirs} {'M:N' if many else 'M:1'}"
    return desc, spec


class Pool:
    """Base models built once per process: generated stacks plus the real fixture (when present)."""

    def __init__(self, seed: int, size: int = 32):
        rng = np.random.default_rng([seed, 7])
        self.seed = seed
        self.models = []
        for _ in range(size):
            desc, spec = random_spec(rng)
            self.models.append((desc, build(spec)))
        self.fixture = onnx.load(str(FIXTURE)) if FIXTURE.exists() else None

    def modules(self, workdir: Path) -> Modules:
        if not hasattr(self, "_modules"):
            self._modules = Modules(self.seed, workdir)
        return self._modules

    def zoo(self, workdir: Path) -> Zoo:
        if not hasattr(self, "_zoo"):
            self._zoo = Zoo(self.modules(workdir), workdir)
        return self._zoo

    def pick(self, rng: np.random.Generator):
        if self.fixture is not None and rng.random() < 0.15:
            return "fixture lstm1", copy.deepcopy(self.fixture)
        desc, proto = self.models[rng.integers(len(self.models))]
        return desc, copy.deepcopy(proto)


# ---- model mutations --------------------------------------------------------------------------

ATTR_NAMES = ["hidden_size", "direction", "activations", "activation_alpha", "activation_beta", "clip",
              "input_forget", "layout", "linear_before_reset", "perm", "axis", "axes", "transA", "transB",
              "alpha", "beta", "allowzero", "keepdims", "to", "value", "body"]
INTS = [-(2**40), -3, -1, 0, 1, 2, 3, 4, 7, 64, 2**31, 2**40]
FLOATS = [float("nan"), float("inf"), -1.0, 0.0, 0.5, 3.0, 1e30]
STRINGS = ["forward", "reverse", "bidirectional", "Tanh", "Sigmoid", "Relu", "HardSigmoid", "bogus", "",
           "LSTM", "ScaledTanh"]
OPS = ["LSTM", "GRU", "RNN", "Gemm", "MatMul", "Add", "Mul", "Relu", "Tanh", "Sigmoid", "Identity", "Transpose",
       "Reshape", "Squeeze", "Unsqueeze", "Gather", "Slice", "Concat", "Flatten", "Softmax", "ReduceMean",
       "Cast", "Shape", "Dropout", "Abs", "Neg", "Split", "Expand", "Tile", "Loop", "Scan", "If", "Where",
       "ConstantOfShape", "Constant", "ArgMax", "Sub", "Div", "Pow", "Sqrt", "Exp", "Log", "LeakyRelu", "Elu",
       "NotAnOp"]
WIRE_OPS = ["Relu", "Tanh", "Sigmoid", "Identity", "Dropout", "Abs", "Neg", "Cast", "Transpose", "Reshape",
            "Squeeze", "Unsqueeze", "Gather", "Slice", "Flatten", "Softmax", "ReduceMean", "Add", "Mul", "MatMul",
            "Gemm", "Concat", "Split", "Expand", "Tile", "Shape", "LeakyRelu", "LSTM", "GRU", "RNN", "Where", "Pad"]
DTYPES = [TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.DOUBLE, TensorProto.FLOAT16,
          TensorProto.BOOL, TensorProto.STRING, TensorProto.UINT8, 0, 99]


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def random_attr(rng, name=None):
    name = name or _pick(rng, ATTR_NAMES)
    kind = int(rng.integers(6))
    if kind == 0:
        return helper.make_attribute(name, int(_pick(rng, INTS)))
    if kind == 1:
        return helper.make_attribute(name, float(_pick(rng, FLOATS)))
    if kind == 2:
        return helper.make_attribute(name, _pick(rng, STRINGS))
    if kind == 3:
        return helper.make_attribute(name, [int(_pick(rng, INTS[2:9])) for _ in range(int(rng.integers(1, 5)))])
    if kind == 4:
        return helper.make_attribute(name, [_pick(rng, STRINGS) for _ in range(int(rng.integers(1, 5)))])
    return helper.make_attribute(name, [float(_pick(rng, FLOATS)) for _ in range(int(rng.integers(1, 4)))])


def _tensor_names(g: onnx.GraphProto) -> list[str]:
    names = [i.name for i in g.input] + [t.name for t in g.initializer]
    for n in g.node:
        names += list(n.output)
    return names or ["x"]


def _random_const(rng, name):
    shape = [int(rng.integers(1, 4)) for _ in range(int(rng.integers(0, 4)))]
    if rng.random() < 0.5:
        arr = np.asarray(rng.integers(-3, 4, size=shape), dtype=np.int64)
    else:
        arr = np.asarray(rng.normal(size=shape), dtype=np.float32)
    return numpy_helper.from_array(arr, name)


def field_edit(rng, proto: onnx.ModelProto) -> str:
    """One random protobuf field edit; returns what it did."""
    g = proto.graph
    kinds = ["attr_set", "attr_set", "attr_set", "attr_del", "attr_del", "op_type", "input", "output", "node_del",
             "node_dup", "init_dims", "init_dtype", "init_data", "io_type", "io_dims", "io_dims", "io_remove",
             "io_add", "opset", "ir", "metadata", "metadata", "const_values", "const_values"]
    kind = _pick(rng, kinds)
    nodes = list(g.node)
    node = nodes[int(rng.integers(len(nodes)))] if nodes else None
    rec = [n for n in nodes if n.op_type in ("LSTM", "GRU", "RNN")]
    if rec and rng.random() < 0.5 and kind in ("attr_set", "attr_del", "input", "output"):
        node = rec[int(rng.integers(len(rec)))]
    if kind == "attr_set" and node is not None:
        a = random_attr(rng)
        keep = [x for x in node.attribute if x.name != a.name]
        del node.attribute[:]
        node.attribute.extend(keep + [a])
        return f"{node.name or node.op_type}.{a.name} = {helper.get_attribute_value(a)!r}"
    if kind == "attr_del" and node is not None and node.attribute:
        i = int(rng.integers(len(node.attribute)))
        name = node.attribute[i].name
        del node.attribute[i]
        return f"del {node.name or node.op_type}.{name}"
    if kind == "op_type" and node is not None:
        old, node.op_type = node.op_type, _pick(rng, OPS)
        return f"{node.name or old}: op {old} -> {node.op_type}"
    if kind == "input" and node is not None:
        names = _tensor_names(g)
        how = int(rng.integers(4))
        if how == 0 and node.input:
            i = int(rng.integers(len(node.input)))
            del node.input[i]
            return f"{node.name}: drop input {i}"
        if how == 1 and node.input:
            i = int(rng.integers(len(node.input)))
            node.input[i] = ""
            return f"{node.name}: input {i} = ''"
        if how == 2 and node.input:
            i = int(rng.integers(len(node.input)))
            node.input[i] = _pick(rng, names)
            return f"{node.name}: input {i} = {node.input[i]!r}"
        extra = _pick(rng, names + ["", "nowhere"])
        node.input.append(extra)
        return f"{node.name}: append input {extra!r}"
    if kind == "output" and node is not None and node.output:
        i = int(rng.integers(len(node.output)))
        node.output[i] = _pick(rng, ["", "logits", "x", "dup"] + list(node.input))
        return f"{node.name}: output {i} = {node.output[i]!r}"
    if kind == "node_del" and nodes:
        i = int(rng.integers(len(nodes)))
        what = nodes[i].name or nodes[i].op_type
        del g.node[i]
        return f"delete node {what}"
    if kind == "node_dup" and node is not None:
        g.node.append(copy.deepcopy(node))
        return f"duplicate node {node.name}"
    if kind in ("init_dims", "init_dtype", "init_data", "const_values") and g.initializer:
        t = g.initializer[int(rng.integers(len(g.initializer)))]
        if kind == "init_dims":
            dims = list(t.dims)
            how = int(rng.integers(3))
            if how == 0 and dims:
                dims[int(rng.integers(len(dims)))] = int(_pick(rng, [0, 1, 2, 3, 5, 2**20, 2**40]))
            elif how == 1 and dims:
                dims.pop(int(rng.integers(len(dims))))
            else:
                dims.insert(int(rng.integers(len(dims) + 1)), int(rng.integers(1, 4)))
            del t.dims[:]
            t.dims.extend(dims)
            return f"initializer {t.name} dims -> {dims}"
        if kind == "init_dtype":
            t.data_type = int(_pick(rng, DTYPES))
            return f"initializer {t.name} data_type -> {t.data_type}"
        if kind == "init_data":
            raw = t.raw_data
            if raw:
                t.raw_data = raw[: int(rng.integers(len(raw)))]
            else:
                for field in ("float_data", "int64_data", "int32_data", "double_data"):
                    vals = getattr(t, field)
                    if len(vals):
                        del vals[int(rng.integers(len(vals))):]
            return f"initializer {t.name} data truncated"
        try:
            arr = numpy_helper.to_array(t).copy()
        except Exception:  # an earlier edit broke this tensor already  # noqa: BLE001
            return f"initializer {t.name} left broken"
        if arr.size and np.issubdtype(arr.dtype, np.floating):
            arr.reshape(-1)[int(rng.integers(arr.size))] = _pick(rng, [np.nan, np.inf, 1e38, -0.0])
        elif arr.size and np.issubdtype(arr.dtype, np.integer):
            arr.reshape(-1)[int(rng.integers(arr.size))] = _pick(rng, [-(2**62), -7, -1, 0, 99, 2**62])
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return f"initializer {t.name} one value poked"
    if kind in ("io_type", "io_dims") and (g.input or g.output):
        vi = _pick(rng, list(g.input) + list(g.output))
        tt = vi.type.tensor_type
        if kind == "io_type":
            tt.elem_type = int(_pick(rng, DTYPES))
            return f"{vi.name} elem_type -> {tt.elem_type}"
        dims = tt.shape.dim
        if len(dims) and rng.random() < 0.6:
            d = dims[int(rng.integers(len(dims)))]
            if rng.random() < 0.5:
                d.dim_value = int(_pick(rng, [0, 1, 2, 3, 40, 2**40]))
            else:
                d.dim_param = _pick(rng, ["batch", "seq", "n", ""])
            return f"{vi.name} one dim edited"
        tt.shape.dim.add().dim_value = int(rng.integers(1, 5))
        return f"{vi.name} extra dim"
    if kind == "io_remove":
        lst = g.input if rng.random() < 0.5 else g.output
        if len(lst):
            name = lst[0].name
            del lst[int(rng.integers(len(lst)))]
            return f"remove graph io {name}"
    if kind == "io_add":
        names = _tensor_names(g)
        vi = helper.make_tensor_value_info(_pick(rng, names + ["extra"]), TensorProto.FLOAT, None)
        (g.input if rng.random() < 0.4 else g.output).append(vi)
        return f"add graph io {vi.name}"
    if kind == "opset":
        if proto.opset_import:
            proto.opset_import[0].version = int(rng.integers(1, 30))
            if rng.random() < 0.2:
                proto.opset_import[0].domain = _pick(rng, ["ai.onnx.ml", "com.microsoft", "bogus"])
            return f"opset -> {proto.opset_import[0].domain!r} {proto.opset_import[0].version}"
    if kind == "ir":
        proto.ir_version = int(rng.integers(0, 14))
        return f"ir_version -> {proto.ir_version}"
    if kind == "metadata":
        key = _pick(rng, ["onnxmod.kind", "onnxmod.class_names", "onnxmod.max_steps", "x"])
        val = _pick(rng, ["model", "module", "[1, 2", "[\"a\"]", "-3", "", "\u00e9"])
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=val))
        return f"metadata {key}={val!r}"
    return "no-op edit"


def wire_edit(rng, proto: onnx.ModelProto) -> str:
    """Insert 1-3 random ops between a recurrent op's output and that output's consumers."""
    g = proto.graph
    rec = [n for n in g.node if n.op_type in ("LSTM", "GRU", "RNN")]
    if not rec:
        return field_edit(rng, proto)
    node = _pick(rng, rec)
    outs = [o for o in node.output if o]
    if len(outs) < len(node.output) or rng.random() < 0.3:
        # expose Y_h / Y_c (often unused) as well
        while len(node.output) < 2:
            node.output.append("")
        for i, o in enumerate(node.output):
            if not o:
                node.output[i] = f"{node.name}_out{i}"
        outs = list(node.output)
    used = [o for o in outs if any(o in n.input for n in g.node)]
    src = _pick(rng, used if used and rng.random() < 0.85 else outs)
    consumers = [(n, i) for n in g.node for i, x in enumerate(n.input) if x == src]
    steps = []
    cur = src
    for k in range(int(rng.integers(1, 4))):
        op = _pick(rng, WIRE_OPS)
        name = f"fuzz_{k}_{op}"
        out = f"{name}_out"
        ins = [cur]
        attrs = {}
        if op in ("Reshape", "Expand", "Tile"):
            c = numpy_helper.from_array(np.array([int(_pick(rng, [-1, 0, 1, 2, 3, 6]))
                                                  for _ in range(int(rng.integers(1, 5)))], np.int64), f"{name}_c")
            g.initializer.append(c)
            ins.append(c.name)
        elif op in ("Squeeze", "Unsqueeze"):
            c = numpy_helper.from_array(np.array([int(rng.integers(-4, 4))], np.int64), f"{name}_c")
            g.initializer.append(c)
            ins.append(c.name)
        elif op in ("Gather",):
            c = numpy_helper.from_array(np.array(int(rng.integers(-2, 3)), np.int64), f"{name}_c")
            g.initializer.append(c)
            ins.append(c.name)
            attrs["axis"] = int(rng.integers(-4, 4))
        elif op in ("Slice",):
            for tag, v in (("s", [0]), ("e", [int(rng.integers(1, 4))]), ("a", [int(rng.integers(-4, 4))])):
                c = numpy_helper.from_array(np.array(v, np.int64), f"{name}_{tag}")
                g.initializer.append(c)
                ins.append(c.name)
        elif op in ("Add", "Mul", "MatMul", "Gemm", "Concat", "Where", "Pad"):
            c = _random_const(rng, f"{name}_c")
            g.initializer.append(c)
            ins = ([c.name, cur] if rng.random() < 0.3 else [cur, c.name])
            if op == "Where":
                ins = [c.name] + ins
        elif op in ("LSTM", "GRU", "RNN"):
            H = int(rng.integers(1, 4))
            G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
            I = int(rng.integers(1, 9))
            for tag, shape in (("W", (1, G * H, I)), ("R", (1, G * H, H))):
                c = numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), f"{name}_{tag}")
                g.initializer.append(c)
                ins.append(c.name)
            attrs["hidden_size"] = H
        elif op == "Transpose":
            perm = list(rng.permutation(int(rng.integers(2, 5))))
            if rng.random() < 0.2:
                perm[0] = perm[-1]
            attrs["perm"] = [int(p) for p in perm]
        elif op in ("Flatten", "Softmax", "Concat", "Split"):
            attrs["axis"] = int(rng.integers(-3, 4))
        elif op == "ReduceMean":
            attrs["keepdims"] = int(rng.integers(2))
        elif op == "Cast":
            attrs["to"] = int(_pick(rng, [TensorProto.FLOAT, TensorProto.INT64, TensorProto.FLOAT16]))
        if rng.random() < 0.15:
            attrs[_pick(rng, ATTR_NAMES[:19])] = helper.get_attribute_value(random_attr(rng))
        outputs = [out] + ([f"{out}_2"] if op in ("Split",) else [])
        g.node.append(helper.make_node(op, ins, outputs, name=name, **attrs))
        steps.append(op)
        cur = out
    for n, i in consumers:
        n.input[i] = cur
    _toposort(g)
    return f"wire {'->'.join(steps)} after {node.name}:{src}"


def _toposort(g: onnx.GraphProto) -> None:
    produced = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    todo, order = list(g.node), []
    while todo:
        ready = [n for n in todo if all(x in produced for x in n.input)]
        if not ready:
            order += todo
            break
        for n in ready:
            order.append(n)
            produced |= set(n.output)
        todo = [n for n in todo if n not in ready]
    del g.node[:]
    g.node.extend(order)


def byte_edit(rng, raw: bytes) -> tuple[str, bytes]:
    b = bytearray(raw)
    how = int(rng.integers(4))
    if how == 0 or not b:
        k = int(rng.integers(1, 17))
        for _ in range(k):
            if b:
                i = int(rng.integers(len(b)))
                b[i] ^= 1 << int(rng.integers(8))
        return f"{k} bit flips", bytes(b)
    if how == 1:
        n = int(rng.integers(len(b)))
        return f"truncated to {n}/{len(b)} bytes", bytes(b[:n])
    if how == 2:
        i, n = int(rng.integers(len(b))), int(rng.integers(1, 65))
        b[i:i + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        return f"{n} random bytes at {i}", bytes(b)
    i, n = int(rng.integers(len(b))), int(rng.integers(1, 65))
    if rng.random() < 0.5:
        del b[i:i + n]
        return f"{n} bytes deleted at {i}", bytes(b)
    b[i:i] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return f"{n} bytes inserted at {i}", bytes(b)


# ---- model shapes that used to crash or exhaust memory (issue 12) --------------------------------


def ir3(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` as an opset-7 exporter wrote it: IR version 3, every initializer also listed as a
    graph input, Squeeze's axes an attribute."""
    p = copy.deepcopy(proto)
    g = p.graph
    inits = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Squeeze" and len(n.input) == 2 and n.input[1] in inits:
            axes = numpy_helper.to_array(inits[n.input[1]]).tolist()
            del n.input[1]
            n.attribute.append(helper.make_attribute("axes", axes))
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    g.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in keep)
    del p.opset_import[:]
    p.opset_import.append(helper.make_opsetid("", 7))
    p.ir_version = 3
    return p


def _head(g: onnx.GraphProto) -> onnx.NodeProto:
    return next(n for n in g.node if n.op_type == "Gemm")


def computed_head(proto: onnx.ModelProto, op: str = "ReduceSum") -> onnx.ModelProto:
    """The Gemm head's bias replaced by a tensor computed from the head's input (``[N, 1]``)."""
    p = copy.deepcopy(proto)
    g = p.graph
    head = _head(g)
    at = list(g.node).index(head)
    if op == "ReduceSum":
        g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "fz_axes"))
        node = helper.make_node("ReduceSum", [head.input[0], "fz_axes"], ["fz_bias"], keepdims=1, name="fz_bias")
    else:  # an elementwise op of the features: [N, K] does not broadcast to [N, C] unless K == C or 1
        node = helper.make_node(op, [head.input[0]], ["fz_bias0"], name="fz_bias0")
        g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "fz_axes"))
        g.node.insert(at, node)
        at += 1
        node = helper.make_node("ReduceMax", [head.input[0]], ["fz_bias"], axes=[1], keepdims=1, name="fz_bias")
    g.node.insert(at, node)
    head.input[2] = "fz_bias"
    return p


def folding_bomb(proto: onnx.ModelProto, n: int, op: str = "ConstantOfShape") -> onnx.ModelProto:
    """``ConstantOfShape [n, n]`` (or ``Expand``/``Tile`` to it) -> ``ReduceSum`` -> ``Add`` into
    the head's bias: a constant only folding computes, of 4 n^2 bytes."""
    p = copy.deepcopy(proto)
    g = p.graph
    head = _head(g)
    g.initializer.append(numpy_helper.from_array(np.array([n, n], np.int64), "fz_shape"))
    if op == "ConstantOfShape":
        big = [helper.make_node("ConstantOfShape", ["fz_shape"], ["fz_big"], name="fz_big",
                                value=numpy_helper.from_array(np.array([1e-9], np.float32)))]
    elif op == "Expand":
        g.initializer.append(numpy_helper.from_array(np.array([[1e-9]], np.float32), "fz_one"))
        big = [helper.make_node("Expand", ["fz_one", "fz_shape"], ["fz_big"], name="fz_big")]
    else:
        g.initializer.append(numpy_helper.from_array(np.array([[1e-9]], np.float32), "fz_one"))
        big = [helper.make_node("Tile", ["fz_one", "fz_shape"], ["fz_big"], name="fz_big")]
    nodes = big + [helper.make_node("ReduceSum", ["fz_big"], ["fz_sum"], keepdims=0, name="fz_sum"),
                   helper.make_node("Add", [head.input[2], "fz_sum"], ["fz_b"], name="fz_add")]
    at = list(g.node).index(head)
    for k, nd in enumerate(nodes):
        g.node.insert(at + k, nd)
    head.input[2] = "fz_b"
    return p


FAMILIES = ("IR 3", "computed head", "folding bomb", "zip bomb", "nested")
BOMB_SIZES = [10, 1000, 4000, 5000, 20000, 60000, 10 ** 6, 2 ** 31]
BOMB_OPS = ["ConstantOfShape", "Expand", "Tile"]
HEAD_OPS = ["ReduceSum", "Relu", "Tanh"]


def gen_shape(rng) -> tuple[str, onnx.ModelProto]:
    """One of the model shapes issue 12 found crashing or exhausting memory, on a generated
    one-output stack (a Gemm head): IR 3, a computed head bias, a folding bomb."""
    op, lbr, relu = CELLS[rng.integers(len(CELLS))]
    layers, hidden, dirs = int(rng.integers(1, 3)), int(rng.integers(1, 6)), int(rng.integers(1, 3))
    proto = build(random_stack(np.random.default_rng(int(rng.integers(2**31))), op, layers, hidden, dirs,
                               features=int(rng.integers(1, 6)), classes=int(rng.integers(1, 5)), relu=relu,
                               linear_before_reset=lbr))
    desc = f"{layers}x{op} H={hidden} D={dirs} M:1"
    kind = _pick(rng, ["ir3", "head", "bomb", "bomb"])
    if kind == "ir3":
        return f"{desc} IR 3", ir3(proto)
    if kind == "head":
        head = _pick(rng, HEAD_OPS)
        return f"{desc} computed head bias ({head})", computed_head(proto, head)
    n, op = int(_pick(rng, BOMB_SIZES)), _pick(rng, BOMB_OPS)
    return f"{desc} folding bomb {op} [{n}, {n}]", folding_bomb(proto, n, op)


def gen_model(rng, pool: Pool) -> tuple[str, bytes]:
    if rng.random() < 0.15:
        desc, proto = gen_shape(rng)
        edits = [field_edit(rng, proto) for _ in range(int(_pick(rng, [0, 0, 0, 1, 2])))]
        return f"{desc}: " + ("; ".join(edits) or "unedited"), proto.SerializeToString()
    desc, proto = pool.pick(rng)
    how = float(rng.random())
    if how < 0.3:
        what, raw = byte_edit(rng, proto.SerializeToString())
        return f"{desc}: {what}", raw
    edits = []
    for _ in range(int(rng.integers(1, 4))):
        edits.append(wire_edit(rng, proto) if how < 0.6 else field_edit(rng, proto))
    try:
        raw = proto.SerializeToString()
    except Exception as exc:  # an edit protobuf itself refuses to encode: fall back to bytes
        return f"{desc}: unserializable edit ({exc.__class__.__name__})", b""
    if rng.random() < 0.1:
        what, raw = byte_edit(rng, raw)
        edits.append(what)
    return f"{desc}: " + "; ".join(edits), raw


def random_selection(rng, model: Model) -> dict:
    sels = {}
    for op in model.recurrent:
        H, D = op.hidden_size, op.directions
        p = _pick(rng, [0.0, 0.3, 0.7, 1.0])
        keep = [np.flatnonzero(rng.random(H) < p) for _ in range(D)]
        if rng.random() < 0.2:
            keep = [np.concatenate([k, k]) for k in keep]  # duplicates are allowed
        sels[op.index] = UnitSelection.from_keep(H, keep)
    return sels


def random_concern(rng, model: Model, unrolled: bool):
    from onnxmod.concern import Concern

    T = int(rng.integers(1, 5))
    p = _pick(rng, [0.0, 0.4, 0.9, 1.0])
    keep = {op.index: (rng.random((T, op.units)) if unrolled else rng.random(op.units)) < p for op in model.recurrent}
    return Concern(int(rng.integers(max(model.num_classes, 1))), "c", "unrolled" if unrolled else "rolled", keep)


def slice_model(rng, model: Model) -> None:
    """One of the slicers onnxmod runs on an accepted model, picked at random."""
    how = rng.random()
    if how < 0.4:
        model.apply_selection(random_selection(rng, model))
        onnx.checker.check_model(model.export())
    elif how < 0.6:
        from onnxmod.unrolled import apply_unrolled

        apply_unrolled(model, random_concern(rng, model, True))
        onnx.checker.check_model(model.export())
    else:  # the whole module builder: slicing, head channeling, metadata, full check
        from onnxmod.modularize import build_module

        build_module(model, random_concern(rng, model, how < 0.75))


class RuntimeInvalid(Exception):
    """The slicer failed on a model onnxruntime cannot run either: its shapes only look consistent
    (e.g. a static input length edited under a Reshape's literal width). Decomposition refuses such a
    model when it traces it (an InputError), so this is not counted as a failure of the slicer."""


def runs_in_onnxruntime(proto: onnx.ModelProto) -> bool:
    """Whether onnxruntime runs ``proto`` on a dummy batch (dynamic dims = 2). Only called after a
    slicer failure, to tell onnxmod bugs from models that merely pass the static checks."""
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feeds = {}
        for i in sess.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 2 for d in i.shape]
            dtype = np.int64 if "int64" in i.type else np.int32 if "int32" in i.type else np.float32
            feeds[i.name] = np.zeros(shape, dtype)
        sess.run(None, feeds)
        return True
    except Exception:  # noqa: BLE001
        return False


def run_model(rng, raw: bytes, workdir: Path) -> None:
    path = workdir / "case.onnx"
    path.write_bytes(raw)
    proto = load_onnx(path)
    model = Model(proto, source=str(path))
    model.describe()
    if rng.random() < 0.6:
        slice_checked(rng, model)


def slice_checked(rng, model: Model) -> None:
    """``slice_model``; an exception other than an OnnxmodError becomes ``RuntimeInvalid`` when
    onnxruntime cannot run the original model either."""
    try:
        slice_model(rng, model)
    except OnnxmodError:
        raise
    except Exception as exc:
        if not runs_in_onnxruntime(model.original):
            raise RuntimeInvalid(f"{type(exc).__name__}: {exc}") from exc
        raise


# ---- data files -------------------------------------------------------------------------------

NP_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, np.float16, np.float32, np.float64,
             np.bool_, np.complex64, "U3", object]


def _valid_arrays(rng):
    N, T, F = int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 4))
    C = int(rng.integers(1, 5))
    floats = rng.random() < 0.5
    many = rng.random() < 0.5
    z = {}
    for split in ("train", "test"):
        n = N if split == "train" else max(1, N - 1)
        z[f"x_{split}"] = (rng.normal(size=(n, T, F)).astype(np.float32) if floats
                           else rng.integers(0, 9, (n, T)).astype(np.int64))
        z[f"y_{split}"] = rng.integers(-1 if many else 0, C, (n, T) if many else (n,)).astype(np.int64)
    if rng.random() < 0.3:
        z["class_names"] = np.array([f"c{i}" for i in range(C)])
    if rng.random() < 0.3:
        z["vocab"] = np.array(["<pad>", "a", "b"])
    if rng.random() < 0.6:  # what a matching model would expect
        expect = {"num_classes": C, "many_output": many, "input_dtype": np.float32 if floats else np.int64,
                  "input_shape": ["batch", "seq", F] if floats else ["batch", T],
                  "max_token": None if floats else _pick(rng, [None, 9, 5])}
        return z, expect
    expect = {"num_classes": _pick(rng, [None, C, 1, 2, 8]), "many_output": _pick(rng, [None, many, not many]),
              "input_dtype": _pick(rng, [np.float32, np.int64, np.int32, np.float64] if floats else
                                   [np.int64, np.int32, np.float32]),
              "input_shape": _pick(rng, [None, ["batch", T, F] if floats else ["batch", T], ["batch", "seq", F],
                                         [None, None], [None, T + 1], ["b", 0, F], [1, T]]),
              "max_token": _pick(rng, [None, None, 0, 1, 9])}
    return z, expect


def _mutate_array(rng, a):
    how = int(rng.integers(7))
    if a.ndim == 0 and how in (2, 4, 5):
        how = 3
    if how == 0:
        dt = _pick(rng, NP_DTYPES)
        try:
            return a.astype(dt), f"dtype {np.dtype(dt)}"
        except (TypeError, ValueError, OverflowError):
            return np.array(a.tolist(), dtype=object), "object"
    if how == 1:
        return np.asarray(a.reshape(-1)[0] if a.size else 0), "0-d"
    if how == 2:
        return a.reshape(-1), "flattened"
    if how == 3:
        return a[..., None], "extra axis"
    if how == 4:
        return a[:0], "zero rows"
    if how == 5:
        return a[: max(1, a.shape[0] - 1) if a.ndim else None], "fewer rows"
    if a.dtype.kind not in "iuf":
        return (a[::-1] if a.ndim else a), "reversed"
    b = a.astype(np.float64) if a.dtype.kind == "f" else a.astype(np.int64)
    if b.size:
        v = _pick(rng, [np.nan, np.inf, -np.inf, -1, -5, 2**62, 1e39]
                  if b.dtype.kind == "f" else [-1, -5, 2**62, 10**6, -(2**62)])
        b.reshape(-1)[int(rng.integers(b.size))] = v
        return b, f"poked {v}"
    return b, "empty"


def gen_data(rng) -> tuple[str, bytes | None, dict]:
    z, expect = _valid_arrays(rng)
    edits = []
    for _ in range(int(_pick(rng, [0, 1, 1, 1, 2, 3]))):
        key = _pick(rng, list(z) + ["junk"])
        how = rng.random()
        if how < 0.15:
            z.pop(key, None)
            edits.append(f"drop {key}")
        elif how < 0.25:
            z[key] = rng.normal(size=(2, 2))
            edits.append(f"set {key} to float [2, 2]")
        elif key in z:
            z[key], what = _mutate_array(rng, z[key])
            edits.append(f"{key}: {what}")
    if rng.random() < 0.04:
        return gen_bomb(rng, z, edits, expect)
    buf = _io.BytesIO()
    container = rng.random()
    if container < 0.6:
        np.savez(buf, **z)
        kind = "npz"
    elif container < 0.8:
        np.savez_compressed(buf, **z)
        kind = "npz-compressed"
    elif container < 0.87:
        np.save(buf, next(iter(z.values())) if z else np.zeros(1))
        kind = "npy"
    elif container < 0.92:
        import pickle

        pickle.dump(z, buf)
        kind = "pickle"
    elif container < 0.96:
        buf.write(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
        kind = "random bytes"
    else:
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("x_train.npy", b"\x93NUMPY garbage")
            zf.writestr("y_train.txt", b"1,2,3")
        kind = "zip of junk"
    raw = buf.getvalue()
    if kind.startswith("npz") and rng.random() < 0.25:
        what, raw = byte_edit(rng, raw)
        kind += f" + {what}"
    return f"{kind} [{'; '.join(edits) or 'valid arrays'}] expect {expect}", raw, expect


def write_npz_bomb(path, base: dict, key: str, n: int, declared: int | None = None, dtype=np.int64) -> None:
    """``base`` saved as an .npz plus member ``key``: ``n`` zeros of ``dtype``, deflated (a few MB
    for gigabytes), written in chunks so that building it takes no memory. ``declared`` elements in
    its .npy header (default ``n``; a lying header declares more than the member holds)."""
    from numpy.lib import format as npy

    np.savez(path, **base)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(key + ".npy", "w", force_zip64=True) as f:
            npy.write_array_header_1_0(f, {"descr": npy.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                                           "shape": (declared if declared is not None else n,)})
            chunk = bytes(1 << 22)
            left = n * np.dtype(dtype).itemsize
            while left > 0:
                f.write(chunk[:min(left, len(chunk))])
                left -= len(chunk)


_BOMBS: dict = {}  # (key, n) -> the member's bytes: each inflating bomb is built once per process


def gen_bomb(rng, z: dict, edits: list, expect: dict):
    """A zip bomb: a member (used or unused key) that inflates above the 256 MiB cap (320 MB of
    zeros, 1.4 MB deflated; built once per key and process), or whose .npy header declares far more
    than it holds."""
    inflate = rng.random() < 0.5
    key = _pick(rng, ["x_test", "y_train", "junk"] if inflate else
                ["x_train", "y_train", "x_test", "y_test", "x_val", "class_names", "junk"])
    base = {k: v for k, v in z.items() if k != key}
    if inflate:
        n, declared, what = 40_000_000, None, "inflates to 320 MB"
    else:
        n = int(rng.integers(0, 100))
        declared = int(_pick(rng, [10 ** 9, 10 ** 12, 2 ** 62, n + 1]))
        what = f"declares {declared} elements, holds {n}"
    if declared is None:
        if key not in _BOMBS:
            b = _io.BytesIO()
            write_npz_bomb(b, {}, key, n)
            _BOMBS[key] = b.getvalue()
        buf = _io.BytesIO(_BOMBS[key])  # the other arrays appended: the bomb member is never inflated
        with zipfile.ZipFile(buf, "a") as zf:
            for k, v in base.items():
                with zf.open(k + ".npy", "w") as f:
                    np.lib.format.write_array(f, np.asanyarray(v), allow_pickle=True)
    else:
        buf = _io.BytesIO()
        write_npz_bomb(buf, base, key, n, declared)
    return f"zip bomb {key} {what} [{'; '.join(edits) or 'valid arrays'}] expect {expect}", buf.getvalue(), expect


def run_data(raw: bytes, expect: dict, workdir: Path) -> None:
    path = workdir / "case.npz"
    path.write_bytes(raw)
    load_data(path, **expect)


# ---- slicers ----------------------------------------------------------------------------------


def gen_slice(rng) -> tuple[str, object]:
    desc, spec = random_spec(rng)
    return f"{desc} random slice", (spec, None)


def run_slice(rng, payload) -> None:
    spec, _ = payload
    slice_model(rng, Model(build(spec)))


# ---- modules and compositions -------------------------------------------------------------------

META_VALUES = ["", "x", "-1", "0", "99", "1e9", "[]", "{}", "null", "[1, 2]", '{"name": 1}', '[{"name": "x"}]',
               '{"name": "x", "dtype": "float32", "shape": 5}', "module", "composition", "model", "rolled",
               "unrolled", "enc-dec", "M:N", '[{"class_index": "a"}]', '[{"class_index": 0, "class_name": 1}]',
               "\u00e9" * 3, "9" * 40]
META_KEYS = ["onnxmod.kind", "onnxmod.class_index", "onnxmod.class_name", "onnxmod.input_signature",
             "onnxmod.vocab_sha256", "onnxmod.max_steps", "onnxmod.classes", "onnxmod.shape", "onnxmod.mode",
             "onnxmod.lang_token", "onnxmod.output_vocab_sha256", "onnxmod.concern", "onnxmod.modules"]


class Modules:
    """A few real modules and compositions (rolled and unrolled), decomposed once per process."""

    def __init__(self, seed: int, root: Path):
        from onnxmod import api

        rng = np.random.default_rng([seed, 11])
        self.files: list[bytes] = []
        self.bases: list[bytes] = []  # the models they come from (the zoo target's members)
        self.data = root / "modules-data.npz"
        x = rng.normal(size=(24, 4, 3)).astype(np.float32)
        y = np.tile(np.arange(3), 8).astype(np.int64)
        np.savez(self.data, x_train=x, y_train=y, x_test=x[:9], y_test=y[:9])
        self.valid = {"x_train": x, "y_train": y, "x_test": x[:9], "y_test": y[:9]}
        for i, (op, mode) in enumerate((("LSTM", "rolled"), ("GRU", "unrolled"))):
            m = root / f"modules-{i}.onnx"
            onnx.save(build(random_stack(np.random.default_rng(i), op, 1, 3, 1, features=3, classes=3)), str(m))
            self.bases.append(m.read_bytes())
            out = root / f"modules-{i}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                api.decompose(m, self.data, out, mode=mode, progress=False)
            self.files += [f.read_bytes() for f in sorted(out.glob("modules/*.onnx"))]
            self.files.append((out / "composed.onnx").read_bytes())
        self.kinds = [any(e.key == "onnxmod.kind" and e.value == "composition"
                          for e in onnx.ModelProto.FromString(f).metadata_props) for f in self.files]

    def pick(self, rng, composition: bool | None = None) -> onnx.ModelProto:
        """A module or composition (``composition``: True for a composition, None for either)."""
        files = self.files if composition is None else [f for f, c in zip(self.files, self.kinds) if c == composition]
        return onnx.ModelProto.FromString(files[int(rng.integers(len(files)))])


def meta_edit(rng, proto: onnx.ModelProto) -> str:
    meta = {e.key: e.value for e in proto.metadata_props}
    key = _pick(rng, list(meta) + META_KEYS)
    if rng.random() < 0.25:
        meta.pop(key, None)
        what = f"del {key}"
    else:
        meta[key] = _pick(rng, META_VALUES + [meta.get(key, "")[:-1], meta.get(key, "") + "]"])
        what = f"{key}={meta[key][:40]!r}"
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    return what


INDEX_VALUES = ["1_000", " 3 ", "-7", "+1", "01", "1" * 30, "\u0663", "0x1", "1.0", "", "65536", "2"]


def nested_edit(rng, proto: onnx.ModelProto) -> str:
    """Damage one field of one module's identity inside a composition's ``onnxmod.modules``."""
    import json

    meta = {e.key: e.value for e in proto.metadata_props}
    try:
        mods = json.loads(meta["onnxmod.modules"])
        entry = mods[int(rng.integers(len(mods)))]
    except (KeyError, ValueError, TypeError, IndexError):
        return "no nested metadata"
    if not isinstance(entry, dict):  # damaged by an earlier edit
        return "no nested metadata"
    key = _pick(rng, list(entry) + META_KEYS)
    how = rng.random()
    if how < 0.15:
        entry.pop(key, None)
        what = f"del {key}"
    elif how < 0.25:
        entry[key] = _pick(rng, [5, None, [1], {"a": 1}, 1.5])
        what = f"{key}={entry[key]!r} (not a string)"
    else:
        was = entry.get(key, "")
        was = was if isinstance(was, str) else json.dumps(was)  # an int field (an index), or one an edit made
        entry[key] = _pick(rng, META_VALUES + INDEX_VALUES + [was[:-1], was + "]"])
        what = f"{key}={str(entry[key])[:40]!r}"
    meta["onnxmod.modules"] = json.dumps(mods)
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    return f"nested {what}"


def gen_module(rng, mods: Modules):
    protos, edits = [], []
    op = _pick(rng, ["inspect", "compose", "compose", "compose", "evaluate", "replace", "replace"])
    for i in range(int(rng.integers(1, 4)) if op != "replace" else 2):
        proto = mods.pick(rng, composition=True if op == "replace" and i == 0 else None)
        for _ in range(int(_pick(rng, [0, 1, 1, 2, 3]))):
            how = rng.random()
            edits.append(nested_edit(rng, proto) if how < 0.35 else meta_edit(rng, proto) if how < 0.85
                         else field_edit(rng, proto))
        protos.append(proto.SerializeToString())
    return f"{op} of {len(protos)} file(s): {'; '.join(edits) or 'unedited'}", (op, protos)


def run_module(payload, mods: Modules, workdir: Path) -> None:
    from onnxmod import api

    op, protos = payload
    paths = []
    for i, raw in enumerate(protos):
        paths.append(workdir / f"case{i}.onnx")
        paths[-1].write_bytes(raw)
    out = workdir / "out.onnx"
    try:
        if op == "inspect":
            api.inspect(paths[0])
        elif op == "compose":
            api.compose(paths, out, force=True)
        elif op == "replace":
            api.replace(paths[0], paths[1], out, force=True)
        else:  # one onnxruntime session: only for this fifth of the module cases
            api.evaluate(paths[0], mods.data)
    finally:
        left = [q.name for q in workdir.iterdir() if q.name.startswith(".out.onnx.")]
        out.unlink(missing_ok=True)
        if left:
            raise AssertionError(f"temporary output left behind: {left}")


# ---- fingerprints and zoos (issue 22) ------------------------------------------------------------

FP_KINDS = ("functional", "functional", "interactive", "mechanistic")
BIG_BOMB = 250_000_000  # int64 elements: an x_train inflating to 2 GB from ~2 MB (issue 22's report)


def _bomb_member(key: str, n: int) -> bytes:
    """An .npz holding only member ``key``: ``n`` int64 zeros, deflated (built once per process)."""
    if (key, n) not in _BOMBS:
        b = _io.BytesIO()
        write_npz_bomb(b, {}, key, n)
        _BOMBS[key, n] = b.getvalue()
    return _BOMBS[key, n]


def gen_npz(rng, valid: dict) -> tuple[str, bytes]:
    """An .npz read as probe data or as a zoo's data file: ``valid`` as is or with an array mutated,
    issue 22's 2 GB ``x_train`` bomb next to valid arrays, or any of ``gen_data``'s bad files (zip
    bombs, pickles, truncations, random bytes, ...)."""
    how = rng.random()
    if how < 0.35:
        z = dict(valid)
        edits = []
        for _ in range(int(_pick(rng, [0, 0, 1, 2]))):
            key = _pick(rng, list(z) + ["x_extra"])
            if key not in z:
                z[key] = rng.normal(size=(2, 2))
                edits.append(f"add {key} float [2, 2]")
            else:
                z[key], what = _mutate_array(rng, z[key])
                edits.append(f"{key}: {what}")
        buf = _io.BytesIO()
        np.savez(buf, **z)
        return f"npz [{'; '.join(edits) or 'valid arrays'}]", buf.getvalue()
    if how < 0.45:
        key = _pick(rng, ["x_train", "x_val", "y_train"])
        buf = _io.BytesIO(_bomb_member(key, BIG_BOMB))
        with zipfile.ZipFile(buf, "a") as zf:
            for k, v in valid.items():
                if k != key:
                    with zf.open(k + ".npy", "w") as f:
                        np.lib.format.write_array(f, np.asanyarray(v), allow_pickle=False)
        return f"zip bomb {key} inflates to 2 GB", buf.getvalue()
    desc, raw, _ = gen_data(rng)
    return desc, raw


class Zoo:
    """A tiny zoo (the module target's base models as members, with ``zoo.*`` metadata and one data
    file) and its index, built once per process."""

    def __init__(self, mods: Modules, root: Path):
        from onnxmod import api

        self.root = root / "zoo"
        (self.root / "members").mkdir(parents=True)
        (self.root / "data").mkdir()
        self.data = (mods.data).read_bytes()
        (self.root / "data" / "d.npz").write_bytes(self.data)
        self.members = []
        for i, raw in enumerate(mods.bases):
            proto = onnx.ModelProto.FromString(raw)
            for k, v in (("zoo.data", "data/d.npz"), ("zoo.task", f"task{i}"), ("zoo.classes", "[0, 1, 2]"),
                         ("zoo.test_accuracy", "0.5")):
                proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
            self.members.append(proto.SerializeToString())
            (self.root / "members" / f"m{i}.onnx").write_bytes(self.members[-1])
        self.index = root / "zoo-index"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            api.zoo_index(self.root, self.index, probes=8)
        self.files = {p.relative_to(self.index).as_posix(): p.read_bytes()
                      for p in sorted(self.index.rglob("*")) if p.is_file()}
        with np.load(mods.data) as z:
            self.valid = {k: z[k] for k in z.files}


ZOO_META_VALUES = ["", "data/d.npz", "data/missing.npz", "../outside.npz", "/etc/passwd", "data/\x00.npz", "data",
                   "[0, 1, 2]", "[2, 0]", "[0, 0]", "[-1]", "[1e400]", "[true]", "[99]", "{}", "[]", "[0.5]", "x",
                   "0.5", "nan", "-3", "1e999", "0x1"]


def zoo_meta_edit(rng, proto: onnx.ModelProto) -> str:
    meta = {e.key: e.value for e in proto.metadata_props}
    key = _pick(rng, ["zoo.data", "zoo.classes", "zoo.test_accuracy", "zoo.task", "onnxmod.kind"])
    if rng.random() < 0.2:
        meta.pop(key, None)
        what = f"del {key}"
    else:
        meta[key] = _pick(rng, ZOO_META_VALUES)
        what = f"{key}={meta[key]!r}"
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    return what


JSON_VALUES = [None, 0, -1, 1.5, "", "x", [], {}, [1], {"name": 1}, True, "9" * 40]


def json_edit(rng, text: bytes) -> tuple[str, bytes]:
    """One edit of an index.json: a field of a module entry retyped or dropped, the modules list
    damaged, the text truncated, nested deeply or replaced by bytes."""
    import json

    how = rng.random()
    if how < 0.1:
        return "truncated", text[: int(rng.integers(len(text) + 1))]
    if how < 0.15:
        return "random bytes", rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    if how < 0.2:
        return "deeply nested", b"[" * 100000 + b"]" * 100000
    try:
        d = json.loads(text)
    except (ValueError, RecursionError):
        d = None
    if not (isinstance(d, dict) and isinstance(d.get("modules"), list) and d["modules"]
            and all(isinstance(e, dict) for e in d["modules"])):  # damaged by an earlier edit
        return "truncated", text[: int(rng.integers(len(text) + 1))]
    if how < 0.3:
        d["modules"] = _pick(rng, JSON_VALUES)
        return f"modules={d['modules']!r}", json.dumps(d).encode()
    if how < 0.35:
        d = _pick(rng, JSON_VALUES)
        return f"index={d!r}", json.dumps(d).encode()
    e = d["modules"][int(rng.integers(len(d["modules"])))]
    key = _pick(rng, list(e) + ["input_signature", "file"])
    if rng.random() < 0.25:
        e.pop(key, None)
        what = f"del {key}"
    elif key == "input_signature" and rng.random() < 0.5:
        e[key] = _pick(rng, [{"name": "x", "dtype": "float32", "shape": 5}, [], [{"name": "x"}],
                             {"name": "x", "dtype": "float32", "shape": ["b", -1, 3.5]}])
        what = f"{key}={e[key]!r}"
    else:
        e[key] = _pick(rng, JSON_VALUES)
        what = f"{key}={e[key]!r}"
    return f"entry {what}", json.dumps(d).encode()


def gen_fingerprint(rng, mods: Modules):
    """``api.fingerprint`` on 1-3 modules, compositions or base models (their metadata or graph
    sometimes edited), with generated probe data (valid, mutated, bombs, broken containers)."""
    files, edits = [], []
    for _ in range(int(rng.integers(1, 4))):
        proto = (onnx.ModelProto.FromString(_pick(rng, mods.bases)) if rng.random() < 0.3 else mods.pick(rng))
        for _ in range(int(_pick(rng, [0, 0, 0, 1, 2]))):
            edits.append(meta_edit(rng, proto) if rng.random() < 0.6 else field_edit(rng, proto))
        files.append(proto.SerializeToString())
    probe, what = None, "no probe data"
    if rng.random() < 0.7:
        valid = {k: v for k, v in mods.valid.items() if k.startswith("x_")}
        what, probe = gen_npz(rng, valid)
    kind = _pick(rng, FP_KINDS)
    probes, chains = int(_pick(rng, [0, 1, 5, 16, 64])), int(_pick(rng, [0, 1, 2, 8]))
    desc = (f"fingerprint {kind} of {len(files)} file(s) ({'; '.join(edits) or 'unedited'}), probes {probes}, "
            f"chains {chains}, probe data: {what}")
    return desc, (files, probe, kind, probes, chains, int(rng.integers(3)))


def run_fingerprint(payload, workdir: Path) -> None:
    from onnxmod import api

    files, probe, kind, probes, chains, seed = payload
    paths = []
    for i, raw in enumerate(files):
        paths.append(workdir / f"case{i}.onnx")
        paths[-1].write_bytes(raw)
    data = None
    if probe is not None:
        data = workdir / "case-probe.npz"
        data.write_bytes(probe)
    out = workdir / "fp.npz"
    try:
        api.fingerprint(paths, out, kind=kind, probes=probes, probe_data=data, seed=seed, chains=chains, force=True)
    finally:
        left = [q.name for q in workdir.iterdir() if q.name.startswith(".fp.npz.")]
        out.unlink(missing_ok=True)
        if left:
            raise AssertionError(f"temporary output left behind: {left}")


def gen_zoo(rng, zoo: Zoo):
    """``zoo find`` on an index whose index.json or fingerprints.npz was damaged (with a member,
    a module or damaged bytes as --signature-of), or ``zoo index`` on a zoo whose members' zoo.*
    metadata, graph or data file was damaged."""
    if rng.random() < 0.75:
        files, edits = dict(zoo.files), []
        for _ in range(int(_pick(rng, [1, 1, 2]))):
            if rng.random() < 0.5:
                what, files["index.json"] = json_edit(rng, files.get("index.json", b""))
                edits.append(f"index.json {what}")
            else:
                valid = {"fingerprints": rng.normal(size=(len(json_files(files)), 8)).astype(np.float32),
                         "files": np.array(json_files(files))}
                what, files["fingerprints.npz"] = gen_npz(rng, valid)
                edits.append(f"fingerprints.npz {what}")
            if rng.random() < 0.1:
                files.pop(_pick(rng, ["index.json", "fingerprints.npz"]))
                edits.append("a file removed")
        sig = zoo.members[int(rng.integers(len(zoo.members)))]
        if rng.random() < 0.3:
            what, sig = byte_edit(rng, sig)
            edits.append(f"signature-of {what}")
        cls, top = _pick(rng, ["0", "1", "2", "nope", ""]), int(_pick(rng, [1, 5, 5, 5, 0]))
        task = _pick(rng, [None, None, "task0", "x"])
        return f"zoo find class {cls!r} top {top} task {task}: {'; '.join(edits)}", ("find", files, sig, cls, top, task)
    members, edits = [], []
    for raw in zoo.members[: int(rng.integers(1, len(zoo.members) + 1))]:
        proto = onnx.ModelProto.FromString(raw)
        for _ in range(int(_pick(rng, [0, 1, 1, 2]))):
            edits.append(zoo_meta_edit(rng, proto) if rng.random() < 0.8 else field_edit(rng, proto))
        members.append(proto.SerializeToString())
    data = zoo.data
    if rng.random() < 0.5:
        what, data = gen_npz(rng, zoo.valid)
        edits.append(f"data {what}")
    return f"zoo index of {len(members)} member(s): {'; '.join(edits) or 'unedited'}", ("index", members, data)


def json_files(files: dict) -> list[str]:
    return sorted(f for f in files if f.startswith("modules/"))


def run_zoo(payload, workdir: Path) -> None:
    import shutil

    from onnxmod import api

    for d in ("case-zoo", "case-index", "case-out"):
        shutil.rmtree(workdir / d, ignore_errors=True)
    if payload[0] == "find":
        _, files, sig, cls, top, task = payload
        for rel, raw in files.items():
            (workdir / "case-index" / rel).parent.mkdir(parents=True, exist_ok=True)
            (workdir / "case-index" / rel).write_bytes(raw)
        (workdir / "case-sig.onnx").write_bytes(sig)
        api.zoo_find(workdir / "case-index", cls, workdir / "case-sig.onnx", top=top, task=task)
        return
    _, members, data = payload
    (workdir / "case-zoo" / "members").mkdir(parents=True)
    (workdir / "case-zoo" / "data").mkdir()
    (workdir / "case-zoo" / "data" / "d.npz").write_bytes(data)
    for i, raw in enumerate(members):
        (workdir / "case-zoo" / "members" / f"m{i}.onnx").write_bytes(raw)
    try:
        api.zoo_index(workdir / "case-zoo", workdir / "case-out", probes=8)
    finally:
        left = [q.name for q in workdir.iterdir() if q.name.startswith(".case-out.")]
        if left:
            raise AssertionError(f"temporary output left behind: {left}")


# ---- driver -----------------------------------------------------------------------------------


class CaseTimeout(BaseException):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def case_rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, i])


def pick_target(rng, targets) -> str:
    w = np.array([WEIGHTS[t] for t in targets])
    return targets[int(rng.choice(len(targets), p=w / w.sum()))]


def run_case(seed: int, i: int, targets, pool: Pool, workdir: Path, timeout: float):
    """Returns (target, outcome, description, detail)."""
    rng = case_rng(seed, i)
    target = pick_target(rng, targets)
    try:
        return _run_case(rng, target, pool, workdir, timeout)
    except Exception as exc:  # noqa: BLE001 - a bug in this harness, not in onnxmod: still reported
        return target, f"HARNESS {type(exc).__name__}", "?", traceback.format_exc()


def _run_case(rng, target, pool: Pool, workdir: Path, timeout: float):
    if target == "model":
        desc, raw = gen_model(rng, pool)

        def go():
            run_model(rng, raw, workdir)
        name = "case.onnx"
    elif target == "data":
        desc, raw, expect = gen_data(rng)

        def go():
            run_data(raw, expect, workdir)
        name = "case.npz"
    elif target == "slice":
        desc, payload = gen_slice(rng)

        def go():
            run_slice(rng, payload)
        name = None
    elif target == "module":
        desc, payload = gen_module(rng, pool.modules(workdir))

        def go():
            run_module(payload, pool.modules(workdir), workdir)
        name = ("case", "modules-data.npz")  # the model files or the data file
    elif target == "fingerprint":
        desc, payload = gen_fingerprint(rng, pool.modules(workdir))

        def go():
            run_fingerprint(payload, workdir)
        name = ("case",)  # a model file or the probe data
    else:
        desc, payload = gen_zoo(rng, pool.zoo(workdir))

        def go():
            run_zoo(payload, workdir)
        name = ("case",)  # the index, the signature file, the zoo or one of its members or data files
    if timeout:
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            go()
        outcome, detail = "ok", ""
    except CaseTimeout:
        outcome, detail = "HANG", f"over {timeout} s"
    except RuntimeInvalid as exc:
        outcome, detail = "ok-invalid (onnxruntime cannot run the model either)", str(exc)
    except OnnxmodError as exc:
        outcome, detail = type(exc).__name__, str(exc)
        if "\n" in detail:
            outcome, detail = "MULTILINE " + outcome, detail
        elif name and not any(n in detail for n in (name if isinstance(name, tuple) else (name,))):
            outcome = "unnamed " + outcome
    except Exception as exc:  # noqa: BLE001 - this is what we are looking for
        outcome = f"UNCAUGHT {type(exc).__name__}"
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "/onnxmod/" in f.filename] or frames
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
        outcome += f" at {where}"
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    finally:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return target, outcome, desc, detail


def failed(outcome: str) -> bool:
    return outcome.startswith(("UNCAUGHT", "HANG", "MULTILINE", "HARNESS"))


def _quiet():
    try:
        import onnx_graphsurgeon as gs

        gs.logger.G_LOGGER.severity = 100
        import onnxruntime

        onnxruntime.set_default_logger_severity(4)
    except Exception:  # noqa: BLE001
        pass


def worker(args):
    seed, indices, targets, timeout, verbose = args
    messages = collections.Counter() if verbose else None
    _quiet()
    warnings.simplefilter("ignore")  # numpy casts in the generators, library deprecations
    signal.signal(signal.SIGALRM, _alarm)
    pool = Pool(seed)
    counts = collections.Counter()
    failures, seen = [], set()
    memory = {}  # (target, "refused" | "accepted") -> (peak RSS in MB after such a case, its index)
    with tempfile.TemporaryDirectory(prefix="onnxmod-fuzz-") as d:
        workdir = Path(d)
        for i in indices:
            target, outcome, desc, detail = run_case(seed, i, targets, pool, workdir, timeout)
            counts[(target, outcome)] += 1
            # the process's peak RSS so far bounds this case's peak from above
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            kind = (target, "accepted" if outcome.startswith("ok") else "refused")
            for fam in FAMILIES:
                if fam in desc:
                    memory[("family", fam, outcome.split(" at ")[0])] = memory.get(
                        ("family", fam, outcome.split(" at ")[0]), 0) + 1
            if rss > memory.get(kind, (0, None))[0]:
                memory[kind] = (rss, i)
            if messages is not None and detail and not failed(outcome):
                messages[(target, _gist(detail))] += 1
            if failed(outcome) and outcome not in seen:  # first example of each distinct failure
                seen.add(outcome)
                failures.append((i, target, outcome, desc, detail))
    return counts, failures, messages, memory


def _gist(message: str) -> str:
    """A refusal without its file path and numbers: groups messages for --verbose."""
    import re

    m = re.sub(r"\S*case\d*\.(onnx|npz)", "FILE", message)
    m = re.sub(r"-?\d+", "N", m)
    return m[:110]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10000, help="number of generated inputs (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    ap.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds before a case counts as a hang")
    ap.add_argument("--case", type=int, default=None, help="re-run one case and show its traceback")
    ap.add_argument("--show", type=int, default=5, help="distinct failures to print (default 5)")
    ap.add_argument("--verbose", action="store_true", help="also print the most common refusal messages")
    args = ap.parse_args(argv)
    targets = tuple(args.targets)
    if args.case is not None:
        _quiet()
        signal.signal(signal.SIGALRM, _alarm)
        with tempfile.TemporaryDirectory(prefix="onnxmod-fuzz-") as d:
            target, outcome, desc, detail = run_case(args.seed, args.case, targets, Pool(args.seed), Path(d),
                                                     args.timeout)
        print(f"case {args.case} ({target}): {outcome}\n  input: {desc}\n  {detail}")
        return 1 if failed(outcome) else 0
    t0 = time.perf_counter()
    jobs = max(1, args.jobs)
    chunks = [list(range(j, args.count, jobs)) for j in range(jobs)]
    counts = collections.Counter()
    failures = []
    work = [(args.seed, c, targets, args.timeout, args.verbose) for c in chunks if c]
    if jobs == 1:
        results = [worker(w) for w in work]
    else:
        with cf.ProcessPoolExecutor(jobs) as ex:
            results = list(ex.map(worker, work))
    seen = set()
    messages = collections.Counter()
    memory, families = {}, collections.Counter()
    for c, f, m, mem in results:
        counts.update(c)
        messages.update(m or {})
        for k, v in mem.items():
            if k[0] == "family":
                families[k[1:]] += v
            else:
                memory[k] = max(memory.get(k, v), v)
        for item in f:
            if item[2] not in seen:
                seen.add(item[2])
                failures.append(item)
    failures.sort()
    dt = time.perf_counter() - t0
    print(f"onnxmod fuzz: {args.count} inputs, seed {args.seed}, targets {' '.join(targets)}, "
          f"{jobs} job(s), {dt:.0f} s")
    for target in targets:
        sub = {o: n for (t, o), n in counts.items() if t == target}
        print(f"  {target:<6} {sum(sub.values()):>6}")
        for o, n in sorted(sub.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"      {n:>6}  {o}")
    if args.verbose:
        for target in targets:
            top = sorted(((n, msg) for (t, msg), n in messages.items() if t == target), reverse=True)[:60]
            print(f"  most common refusals ({target}):")
            for n, msg in top:
                print(f"      {n:>6}  {msg}")
    print("  issue-12 generators (inside the targets above):")
    for fam in FAMILIES:
        sub = {o: n for (f, o), n in families.items() if f == fam}
        print(f"      {fam:<14} {sum(sub.values()):>5}: " + ", ".join(f"{o} {n}" for o, n in
                                                              sorted(sub.items(), key=lambda kv: -kv[1])))
    print("  peak RSS of the worker process after each kind of case (an upper bound for every case of that "
          "kind, the workers' start-up included):")
    for (t, k), (mb, i) in sorted(memory.items()):
        print(f"      {t:<6} {k:<8} {mb:7.0f} MB (reached at case {i})")
    bad = sum(n for (t, o), n in counts.items() if failed(o))
    total = collections.Counter()
    for (_, o), n in counts.items():
        total["uncaught/hang" if failed(o) else "ok" if o.startswith("ok") else o.split(" ")[-1]] += n
    print("  total: " + ", ".join(f"{k} {v}" for k, v in sorted(total.items(), key=lambda kv: -kv[1])))
    if bad:
        print(f"FAILED: {bad} input(s) raised something other than an OnnxmodError (or hung); "
              f"{len(failures)} distinct, first {min(len(failures), args.show)}:")
        for i, target, outcome, desc, detail in failures[: args.show]:
            print(f"- case {i} ({target}): {outcome}\n  input: {desc}\n  re-run: python tools/fuzz.py "
                  f"--seed {args.seed} --case {i}\n  " + detail.strip().replace("\n", "\n  "))
        return 1
    print("no uncaught exception")
    return 0


if __name__ == "__main__":
    sys.exit(main())
