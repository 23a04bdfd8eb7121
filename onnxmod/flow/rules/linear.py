"""The op table's linear rules: ops that read the units through a constant weight (its input rows
or channels are the site; the flow ends there), and quantization (a removed unit reads as zero
through its zero point)."""
from __future__ import annotations

import numpy as np

from ...quantized import stored
from ..engine import Widen
from ..sites import Site
from ..units import Units, aligned, normalize_null
from .common import along, only_first, rule


# ---- reading units linearly --------------------------------------------------------------------
@rule("linear", "MatMul", "MatMulInteger")
def _matmul(f, node, ins):
    ua, ub = ins[0], ins[1]
    if any(u is not None for u in ins[2:]) or (ua is not None and ub is not None):
        raise Widen("it multiplies units by units")
    if ua is not None:
        return _matmul_left(f, node, ua)
    return _matmul_right(f, node, ub)


def _weight(f, node, index, axis_of, u: Units):
    """Record the weight site of ``node.inputs[index]`` (a constant, or integers a
    ``DequantizeLinear`` dequantizes: sliced in their integer form, per-axis scales with them);
    ``axis_of(ndim)``: the weight's axis that the units index."""
    w = stored(node, index)
    if w is None:
        raise Widen(f"it reads the units through {node.inputs[index].name!r}, a weight computed at run time")
    axis = axis_of(w.raw.ndim)
    if w.dq is not None and u.has_null():
        raise Widen("a removed unit's non-zero value cannot be folded into a quantized layer's bias")
    labels = along(u.lab, u.axis)
    f.sites.append(Site("weight", w.node, w.index, axis, labels, null=_null_vector(u) if w.dq is None else None))
    if w.dq is not None and w.axis() == axis:
        for i in (1, 2):
            if len(w.dq.inputs) > i and w.dq.inputs[i].name:
                f.sites.append(Site("param", w.dq, i, 0, labels, units=Units(labels, 0)))
    return w


def _matmul_left(f, node, u):
    contracted = u.rank - 1
    if node.op == "MatMulInteger":
        zp = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        if u.has_null() or (u.zero_point is not None and zp is not u.zero_point) or \
                (u.zero_point is None and zp is not None):
            raise Widen("a removed unit would not read as zero in its integer product")
    if u.axis == contracted:
        if u.rows():
            raise Widen("it reads units that differ from row to row through one weight")
        _weight(f, node, 1, lambda nd: max(nd - 2, 0), u)
        return [None]
    if u.zero_point is not None or u.lab.shape[contracted] > 1:
        raise Widen("it contracts an axis that holds units")
    if u.has_null():
        raise Widen("a weighted sum over the steps would make a removed unit's value depend on the data")
    v = _aligned_with(f, node.inputs[1], u)
    shape = list(v.lab.shape)
    shape[-1] = 1
    return [Units(v.lab.reshape(shape), v.axis, None)]


def _matmul_right(f, node, u):
    if u.zero_point is not None:
        raise Widen("a quantized tensor read as the right operand")
    if u.rank >= 2 and u.axis == u.rank - 2:
        if u.rows() or u.has_null():
            raise Widen("it reads units that differ from row to row through one weight")
        _weight(f, node, 0, lambda nd: nd - 1, u.with_(null=None))
        return [None]
    if u.rank < 2 or u.lab.shape[u.rank - 2] > 1:
        raise Widen("it contracts an axis that holds units")
    if u.has_null():
        raise Widen("a weighted sum over the steps would make a removed unit's value depend on the data")
    v = _aligned_with(f, node.inputs[0], u)
    return [Units(v.lab, v.axis, None)]


def _aligned_with(f, other, u):
    """``u`` aligned to the rank a product with ``other`` broadcasts to."""
    r = f.rank(other)
    if r is None:
        raise Widen("the rank of its other operand is unknown")
    return aligned(u, max(u.rank, r))


def _null_vector(u: Units):
    return None if not u.has_null() else along(u.null, u.axis).astype(np.float64)


@rule("linear", "Gemm")
def _gemm(f, node, ins):
    u = ins[0]
    if u is None or any(v is not None for v in ins[1:]):
        raise Widen("it reads units as a weight or a bias")
    contracted = 0 if int(node.attrs.get("transA", 0)) else 1
    if u.axis != contracted or u.rows():
        raise Widen("it reads the units along an axis it does not contract")
    _weight(f, node, 1, lambda nd: 1 if int(node.attrs.get("transB", 0)) else 0, u)
    return [None]


@rule("linear", "Conv", "ConvTranspose")
def _conv(f, node, ins):
    u = ins[0]
    if u is None or any(v is not None for v in ins[1:]):
        raise Widen("it reads units as a kernel or a bias")
    if u.axis != 1 or u.rows():
        raise Widen("it convolves along the units' axis")
    if u.has_null():
        raise Widen("a convolution of a removed unit's non-zero value depends on the borders")
    g = int(node.attrs.get("group", 1))
    if g == 1:
        _weight(f, node, 1, lambda nd: 1 if node.op == "Conv" else 0, u)
        return [None]
    w = stored(node, 1)
    if w is None or w.dq is not None:
        raise Widen("a grouped convolution's kernel is computed or quantized")
    w = w.raw
    if node.op == "Conv" and g == u.size and w.shape[0] == g:  # depthwise: each unit its own channel
        for i in (1, 2):
            if len(node.inputs) > i and node.inputs[i].name:
                f.sites.append(Site("param", node, i, 0, along(u.lab, 1), units=Units(along(u.lab, 1), 0)))
        null = None
        if len(node.inputs) > 2 and node.inputs[2].name:
            shape = [1] * u.rank
            shape[1] = u.size
            null = normalize_null(u.lab, np.asarray(node.inputs[2].values, np.float64).reshape(shape))
        return [u.with_(null=null)]
    raise Widen(f"a grouped convolution ({g} groups) over the units")


# ---- quantization ------------------------------------------------------------------------------
@rule("per-unit", "DynamicQuantizeLinear")
def _dynamic_quantize(f, node, ins):
    u = ins[0]
    if u.has_null():
        raise Widen("quantizing a removed unit's non-zero value would change the range")
    # the range always holds 0, so units that output 0 change neither the scale nor the zero point
    return [Units(u.lab, u.axis, None, node.outputs[2]), None, None]


@rule("per-unit", "QuantizeLinear", "DequantizeLinear")
def _quantize(f, node, ins):
    u = only_first(ins, "a scale")
    scale = f.const(node.inputs[1])
    zp = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    if scale is None or scale.size != 1 or (zp is not None and f.const(zp) is None):
        raise Widen("its scale is per axis or computed")
    if u.has_null():
        raise Widen("a removed unit's non-zero value quantized")
    if node.op == "QuantizeLinear":
        return [Units(u.lab, u.axis, None, zp if zp is not None else "zero")]
    if u.zero_point is None:
        raise Widen("it dequantizes units that are not quantized")
    zero = isinstance(u.zero_point, str)
    same = (zero and (zp is None or not np.any(f.const(zp)))) or zp is u.zero_point or (
        zp is not None and not isinstance(u.zero_point, str) and f.const(u.zero_point) is not None
        and np.array_equal(f.const(u.zero_point), f.const(zp)))
    if not same:
        raise Widen("it dequantizes with another zero point than it was quantized with")
    return [Units(u.lab, u.axis, None)]
