"""Where a cell's equations compute: numpy arrays (``Numpy``) or ONNX nodes (``Onnx``).

A backend offers the handful of operations the cells use: ``weight`` (a parameter), ``mm``
(``x @ w``), ``add``/``sub``/``mul``, ``one_minus``, ``split`` (the last axis, in parts of the given sizes),
``clip`` and ``act`` (an ONNX recurrent activation ``(name, alpha, beta)``).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UnsupportedModelError
from . import activations as _act


class Numpy:
    """float64 numpy: the reference."""

    def weight(self, tag, value):
        return np.asarray(value, dtype=np.float64)

    def mm(self, x, w):
        return x @ w

    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def mul(self, a, b):
        return a * b

    def one_minus(self, a):
        return 1 - a

    def split(self, x, sizes):
        edges = np.cumsum([0, *sizes])
        return [x[..., a:b] for a, b in zip(edges[:-1], edges[1:])]

    def clip(self, x, c):
        return np.clip(x, -c, c)

    def act(self, x, spec):
        name, a, b = spec
        return _act.apply(name, x, a, b)


class Onnx:
    """Builds one graph's nodes (a Scan body) with unique tensor names under ``prefix``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[gs.Node] = []
        self.n = 0

    def var(self, tag: str) -> gs.Variable:
        self.n += 1
        return gs.Variable(f"{self.prefix}/{tag}_{self.n}", dtype=np.float32)

    def weight(self, tag: str, value) -> gs.Constant:
        self.n += 1
        return gs.Constant(f"{self.prefix}/{tag}_{self.n}", np.ascontiguousarray(np.asarray(value, dtype=np.float32)))

    def weight_int(self, tag: str, value) -> gs.Constant:
        self.n += 1
        return gs.Constant(f"{self.prefix}/{tag}_{self.n}", np.asarray(value, dtype=np.int64))

    def op(self, op: str, inputs, attrs=None, tag=None) -> gs.Variable:
        out = self.var(tag or op.lower())
        self.nodes.append(gs.Node(op, f"{out.name}/node", attrs=attrs or {}, inputs=list(inputs), outputs=[out]))
        return out

    def mm(self, x, w):
        return self.op("MatMul", [x, w])

    def add(self, a, b):
        return self.op("Add", [a, b])

    def sub(self, a, b):
        return self.op("Sub", [a, b])

    def mul(self, a, b):
        return self.op("Mul", [a, b])

    def one_minus(self, a):
        return self.op("Sub", [self.weight("one", np.float32(1.0)), a])

    def split(self, x, sizes):
        outs = [self.var("part") for _ in sizes]
        self.nodes.append(gs.Node("Split", f"{outs[0].name}/split", attrs={"axis": -1},
                                  inputs=[x, self.weight_int("sizes", list(sizes))], outputs=outs))
        return outs

    def clip(self, x, c):
        return self.op("Clip", [x, self.weight("lo", np.float32(-c)), self.weight("hi", np.float32(c))])

    def act(self, x, spec):
        name, a, b = spec
        if name in ("Sigmoid", "Tanh", "Relu", "Softsign", "Softplus"):
            return self.op(name, [x])
        if name == "HardSigmoid":
            return self.op(name, [x], {"alpha": float(a), "beta": float(b)})
        if name in ("LeakyRelu", "ThresholdedRelu", "Elu"):
            return self.op(name, [x], {"alpha": float(a)})
        if name == "Affine":
            return self.add(self.mul(x, self.weight("a", np.float32(a))), self.weight("b", np.float32(b)))
        if name == "ScaledTanh":
            return self.mul(self.op("Tanh", [self.mul(x, self.weight("b", np.float32(b)))]),
                            self.weight("a", np.float32(a)))
        raise UnsupportedModelError(f"activation {name!r} has no ONNX form here")
