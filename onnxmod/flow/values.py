"""What element-wise ops compute on constants: the value a removed unit's positions hold (its
*null*) after each op, evaluated in numpy. One table for unary ops and one for binary ops; an op
missing from them is one whose effect on a removed unit the flow does not claim to know."""
from __future__ import annotations

import math

import numpy as np


def _attr(node, name, default):
    return node.attrs.get(name, default)


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


UNARY = {
    "Identity": lambda n, x: x,
    "Dropout": lambda n, x: x,
    "Cast": lambda n, x: x,
    "Relu": lambda n, x: np.maximum(x, 0.0),
    "LeakyRelu": lambda n, x: np.where(x >= 0, x, float(_attr(n, "alpha", 0.01)) * x),
    "Elu": lambda n, x: np.where(x >= 0, x, float(_attr(n, "alpha", 1.0)) * (np.exp(x) - 1)),
    "Selu": lambda n, x: float(_attr(n, "gamma", 1.0507)) * np.where(
        x > 0, x, float(_attr(n, "alpha", 1.67326)) * (np.exp(x) - 1)),
    "Celu": lambda n, x: np.maximum(x, 0) + np.minimum(0, float(_attr(n, "alpha", 1.0)) * (
        np.exp(x / float(_attr(n, "alpha", 1.0))) - 1)),
    "Tanh": lambda n, x: np.tanh(x),
    "Sigmoid": lambda n, x: 1.0 / (1.0 + np.exp(-x)),
    "HardSigmoid": lambda n, x: np.clip(float(_attr(n, "alpha", 0.2)) * x + float(_attr(n, "beta", 0.5)), 0, 1),
    "HardSwish": lambda n, x: x * np.clip(x / 6.0 + 0.5, 0, 1),
    "Softsign": lambda n, x: x / (1 + np.abs(x)),
    "Softplus": lambda n, x: np.log1p(np.exp(x)),
    "Abs": lambda n, x: np.abs(x),
    "Neg": lambda n, x: -x,
    "Exp": lambda n, x: np.exp(x),
    "Sqrt": lambda n, x: np.sqrt(np.maximum(x, 0)),
    "Erf": lambda n, x: _erf(x),
    "Gelu": lambda n, x: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
    "Sin": lambda n, x: np.sin(x),
    "Cos": lambda n, x: np.cos(x),
    "Sign": lambda n, x: np.sign(x),
    "Floor": lambda n, x: np.floor(x),
    "Ceil": lambda n, x: np.ceil(x),
    "Round": lambda n, x: np.round(x),
    "Mish": lambda n, x: x * np.tanh(np.log1p(np.exp(x))),
    "ThresholdedRelu": lambda n, x: np.where(x > float(_attr(n, "alpha", 1.0)), x, 0.0),
}

BINARY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": lambda a, b: np.divide(a, b, out=np.zeros(np.broadcast_shapes(np.shape(a), np.shape(b))),
                                  where=np.asarray(b) != 0) if not np.all(np.asarray(b) != 0) else np.divide(a, b),
    "Pow": np.power,
    "Max": np.maximum,
    "Min": np.minimum,
    "Sum": np.add,
    "PRelu": lambda a, b: np.where(a >= 0, a, a * b),
}

# binary ops for which a removed unit's 0 stays 0 whatever the other operand (a mask, a count, an
# attention weight computed elsewhere): by input position of the unit-bearing operand
ZERO_ABSORBING = {"Mul": {0, 1}, "Div": {0}, "And": {0, 1}, "PRelu": {0}}


def unary(node, x: np.ndarray) -> np.ndarray | None:
    """``node`` (a unary op) applied to ``x``; None when the table does not know the op."""
    if node.op == "Clip":
        lo = node.attrs.get("min", -np.inf)
        hi = node.attrs.get("max", np.inf)
        return np.clip(x, lo, hi)
    fn = UNARY.get(node.op)
    if fn is None:
        return None
    with np.errstate(all="ignore"):
        return np.asarray(fn(node, np.asarray(x, dtype=np.float64)), dtype=np.float64)


def binary(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    fn = BINARY.get(op)
    if fn is None:
        return None
    with np.errstate(all="ignore"):
        return np.asarray(fn(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)), dtype=np.float64)
