"""The op table: what every ONNX op does to the units it reads, and the rule that follows them.

Each op type is in one category (``CATEGORY``):

* ``layout`` — moves positions without computing (``Transpose``, ``Reshape``, ``Concat``, ``Slice``,
  ``Gather`` …): the units move with them; a size literal on the units' axis is a site;
* ``per-unit`` — computes each unit's positions on their own (element-wise ops with broadcasting,
  reductions, softmax and cumulative sums over other axes, pooling, ``BatchNormalization``, a
  ``MatMul`` whose contracted axis is not the units'): the units pass, their constant operands are
  sliced with them, and what a removed unit holds after the op (its *null*) is evaluated;
* ``linear`` — reads the units as input features or channels through a constant (``MatMul``,
  ``Gemm``, ``Conv``, ``ConvTranspose``, ``MatMulInteger``): the weight's input rows are the site and
  the flow ends;
* ``mixes`` — combines different units non-linearly (``LayerNormalization`` over them, a softmax
  or reduction over the units' axis): the flow re-widens before it (exact: the op sees what it
  sees in the model with those units at 0);
* ``shape`` — reads only sizes (``Shape``, ``Size``).

A rule is ``rule(flow, node, ins) -> [Units | None per output]``; it raises ``Widen`` when it cannot
follow exactly. An op not in the table is read at full width, never guessed. The same table
answers for the cell's own flow (``recurrence/cellflow.py``: ``category``).
"""
from __future__ import annotations

import numpy as np

from . import values
from .dims import groups, literal, reshape_target
from .engine import Widen
from .sites import Site
from .units import Units, aligned, compress, normalize_null
from ..quantized import stored

CATEGORY: dict[str, str] = {}
RULES: dict = {}


def rule(category: str, *ops: str):
    def register(fn):
        for op in ops:
            CATEGORY[op] = category
            RULES[op] = fn
        return fn
    return register


def category(op: str) -> str | None:
    """``layout``, ``per-unit``, ``linear``, ``mixes``, ``shape``, or None for an op not in the table."""
    return CATEGORY.get(op)


def rule_for(node):
    return RULES.get(node.op, _unknown)


def _unknown(f, node, ins):
    raise Widen(f"{node.op} is not in onnxmod's op table")


def _only_first(ins, what="a shape or an index"):
    if any(u is not None for u in ins[1:]):
        raise Widen(f"it reads units as {what}")
    return ins[0]


def _along(lab: np.ndarray, axis: int) -> np.ndarray:
    """The labels along ``axis`` (the first row when others vary)."""
    return np.moveaxis(lab, axis, -1).reshape(-1, lab.shape[axis])[0]


# ---- per unit: element-wise --------------------------------------------------------------------
@rule("per-unit", *values.UNARY, "Clip", "Not", "IsNaN", "IsInf")
def _unary(f, node, ins):
    u = _only_first(ins, "a bound")
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


_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "And", "Or", "Xor",
                "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Mod", "BitShift")


@rule("per-unit", *_ELEMENTWISE)
def _elementwise(f, node, ins):
    ranks = [u.rank if u is not None else f.rank(t) for t, u in zip(node.inputs, ins)]
    if any(r is None for r in ranks):
        raise Widen("the rank of an operand is unknown")
    rank = max(ranks)
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
            f.sites.append(Site("param", node, i, base.axis - (rank - c.ndim), _along(lab, base.axis),
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
    ranks = [u.rank if u is not None else f.rank(t) for t, u in zip(node.inputs, ins)]
    if any(r is None for r in ranks):
        raise Widen("the rank of an operand is unknown")
    rank = max(ranks)
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
    u = _only_first(ins, "axes")
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
    return [_drop_axes(u, axes, int(node.attrs.get("keepdims", 1)))]


def _drop_axes(u: Units, axes, keepdims: int) -> Units:
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
    return [_drop_axes(u.with_(null=None), [axis], int(node.attrs.get("keepdims", 1)))]


@rule("per-unit", "Softmax", "LogSoftmax", "Hardmax", "CumSum", "LpNormalization")
def _along_other_axis(f, node, ins):
    u = _only_first(ins, "an axis")
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
    u = _only_first(ins, "k")
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


@rule("per-unit", "BatchNormalization", "InstanceNormalization")
def _batchnorm(f, node, ins):
    u = _only_first(ins, "a statistic")
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
        f.sites.append(Site("param", node, i, 0, _along(u.lab, 1), units=Units(_along(u.lab, 1), 0)))
    x = np.zeros(u.size) if u.null is None else _along(u.null, 1)
    if node.op == "InstanceNormalization":
        y = bias  # a constant channel normalizes to 0, then the bias
    else:
        y = scale * (x - mean) / np.sqrt(var + eps) + bias
    shape = [1] * u.rank
    shape[1] = u.size
    null = normalize_null(u.lab, y.reshape(shape))
    return [u.with_(null=null)] + [None] * (len(node.outputs) - 1)


@rule("mixes", "LayerNormalization", "GroupNormalization", "MeanVarianceNormalization", "RMSNormalization")
def _norm(f, node, ins):
    raise Widen(f"{node.op} normalizes over the units")


# ---- layout ------------------------------------------------------------------------------------
@rule("shape", "Shape", "Size")
def _shape(f, node, ins):
    return [None]


@rule("layout", "Transpose")
def _transpose(f, node, ins):
    u = ins[0]
    perm = list(node.attrs.get("perm", list(range(u.rank))[::-1]))
    null = None if u.null is None else u.null.transpose(perm)
    return [Units(u.lab.transpose(perm), perm.index(u.axis), null, u.zero_point)]


@rule("layout", "Squeeze")
def _squeeze(f, node, ins):
    u = _only_first(ins, "axes")
    axes = f.axes(node, 1, u.rank)
    if axes is None:
        shape = node.inputs[0].shape
        if shape is None or len(shape) != u.rank:
            raise Widen("which axes it squeezes is unknown")
        axes = [a for a, s in enumerate(shape) if s == 1]
    if any(u.lab.shape[a] > 1 for a in axes):
        raise Widen("it squeezes an axis that holds units")
    return [_drop_axes(u, axes, 0)]


@rule("layout", "Unsqueeze")
def _unsqueeze(f, node, ins):
    u = _only_first(ins, "axes")
    n = len(node.attrs["axes"]) if "axes" in node.attrs else (
        f.const(node.inputs[1]).size if f.const(node.inputs[1]) is not None else None)
    if n is None:
        raise Widen("its axes are computed")
    axes = f.axes(node, 1, u.rank + n)
    lab, null, axis = u.lab, u.null, u.axis
    for a in axes:
        lab = np.expand_dims(lab, a)
        null = None if null is None else np.expand_dims(null, a)
        if a <= axis:
            axis += 1
    return [Units(lab, axis, null, u.zero_point)]


@rule("layout", "Reshape", "Flatten")
def _reshape(f, node, ins):
    u = _only_first(ins)
    data = node.inputs[0]
    try:
        outs = [_reshaped(f, node, u, f.concrete(data, which), lambda s, w=which: _reshape_out(f, node, s, w))
                for which in (0, 1)]
    except Widen:  # sizes static shapes cannot tell: run the graph and read them
        probed = f.probed(data, node.outputs[0])
        if probed is None:
            raise
        (ia, ib), (oa, ob) = probed
        outs = [_reshaped(f, node, u, ia, lambda s: oa), _reshaped(f, node, u, ib, lambda s: ob)]
    (_, _, lab_a, _), (in_shape, out_shape, lab, null) = outs
    if lab_a.shape != lab.shape or not np.array_equal(lab_a, lab):
        raise Widen("it merges the units with an axis of dynamic size")
    axis = _new_axis(f, u, lab, in_shape, out_shape)
    if node.op == "Reshape":
        _size_literal(f, node, u, lab, axis)
    return [Units(lab, axis, normalize_null(lab, null), u.zero_point)]


def _reshaped(f, node, u, in_shape, out_of):
    if in_shape is None or len(in_shape) != u.rank:
        raise Widen("its input shape is unknown")
    in_shape = list(in_shape)
    for a, s in enumerate(u.lab.shape):
        if s > 1:
            if in_shape[a] != s and not isinstance(in_shape[a], int):
                raise Widen("its input shape is unknown")
            in_shape[a] = s
    out_shape = out_of(in_shape)
    if out_shape is None or int(np.prod(in_shape)) != int(np.prod(out_shape)):
        raise Widen("its output shape cannot be told")
    if int(np.prod(in_shape)) > 10 ** 7:
        raise Widen(f"its input shape {in_shape} is too large to follow")
    full = np.broadcast_to(u.lab, in_shape).reshape(out_shape)
    nfull = None if u.null is None else np.broadcast_to(u.null, in_shape).reshape(out_shape)
    return (in_shape, list(out_shape), *compress(full, nfull))


def _reshape_out(f, node, in_shape, which):
    if node.op == "Flatten":
        ax = int(node.attrs.get("axis", 1)) % max(len(in_shape), 1)
        return [int(np.prod(in_shape[:ax])), int(np.prod(in_shape[ax:]))]
    target = f.const(node.inputs[1])
    if target is not None:
        return reshape_target(in_shape, target, int(node.attrs.get("allowzero", 0)))
    return f.concrete(node.outputs[0], which)


def _new_axis(f, u, lab, in_shape, out_shape) -> int:
    grouped = groups(in_shape, out_shape)
    if grouped is None:
        raise Widen("its reshape cannot be followed")
    for gin, gout in grouped:
        if u.axis in gin:
            break
    else:  # pragma: no cover - every axis is in a group
        raise Widen("its reshape cannot be followed")
    if len(gout) == 1:
        return gout[0]
    if len(gin) == 1 and len(gout) > 1:  # the units' axis split into rows and units
        cands = [o for o in gout if lab.shape[o] > 1]
        if not cands:
            raise Widen("its reshape cannot be followed")
        axis = cands[-1]
        rows = np.moveaxis(lab, axis, -1).reshape(-1, lab.shape[axis])
        for r in rows:
            classes = {f.row_class(int(i)) for i in r if i >= 0}
            if len(classes) > 1:
                raise Widen("it splits the units' axis across the units of one direction")
        f.group(lab)
        return axis
    raise Widen("it splits and merges the units' axis at once")


def _size_literal(f, node, u, lab, axis) -> None:
    """Record the literal that sizes the units' axis in a reshape target (or check it needs none)."""
    target = f.const(node.inputs[1])
    if target is not None:
        v = int(target.reshape(-1)[axis])
        if v > 0:
            f.sites.append(Site("shape", node, 1, axis, _along(lab, axis)))
        elif v == 0 and not (axis == u.axis and u.lab.shape[axis] == lab.shape[axis]):
            raise Widen("its target copies another axis's size onto the units' axis")
        return
    src = literal(node.inputs[1], axis, lambda t, a: (f.units.get(id(t)) is not None
                                                       and f.units[id(t)].axis == a))
    if src is None:
        raise Widen("the size of the units' axis in its target is computed from elsewhere")
    if src != "auto":
        _, n, i, k = src
        value = int(np.asarray(n.inputs[i].values).reshape(-1)[k])
        if value > 0:
            f.sites.append(Site("shape", n, i, k, _along(lab, axis)))


@rule("layout", "Expand")
def _expand(f, node, ins):
    u = _only_first(ins)
    shp_t = node.inputs[1]
    shp = f.const(shp_t)
    n = shp.size if shp is not None else (shp_t.shape[0] if shp_t.shape else None)
    if not isinstance(n, (int, np.integer)):
        raise Widen("its target shape is unknown")
    rank = max(u.rank, int(n))
    v = aligned(u, rank)
    k = v.axis - (rank - int(n))
    if k >= 0:
        if shp is not None:
            size = int(shp.reshape(-1)[k])
            if size not in (1, v.size):
                raise Widen("it expands the units' axis")
            if size == v.size and size > 1:
                f.sites.append(Site("shape", node, 1, k, _along(v.lab, v.axis)))
        else:
            src = literal(shp_t, k, lambda t, a: f.units.get(id(t)) is not None and f.units[id(t)].axis == a)
            if src is None:
                raise Widen("the size of the units' axis in its target is computed from elsewhere")
            if src != "auto":
                _, nd, i, j = src
                if int(np.asarray(nd.inputs[i].values).reshape(-1)[j]) > 1:
                    f.sites.append(Site("shape", nd, i, j, _along(v.lab, v.axis)))
    return [v]


@rule("layout", "Tile")
def _tile(f, node, ins):
    u = _only_first(ins)
    reps = f.const(node.inputs[1])
    if reps is None:
        raise Widen("its repeats are computed")
    if any(int(reps.reshape(-1)[a]) != 1 for a in u.varying()):
        raise Widen("it repeats along the units' axis")
    return [u]


@rule("layout", "Concat")
def _concat(f, node, ins):
    ranks = [u.rank if u is not None else f.rank(t) for t, u in zip(node.inputs, ins)]
    rank = next(r for r, u in zip(ranks, ins) if u is not None)
    axis = int(node.attrs.get("axis", 0)) % rank
    labelled = [u for u in ins if u is not None]
    ua = labelled[0].axis
    if any(u.axis != ua or u.rank != rank for u in labelled):
        raise Widen("it joins tensors whose units lie along different axes")
    parts, nulls = [], []
    for t, u in zip(node.inputs, ins):
        if u is None:
            if axis != ua:
                raise Widen(f"it stacks the units with {t.name!r}, computed elsewhere, along axis {axis}")
            size = _static_size(f, t, axis)
            if size is None:
                raise Widen(f"the width of {t.name!r}, joined to the units, is unknown")
            shape = [1] * rank
            shape[axis] = size
            parts.append(np.full(shape, -1, dtype=np.int64))
            nulls.append(np.zeros(shape))
        else:
            parts.append(u.lab)
            nulls.append(np.zeros(u.lab.shape) if u.null is None else u.null)
    common = [max(p.shape[a] for p in parts) if a != axis else None for a in range(rank)]
    bl = [np.broadcast_to(p, [p.shape[a] if a == axis else common[a] for a in range(rank)]) for p in parts]
    bn = [np.broadcast_to(n, b.shape) for n, b in zip(nulls, bl)]
    lab, null = np.concatenate(bl, axis=axis), np.concatenate(bn, axis=axis)
    lab, null = compress(lab, null)
    if axis != ua:
        f.group(lab)
    return [Units(lab, ua, normalize_null(lab, null), labelled[0].zero_point)]


def _static_size(f, t, axis):
    c = f.const(t)
    if c is not None:
        return int(c.shape[axis]) if c.ndim > axis else None
    if t.shape is not None and len(t.shape) > axis and isinstance(t.shape[axis], (int, np.integer)):
        return int(t.shape[axis])
    return None


@rule("layout", "Split")
def _split(f, node, ins):
    u = _only_first(ins, "split sizes")
    axis = int(node.attrs.get("axis", 0)) % u.rank
    n = len(node.outputs)
    if u.lab.shape[axis] == 1:
        return [u] * n
    sizes = node.attrs.get("split")
    index = -1
    if sizes is None and len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].name:
        sizes = f.const(node.inputs[1])
        index = 1
        if sizes is None:
            raise Widen("its sizes are computed")
    size = u.lab.shape[axis]
    if sizes is None:
        if size % n:
            raise Widen("it splits the units unevenly")
        sizes = [size // n] * n
    sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
    if axis == u.axis:
        if u.rows():
            raise Widen("it splits units that differ from row to row")
        f.sites.append(Site("split", node, index, axis, _along(u.lab, axis), sizes=sizes))
    bounds = np.cumsum([0] + sizes)
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = np.take(u.lab, np.arange(a, b), axis=axis)
        pn = None if u.null is None else np.take(u.null, np.arange(a, b), axis=axis)
        part, pn = compress(part, pn)
        outs.append(Units(part, u.axis, normalize_null(part, pn), u.zero_point))
    return outs


def _positions(size, start, end, step):
    return np.arange(size)[slice(int(start), int(end), int(step))]


@rule("layout", "Slice")
def _slice(f, node, ins):
    u = _only_first(ins, "slice bounds")
    n_in = len(node.inputs)
    if n_in == 1:  # opset < 10: attributes
        starts, ends = node.attrs.get("starts"), node.attrs.get("ends")
        axes = node.attrs.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        get = [f.const(node.inputs[i]) if n_in > i and node.inputs[i] is not None and node.inputs[i].name
               else None for i in range(1, 5)]
        starts, ends = get[0], get[1]
        axes = get[2] if get[2] is not None else (None if n_in > 3 and node.inputs[3].name else "all")
        steps = get[3]
        if axes is None:
            raise Widen("its axes are computed")
    if isinstance(axes, str):
        if starts is None:
            raise Widen("its bounds are computed")
        axes = list(range(len(np.atleast_1d(starts))))
    axes = [int(a) % u.rank for a in np.atleast_1d(axes)]
    lab, null = u.lab, u.null
    for k, a in enumerate(axes):
        if lab.shape[a] == 1:
            continue
        if starts is None or ends is None or (n_in > 4 and node.inputs[4].name and steps is None):
            raise Widen("its bounds along the units are computed")
        st = 1 if steps is None else int(np.atleast_1d(steps)[k])
        pos = _positions(lab.shape[a], np.atleast_1d(starts)[k], np.atleast_1d(ends)[k], st)
        if a == u.axis:
            if u.rows():
                raise Widen("it selects units that differ from row to row")
            site = Site("select", node, 0, a, _along(lab, a), positions=pos.astype(np.int64))
            f.sites.append(site)
        lab = np.take(lab, pos, axis=a)
        null = None if null is None else np.take(null, pos, axis=a)
    return [Units(lab, u.axis, null, u.zero_point)]


@rule("layout", "Gather")
def _gather(f, node, ins):
    u = _only_first(ins, "indices")
    axis = int(node.attrs.get("axis", 0)) % u.rank
    idx = f.const(node.inputs[1])
    if u.lab.shape[axis] > 1:
        if idx is None or idx.ndim > 1:
            raise Widen("it picks units by computed indices")
        pos = np.atleast_1d(idx).astype(np.int64) % u.lab.shape[axis]
        if axis == u.axis:
            if u.rows():
                raise Widen("it selects units that differ from row to row")
            site = Site("select", node, 0, axis, _along(u.lab, axis), positions=pos, squeeze=idx.ndim == 0)
            f.sites.append(site)
        lab = np.take(u.lab, pos, axis=axis)
        null = None if u.null is None else np.take(u.null, pos, axis=axis)
        new_axis = u.axis
        if idx.ndim == 0:
            if axis == u.axis:
                raise Widen("it picks a single unit")
            lab = lab.take(0, axis=axis)
            null = None if null is None else null.take(0, axis=axis)
            new_axis -= axis < u.axis
        return [Units(lab, new_axis, null, u.zero_point)]
    q = idx.ndim if idx is not None else f.rank(node.inputs[1])
    if q is None:
        raise Widen("the rank of its indices is unknown")
    shape = u.lab.shape[:axis] + (1,) * q + u.lab.shape[axis + 1:]
    lab = u.lab.reshape(shape)
    null = None if u.null is None else u.null.reshape(shape)
    return [Units(lab, u.axis + (q - 1 if u.axis > axis else 0), null, u.zero_point)]


@rule("layout", "GatherND")
def _gather_nd(f, node, ins):
    u = _only_first(ins, "indices")
    b = int(node.attrs.get("batch_dims", 0))
    it = node.inputs[1]
    c = f.const(it)
    shape = c.shape if c is not None else it.shape
    if shape is None or not isinstance(shape[-1], (int, np.integer)):
        raise Widen("the depth of its indices is unknown")
    k, q = int(shape[-1]), len(shape)
    if any(u.lab.shape[a] > 1 for a in range(b, b + k)) or u.axis < b + k:
        raise Widen("it picks among the units")
    new = u.lab.shape[:b] + (1,) * (q - 1 - b) + u.lab.shape[b + k:]
    null = None if u.null is None else u.null.reshape(new)
    return [Units(u.lab.reshape(new), u.axis - k + (q - 1 - b), null, u.zero_point)]


@rule("layout", "ReverseSequence")
def _reverse_sequence(f, node, ins):
    u = _only_first(ins, "lengths")
    for name, default in (("batch_axis", 1), ("time_axis", 0)):
        if u.lab.shape[int(node.attrs.get(name, default)) % u.rank] > 1:
            raise Widen("it reverses along the units")
    return [u]


@rule("layout", "Pad")
def _pad(f, node, ins):
    u = _only_first(ins, "pads")
    pads = f.const(node.inputs[1]) if len(node.inputs) > 1 else np.asarray(node.attrs.get("pads", []))
    if pads is None:
        raise Widen("its pads are computed")
    pads = pads.reshape(-1)
    axes = f.axes(node, 3, u.rank, default=list(range(u.rank)))
    n = len(axes)
    for k, a in enumerate(axes):
        if u.lab.shape[a] > 1 and (int(pads[k]) or int(pads[k + n])):
            raise Widen("it pads the units' axis")
    if u.has_null() and np.any(pads):
        raise Widen("padding beside a removed unit's non-zero value")
    return [u]


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
    labels = _along(u.lab, u.axis)
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
    rb = f.rank(node.inputs[1])
    if rb is None:
        raise Widen("the rank of its other operand is unknown")
    rank = max(u.rank, rb)
    v = aligned(u, rank)
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
    ra = f.rank(node.inputs[0])
    if ra is None:
        raise Widen("the rank of its other operand is unknown")
    rank = max(u.rank, ra)
    v = aligned(u, rank)
    return [Units(v.lab, v.axis, None)]


def _null_vector(u: Units):
    return None if not u.has_null() else _along(u.null, u.axis).astype(np.float64)


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
                f.sites.append(Site("param", node, i, 0, _along(u.lab, 1), units=Units(_along(u.lab, 1), 0)))
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
    u = _only_first(ins, "a scale")
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


# ---- control flow and recurrences the front-ends left: read at full width ----------------------
for _op in ("Loop", "Scan", "If", "LSTM", "GRU", "RNN", "Einsum", "NonZero", "Compress", "GatherElements",
            "ScatterElements", "ScatterND", "Resize", "SpaceToDepth", "DepthToSpace"):
    CATEGORY.setdefault(_op, "mixes")
