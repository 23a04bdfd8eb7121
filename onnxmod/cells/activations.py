"""The activation functions the ONNX recurrent ops accept, in numpy.

Names, parameters and defaults follow the ONNX operator specification of ``LSTM``/``GRU``/``RNN``
(``activation_alpha``/``activation_beta`` are consumed in order by the functions that take them).
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedModelError

# name -> (number of parameters it consumes, default alpha, default beta)
_PARAMS = {
    "Sigmoid": (0, None, None),
    "Tanh": (0, None, None),
    "Relu": (0, None, None),
    "Softsign": (0, None, None),
    "Softplus": (0, None, None),
    "HardSigmoid": (2, 0.2, 0.5),
    "LeakyRelu": (1, 0.01, None),
    "ThresholdedRelu": (1, 1.0, None),
    "Elu": (1, 1.0, None),
    "Affine": (2, 1.0, 0.0),
    "ScaledTanh": (2, 1.0, 1.0),
}


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def apply(name: str, x: np.ndarray, alpha: float | None, beta: float | None) -> np.ndarray:
    if name == "Sigmoid":
        return _sigmoid(x)
    if name == "Tanh":
        return np.tanh(x)
    if name == "Relu":
        return np.maximum(x, 0)
    if name == "Softsign":
        return x / (1 + np.abs(x))
    if name == "Softplus":
        return np.log1p(np.exp(x))
    if name == "HardSigmoid":
        return np.clip(alpha * x + beta, 0, 1)
    if name == "LeakyRelu":
        return np.where(x >= 0, x, alpha * x)
    if name == "ThresholdedRelu":
        return np.where(x > alpha, x, 0)
    if name == "Elu":
        return np.where(x >= 0, x, alpha * (np.exp(x) - 1))
    if name == "Affine":
        return alpha * x + beta
    if name == "ScaledTanh":
        return alpha * np.tanh(beta * x)
    raise UnsupportedModelError(f"activation {name!r} is not supported")


def resolve(names: list[str], alphas: list[float], betas: list[float], where: str):
    """Pair each activation name with its (alpha, beta), consuming the lists in order."""
    out = []
    ai = bi = 0
    for name in names:
        if name not in _PARAMS:
            raise UnsupportedModelError(f"{where}: activation {name!r} is not supported")
        n, da, db = _PARAMS[name]
        a, b = da, db
        if n >= 1:
            if ai < len(alphas):
                a = alphas[ai]
            ai += 1
        if n >= 2:
            if bi < len(betas):
                b = betas[bi]
            bi += 1
        out.append((name, a, b))
    return out
