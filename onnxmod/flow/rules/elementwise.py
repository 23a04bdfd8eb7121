"""The op table's per-unit rules: element-wise ops with broadcasting (and the value a removed
unit holds after them), reductions, softmaxes and cumulative sums over other axes, pooling, batch
normalization; norms over the units are read at full width."""
from __future__ import annotations

import numpy as np

from ... import optable
from .. import values
from ..engine import Widen
from ..sites import Site
from ..units import Units, aligned, normalize_null
from .common import along, only_first, rule

# ---- per unit: element-wise --------------------------------------------------------------------
COPIES = ("Identity", "Dropout", "Cast")  # the one op table's plumbing that only copies values


@rule("layout", *COPIES)
def _copy(f, node, ins):
    return _unary(f, node, ins)


@rule("per-unit", *(op for op in values.UNARY if op not in COPIES), "Clip", "Not", "IsNaN", "IsInf")
def _unary(f, node, ins):
    u = only_first(ins, "a bound")
    x = np.zeros(u.lab.shape) if u.null is None else u.null
    if node.op == "Clip" and len(node.inputs) > 1:
        bounds = []
        for t in node.inputs[1:3]:
            if t is None or not t.name:
                bounds.append(None)
                continue
            c = f.const(t)
            if c is None:
                raise Widen("its bounds are computed")
            bounds.append(float(c.reshape(-1)[0]))
        lo, hi = (bounds + [None, None])[:2]
        y = np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)
    elif node.op in ("Not", "IsNaN", "IsInf"):
        y = np.zeros_like(x) if node.op != "Not" else np.ones_like(x)
    else:
        y = values.unary(node, x)
        if y is None:
            raise Widen(f"onnxmod does not know what {node.op} makes of a removed unit")
    return [u.with_(null=normalize_null(u.lab, y))] + [None] * (len(node.outputs) - 1)


# broadcasting element-wise ops (the shared table's), but for Where and Clip, which have rules of their own
_ELEMENTWISE = tuple(sorted(optable.NARY - {"Where", "Clip"}))


def _max_rank(f, node, ins) -> int:
    """The rank the operands broadcast to; ``Widen`` when one's rank is unknown."""
    ranks = [u.rank if u is not None else f.rank(t) for t, u in zip(node.inputs, ins)]
    if any(r is None for r in ranks):
        raise Widen("the rank of an operand is unknown")
    return max(ranks)


@rule("per-unit", *_ELEMENTWISE)
def _elementwise(f, node, ins):
    rank = _max_rank(f, node, ins)
    base, lab = _combined(f, node, ins, rank)
    vals = []
    for i, t in enumerate(node.inputs):
        vals.append(_operand_null(f, node, i, t, ins[i], base, lab, rank))
    if any(v is None for v in vals):  # an operand computed elsewhere: only a zero times it stays zero
        absorbs = values.ZERO_ABSORBING.get(node.op, set())
        if any(u is not None and (u.has_null() or i not in absorbs) for i, u in enumerate(ins)):
            raise Widen(f"{node.op} with a tensor computed elsewhere would make a removed unit's value there "
                        f"depend on the data")
        null = None
    else:
        null = vals[0]
        for v in vals[1:]:
            null = values.binary("Add" if node.op in ("Sum", "Mean") else node.op, null, v) \
                if node.op not in _BOOLEAN else np.zeros(np.broadcast_shapes(null.shape, v.shape))
            if null is None:
                raise Widen(f"onnxmod does not know what {node.op} makes of a removed unit")
        if node.op == "Mean":
            null = null / len(vals)
        null = _label_shaped(lab, null)
    return [Units(lab, base.axis, normalize_null(lab, null), base.zero_point)]


_BOOLEAN = {"And", "Or", "Xor", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"}


def _combined(f, node, ins, rank):
    """The unit-bearing operands aligned to ``rank``; they must label every position alike."""
    labelled = [aligned(u, rank) for u in ins if u is not None]
    base = labelled[0]
    lab = base.lab
    for v in labelled[1:]:
        if v.axis != base.axis:
            raise Widen("it combines units that lie along different axes")
        shape = np.broadcast_shapes(lab.shape, v.lab.shape)
        a, b = np.broadcast_to(lab, shape), np.broadcast_to(v.lab, shape)
        if not np.array_equal(a, b):
            raise Widen("it combines different units position by position")
        lab = np.ascontiguousarray(a)
    return base, lab


def _operand_null(f, node, i, t, u, base, lab, rank):
    """What operand ``i`` holds at a removed unit's positions: its null, its constant value (a
    constant that varies along the units' axis is a site), or None when it is computed elsewhere."""
    if u is not None:
        au = aligned(u, rank)
        return np.zeros(au.lab.shape) if au.null is None else au.null
    if t is None or not t.name:
        return np.zeros(1)
    c = f.const(t)
    if c is not None:
        c_al = c.reshape((1,) * (rank - c.ndim) + c.shape).astype(np.float64)
        if c_al.shape[base.axis] > 1:
            if c_al.shape[base.axis] != lab.shape[base.axis]:
                raise Widen("a constant operand has another width than the units")
            f.sites.append(Site("param", node, i, base.axis - (rank - c.ndim), along(lab, base.axis),
                                units=Units(lab, base.axis)))
        return c_al
    shape = t.shape
    if shape is None or len(shape) > rank:
        raise Widen(f"it combines the units with {t.name!r}, whose shape is unknown")
    ext = ((1,) * (rank - len(shape)) + tuple(shape))[base.axis]
    if ext != 1:
        raise Widen(f"it combines the units with {t.name!r}, computed elsewhere, position by position")
    return None


def _label_shaped(lab, null):
    """``null`` broadcast to ``lab``'s shape; a null that varies where the labels do not (along
    time, say) depends on more than the unit: not followed."""
    if null is None:
        return None
    null = np.asarray(null, dtype=np.float64)
    target = np.broadcast_shapes(null.shape, lab.shape)
    if len(target) != lab.ndim:
        raise Widen("a removed unit's value there has another rank")
    full = np.broadcast_to(null, target)
    for a in range(lab.ndim):
        if lab.shape[a] == 1 and full.shape[a] > 1:
            if not np.all(full == full.take([0], axis=a)):
                raise Widen(f"a removed unit's value there would vary along axis {a}")
            full = full.take([0], axis=a)
    return np.ascontiguousarray(full)


@rule("per-unit", "Where")
def _where(f, node, ins):
    rank = _max_rank(f, node, ins)
    base, lab = _combined(f, node, ins, rank)
    vals = [_operand_null(f, node, i, t, ins[i], base, lab, rank) for i, t in enumerate(node.inputs)]
    cond, a, b = vals
    if a is None or b is None:
        raise Widen("a removed unit's value would be one computed elsewhere")
    if cond is None:
        a_, b_ = np.broadcast_arrays(a, b)
        if not np.array_equal(a_, b_):
            raise Widen("which value a removed unit takes would depend on the data")
        null = a_
    else:
        null = np.where(cond != 0, a, b)
    null = _label_shaped(lab, null)
    return [Units(lab, base.axis, normalize_null(lab, null))]


# ---- per unit: over other axes -----------------------------------------------------------------
_REDUCE = ("ReduceMax", "ReduceMin", "ReduceMean", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
_KEEP_CONSTANT = {"ReduceMax", "ReduceMin", "ReduceMean"}
_KEEP_ZERO = _KEEP_CONSTANT | {"ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare"}


@rule("per-unit", *_REDUCE)
def _reduce(f, node, ins):
    u = only_first(ins, "axes")
    axes = f.axes(node, 1, u.rank)
    if axes is None:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return [u]
        axes = list(range(u.rank))
    over = [a for a in axes if u.lab.shape[a] > 1]
    if over:
        raise Widen(f"it reduces over the units (axis {over[0]})")
    if node.op not in (_KEEP_CONSTANT if u.has_null() else _KEEP_ZERO):
        raise Widen(f"{node.op} over the steps would make a removed unit's value depend on their number")
    return [drop_axes(u, axes, int(node.attrs.get("keepdims", 1)))]


def drop_axes(u: Units, axes, keepdims: int) -> Units:
    if keepdims:
        return u
    keep = [a for a in range(u.rank) if a not in axes]
    lab = u.lab.reshape([u.lab.shape[a] for a in keep])
    null = None if u.null is None else u.null.reshape(lab.shape)
    return Units(lab, keep.index(u.axis), null, u.zero_point)


@rule("per-unit", "ArgMax", "ArgMin")
def _argmax(f, node, ins):
    u = ins[0]
    axis = int(node.attrs.get("axis", 0)) % u.rank
    if u.lab.shape[axis] > 1:
        raise Widen(f"it picks among the units (axis {axis})")
    return [drop_axes(u.with_(null=None), [axis], int(node.attrs.get("keepdims", 1)))]


@rule("per-unit", "Softmax", "LogSoftmax", "Hardmax", "CumSum", "LpNormalization")
def _along_other_axis(f, node, ins):
    u = only_first(ins, "an axis")
    if node.op == "CumSum":
        a = f.const(node.inputs[1])
        if a is None:
            raise Widen("its axis is computed")
        axis = int(a.reshape(-1)[0]) % u.rank
    else:
        axis = int(node.attrs.get("axis", -1 if node.op != "LpNormalization" else -1)) % u.rank
    if u.lab.shape[axis] > 1:
        raise Widen(f"{node.op} over the units (axis {axis}) mixes them")
    if node.op in ("CumSum", "LpNormalization") and not u.has_null():
        return [u]
    raise Widen(f"{node.op} over axis {axis} would make a removed unit's value depend on the data")


@rule("per-unit", "TopK")
def _topk(f, node, ins):
    u = only_first(ins, "k")
    axis = int(node.attrs.get("axis", -1)) % u.rank
    if u.lab.shape[axis] > 1:
        raise Widen(f"it picks among the units (axis {axis})")
    return [u, u.with_(null=None)]


@rule("per-unit", "GlobalMaxPool", "GlobalAveragePool", "GlobalLpPool", "MaxPool", "AveragePool", "LpPool")
def _pool(f, node, ins):
    u = ins[0]
    if u.rank < 3 or u.axis != 1 or u.rows():
        raise Widen("it pools over the units' axis")
    if u.has_null() and node.op not in ("GlobalMaxPool", "GlobalAveragePool", "MaxPool"):
        raise Widen("pooling would make a removed unit's value depend on the borders")
    return [u] + [None] * (len(node.outputs) - 1)


@rule("per-unit", "BatchNormalization")
def _batchnorm(f, node, ins):
    u = only_first(ins, "a statistic")
    if int(node.attrs.get("training_mode", 0)):
        raise Widen("batch normalization in training mode mixes the batch")
    n = 5 if node.op == "BatchNormalization" else 3
    params = [f.const(t) for t in node.inputs[1:n]]
    if any(p is None for p in params):
        raise Widen("its statistics are computed")
    eps = float(node.attrs.get("epsilon", 1e-5))
    if node.op == "BatchNormalization":
        scale, bias, mean, var = (p.astype(np.float64) for p in params)
        if u.lab.shape[1] == 1 and u.rank > 1:  # channels that are not units: the null must stay constant
            x = 0.0 if u.null is None else u.null
            y = scale.reshape(-1)[:, None] * 0  # shape check only
            del y
            if u.has_null() or np.any(bias - scale * mean / np.sqrt(var + eps)):
                raise Widen("normalizing other channels would give a removed unit a value that varies with them")
            del x
            return [u] + [None] * (len(node.outputs) - 1)
    else:
        scale, bias = (p.astype(np.float64) for p in params)
        mean, var = np.zeros_like(scale), np.zeros_like(scale)
        if u.lab.shape[1] == 1:
            raise Widen("instance normalization over the units")
    if u.rank < 2 or u.axis != 1 or u.rows():
        raise Widen("its channels are not the units")
    for i in range(1, n):
        f.sites.append(Site("param", node, i, 0, along(u.lab, 1), units=Units(along(u.lab, 1), 0)))
    x = np.zeros(u.size) if u.null is None else along(u.null, 1)
    if node.op == "InstanceNormalization":
        y = bias  # a constant channel normalizes to 0, then the bias
    else:
        y = scale * (x - mean) / np.sqrt(var + eps) + bias
    shape = [1] * u.rank
    shape[1] = u.size
    null = normalize_null(u.lab, y.reshape(shape))
    return [u.with_(null=null)] + [None] * (len(node.outputs) - 1)


@rule("mixes", "LayerNormalization", "GroupNormalization", "MeanVarianceNormalization", "RMSNormalization",
      "InstanceNormalization")
def _norm(f, node, ins):
    raise Widen(f"{node.op} normalizes over the units")

