"""The op table's layout rules: ops that move positions without computing — the units move with
them, and a literal that sizes the units' axis is a site."""
from __future__ import annotations

import numpy as np

from ..dims import groups, literal, reshape_target
from ..engine import Widen
from ..sites import Site
from ..units import Units, aligned, compress, normalize_null
from .common import along, only_first, rule
from .elementwise import drop_axes


# ---- layout ------------------------------------------------------------------------------------
@rule("shape", "Shape", "Size")
def _shape(f, node, ins):
    """Sizes only: the size of the units' axis is what removing units changes. The engine checks
    where it goes (``Flow._escaped_sizes``); a ``Shape`` whose size goes where the flow cannot follow
    reads the units at full width."""
    f.shape_reads.append((node, ins[0]))
    if id(node) in f.full_shapes:
        f.widen_input(node, 0, ins[0], "the size of the units' axis it reads is used where onnxmod cannot "
                                       "follow it")
    return [None]


@rule("layout", "Transpose")
def _transpose(f, node, ins):
    u = ins[0]
    perm = list(node.attrs.get("perm", list(range(u.rank))[::-1]))
    null = None if u.null is None else u.null.transpose(perm)
    return [Units(u.lab.transpose(perm), perm.index(u.axis), null, u.zero_point)]


@rule("layout", "Squeeze")
def _squeeze(f, node, ins):
    u = only_first(ins, "axes")
    axes = f.axes(node, 1, u.rank)
    if axes is None:
        shape = node.inputs[0].shape
        if shape is None or len(shape) != u.rank:
            raise Widen("which axes it squeezes is unknown")
        axes = [a for a, s in enumerate(shape) if s == 1]
    if any(u.lab.shape[a] > 1 for a in axes):
        raise Widen("it squeezes an axis that holds units")
    return [drop_axes(u, axes, 0)]


@rule("layout", "Unsqueeze")
def _unsqueeze(f, node, ins):
    u = only_first(ins, "axes")
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
    u = only_first(ins)
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
    found = next(((gin, gout) for gin, gout in grouped if u.axis in gin), None)
    if found is None:  # pragma: no cover - every axis is in a group
        raise Widen("its reshape cannot be followed")
    gin, gout = found
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
            f.sites.append(Site("shape", node, 1, axis, along(lab, axis)))
        elif v == 0 and not (axis == u.axis and u.lab.shape[axis] == lab.shape[axis]):
            raise Widen("its target copies another axis's size onto the units' axis")
        return
    src = literal(node.inputs[1], axis, f.follows_size)
    if src is None:
        raise Widen("the size of the units' axis in its target is computed from elsewhere")
    if src == "auto":
        f.auto_sizes.add((id(node), axis))
    else:
        _, n, i, k = src
        value = int(np.asarray(n.inputs[i].values).reshape(-1)[k])
        if value > 0:
            f.sites.append(Site("shape", n, i, k, along(lab, axis)))


@rule("layout", "Expand")
def _expand(f, node, ins):
    u = only_first(ins)
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
                f.sites.append(Site("shape", node, 1, k, along(v.lab, v.axis)))
        else:
            src = literal(shp_t, k, f.follows_size)
            if src is None:
                raise Widen("the size of the units' axis in its target is computed from elsewhere")
            if src == "auto":
                f.auto_sizes.add((id(node), k))
            else:
                _, nd, i, j = src
                if int(np.asarray(nd.inputs[i].values).reshape(-1)[j]) > 1:
                    f.sites.append(Site("shape", nd, i, j, along(v.lab, v.axis)))
    return [v]


@rule("layout", "Tile")
def _tile(f, node, ins):
    u = only_first(ins)
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
    u = only_first(ins, "split sizes")
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
        f.sites.append(Site("split", node, index, axis, along(u.lab, axis), sizes=sizes))
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
    u = only_first(ins, "slice bounds")
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
            site = Site("select", node, 0, a, along(lab, a), positions=pos.astype(np.int64))
            f.sites.append(site)
        lab = np.take(lab, pos, axis=a)
        null = None if null is None else np.take(null, pos, axis=a)
    return [Units(lab, u.axis, null, u.zero_point)]


@rule("layout", "Gather")
def _gather(f, node, ins):
    u = only_first(ins, "indices")
    axis = int(node.attrs.get("axis", 0)) % u.rank
    idx = f.const(node.inputs[1])
    if u.lab.shape[axis] > 1:
        if idx is None or idx.ndim > 1:
            raise Widen("it picks units by computed indices")
        pos = np.atleast_1d(idx).astype(np.int64) % u.lab.shape[axis]
        if axis == u.axis:
            if u.rows():
                raise Widen("it selects units that differ from row to row")
            site = Site("select", node, 0, axis, along(u.lab, axis), positions=pos, squeeze=idx.ndim == 0)
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
    u = only_first(ins, "indices")
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
    u = only_first(ins, "lengths")
    for name, default in (("batch_axis", 1), ("time_axis", 0)):
        if u.lab.shape[int(node.attrs.get(name, default)) % u.rank] > 1:
            raise Widen("it reverses along the units")
    return [u]


@rule("layout", "Pad")
def _pad(f, node, ins):
    u = only_first(ins, "pads")
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

