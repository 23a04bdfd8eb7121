"""Removing units physically: every recurrence sliced to the units a concern keeps, every site the
unit flow found rewritten (weights, element-wise parameters, size literals, unit-selecting
``Gather``s, split sizes, re-widened tensors), an encoder's final state bridged to its decoder, and
(optionally) removed units' means folded into their consumers."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from .errors import UnsupportedModelError
from .flow.sites import Site, kept_positions, take_rows
from .units import UnitSelection

if TYPE_CHECKING:  # annotations only
    from .recurrence import Recurrence


class Slicing:
    """``Model``'s rewrites (a mixin)."""

    def apply_selection(self, selections: dict[int, UnitSelection], means: dict | None = None) -> None:
        """Remove hidden units physically: ``selections[op.index]`` per recurrent op.

        With ``means`` (``means[op.index]`` = (mean h over every step, mean h over the steps the
        output layer reads), each ``[D*H]``) removed units are *mean-compensated*: each consumer's
        bias absorbs the unit's mean contribution, as if the unit emitted its average instead of 0.
        Without ``means`` the result is exactly the model with those units zeroed."""
        selections = self._equal_widths(selections)
        kept, inert = self._global_ids(selections)
        for op in self.recurrent:
            sel = selections.get(op.index)
            if sel is not None and means is not None and op.index in means:
                self._compensate(op, sel, *means[op.index])
        for op in self.recurrent:
            if selections.get(op.index) is not None:
                op.slice_units(selections[op.index])
        for s in self.sites:
            if s.kind != "state":
                self._rewrite_site(s, kept, inert)
        for op in self.recurrent:
            for s in op.sites:
                if s.kind == "state" and self.recurrence_of(int(s.labels[0])) is op:
                    dst = s.recurrence
                    self._bridge(op, selections.get(op.index), dst, selections.get(dst.index), s)

    # ---- which units stay ---------------------------------------------------------------------
    def _equal_widths(self, selections: dict) -> dict:
        """Recurrences whose states the model stacks along a row axis keep equal widths: the narrower
        ones are padded with inert units (all-zero weights, which output exactly 0)."""
        out = dict(selections)
        for group in getattr(self, "width_groups", []):
            ops = sorted({i for i, _ in group if i is not None})
            sels = {i: out.get(i) for i in ops}
            widths = {i: (s.width if s is not None else self.recurrent[i].hidden_size) for i, s in sels.items()}
            W = max(widths.values())
            for i, s in sels.items():
                if widths[i] < W:
                    op = self.recurrent[i]
                    keep = [np.setdiff1d(k, z) for k, z in zip(s.kept, s.inert)]
                    out[i] = UnitSelection.from_keep(op.hidden_size, keep, width=W)
        return out

    def _global_ids(self, selections: dict) -> tuple[np.ndarray, np.ndarray]:
        kept, inert = [], []
        for op in self.recurrent:
            off, sel = self.unit_offsets[op.index], selections.get(op.index)
            if sel is None:
                kept.append(off + np.arange(op.units))
            else:
                kept.append(off + sel.global_ids("kept"))
                inert.append(off + sel.global_ids("inert"))
        cat = lambda a: np.concatenate(a) if a else np.zeros(0, dtype=np.int64)  # noqa: E731
        return cat(kept), cat(inert)

    # ---- one site -----------------------------------------------------------------------------
    def _rewrite_site(self, s: Site, kept: np.ndarray, inert: np.ndarray) -> None:
        if s.kind == "select":
            return self._reselect(s, kept)
        if s.kind == "widen":
            return self._widen(s, kept)
        if s.kind == "param":
            c = np.asarray(s.node.inputs[s.input_index].values)
            offset = s.units.rank - c.ndim if s.units.rank >= c.ndim else 0
            new = take_rows(c, s.units, offset, kept)
            s.node.inputs[s.input_index] = gs.Constant(f"{s.node.name}/param_{s.input_index}_sliced", new)
            return None
        pos = kept_positions(s.labels, kept)
        if s.kind == "recurrent_input":
            zero = np.isin(s.labels[pos], inert)
            self._fold_null(s, pos)
            s.recurrence.slice_input(pos, zero)
        elif s.kind == "weight":
            self._fold_null(s, pos)
            w = np.take(np.asarray(s.node.inputs[s.input_index].values), pos, axis=s.axis)
            zero = np.isin(s.labels[pos], inert) if s.null is None else np.zeros(pos.size, dtype=bool)
            if zero.any():
                idx = [slice(None)] * w.ndim
                idx[s.axis] = zero
                w[tuple(idx)] = 0
            s.node.inputs[s.input_index] = gs.Constant(f"{s.node.name}/W_sliced", np.ascontiguousarray(w))
        elif s.kind == "shape":
            target = np.asarray(s.node.inputs[s.input_index].values).copy()
            flat = target.reshape(-1)
            flat[s.axis] = pos.size
            name = f"{s.node.name}/shape" if s.input_index == 1 else f"{s.node.name}/shape_{s.input_index}"
            s.node.inputs[s.input_index] = gs.Constant(name, target)
        elif s.kind == "split":
            self._resplit(s, kept)
        return None

    def _fold_null(self, s: Site, pos: np.ndarray) -> None:
        """A removed unit that holds a non-zero constant where a linear layer reads it: its
        contribution moves into that layer's bias (exactly what the model with the unit at 0 reads)."""
        if s.null is None:
            return
        removed = np.setdiff1d(np.arange(s.labels.size), pos)
        if removed.size == 0 or not np.any(s.null[removed]):
            return
        if s.kind == "recurrent_input":
            W = s.recurrence.weights()[0].astype(np.float64)
            self._site_bias(s, W[:, :, removed] @ s.null[removed])
        else:
            w = np.take(np.asarray(s.node.inputs[s.input_index].values).astype(np.float64), removed, axis=s.axis)
            self._add_bias(s.node, np.tensordot(s.null[removed], w, axes=([0], [s.axis])))

    def _resplit(self, s: Site, kept: np.ndarray) -> None:
        bounds = np.cumsum([0] + list(s.sizes))
        sizes = np.array([kept_positions(s.labels[a:b], kept).size for a, b in zip(bounds[:-1], bounds[1:])],
                         dtype=np.int64)
        if s.input_index >= 0:
            s.node.inputs[s.input_index] = gs.Constant(f"{s.node.name}/split_sliced", sizes)
        elif self.opset.get("", self.opset.get("ai.onnx", 0)) >= 13:
            s.node.attrs.pop("num_outputs", None)
            s.node.attrs.pop("split", None)
            while len(s.node.inputs) < 2:
                s.node.inputs.append(gs.Constant(f"{s.node.name}/split_sliced", sizes))
        else:
            s.node.attrs["split"] = [int(x) for x in sizes]

    def _widen(self, s: Site, kept: np.ndarray) -> None:
        """Put the sliced tensor back to its full width where the flow stopped following: each
        removed position reads a zero column, plus the removed unit's value there (its null)."""
        u = s.units
        t = s.tensor
        p = f"onnxmod_widen/{t.name}/{s.node.name if s.node is not None else 'output'}"
        rows = u.rows()
        if rows:
            row_axis = rows[0]
            parts = [np.take(u.lab, [r], axis=row_axis) for r in range(u.lab.shape[row_axis])]
            pieces = [gs.Variable(f"{p}/row{r}", dtype=t.dtype) for r in range(len(parts))]
            self.graph.nodes.append(gs.Node("Split", f"{p}/rows", attrs={"axis": row_axis},
                                            inputs=[t, gs.Constant(f"{p}/row_sizes",
                                                                   np.ones(len(parts), dtype=np.int64))]
                                            if self.opset.get("", self.opset.get("ai.onnx", 0)) >= 13 else [t],
                                            outputs=pieces))
            widened = [self._widen_row(piece, lab, u.axis, kept, f"{p}/r{r}") for r, (piece, lab)
                       in enumerate(zip(pieces, parts))]
            out = gs.Variable(f"{p}/widened", dtype=t.dtype)
            self.graph.nodes.append(gs.Node("Concat", f"{p}/join", attrs={"axis": row_axis}, inputs=widened,
                                            outputs=[out]))
        else:
            out = self._widen_row(t, u.lab, u.axis, kept, p)
        if u.has_null():
            v = np.moveaxis(u.null, u.axis, -1).reshape(-1, u.size)[0]
            lab = np.moveaxis(u.lab, u.axis, -1).reshape(-1, u.size)[0]
            gone = ~(np.isin(lab, kept) | (lab < 0))
            add = np.where(gone, v, 0.0)
            shape = [1] * u.rank
            shape[u.axis] = u.size
            if np.any(add):
                plus = gs.Variable(f"{p}/with_null", dtype=t.dtype)
                self.graph.nodes.append(gs.Node("Add", f"{p}/null", inputs=[out, gs.Constant(
                    f"{p}/null_values", add.reshape(shape).astype(np.dtype(t.dtype) if t.dtype else np.float32))],
                    outputs=[plus]))
                out = plus
        if s.node is None:
            self.graph.outputs = [out if o is t else o for o in self.graph.outputs]
            name = t.name
            t.name = f"{name}/sliced"
            out.name = name
        else:
            s.node.inputs[s.input_index] = out

    def _widen_row(self, t, lab, axis: int, kept, p: str):
        along = np.moveaxis(lab, axis, -1).reshape(-1, lab.shape[axis])[0]
        stay = np.isin(along, kept) | (along < 0)
        width = int(stay.sum())
        new_pos = np.cumsum(stay) - 1
        idx = np.where(stay, new_pos, width).astype(np.int64)
        rank = lab.ndim
        pads = np.zeros(2 * rank, dtype=np.int64)
        pads[rank + axis] = 1
        padded = gs.Variable(f"{p}/padded", dtype=t.dtype)
        out = gs.Variable(f"{p}/full", dtype=t.dtype)
        self.graph.nodes += [
            gs.Node("Pad", f"{p}/pad", inputs=[t, gs.Constant(f"{p}/pads", pads)], outputs=[padded]),
            gs.Node("Gather", f"{p}/gather", attrs={"axis": axis}, inputs=[padded, gs.Constant(f"{p}/idx", idx)],
                    outputs=[out]),
        ]
        return out

    # ---- compensation -------------------------------------------------------------------------
    def _compensate(self, op: Recurrence, sel: UnitSelection, mean_all: np.ndarray, mean_out: np.ndarray) -> None:
        removed = np.setdiff1d(np.arange(op.units), np.setdiff1d(sel.global_ids("kept"), sel.global_ids("inert")))
        if removed.size == 0:
            return
        op.absorb(own={int(u): float(mean_all[u]) for u in removed})
        off = self.unit_offsets[op.index]
        for s in op.sites:
            if s.kind not in ("recurrent_input", "weight"):
                continue
            local = s.labels - off
            pos = np.flatnonzero(np.isin(local, removed) & (s.labels >= off) & (s.labels < off + op.units))
            if pos.size == 0:
                continue
            if s.kind == "recurrent_input":
                W2 = s.recurrence.weights()[0].astype(np.float64)
                self._site_bias(s, W2[:, :, pos] @ mean_all[local[pos]])
            else:
                w = np.take(np.asarray(s.node.inputs[s.input_index].values).astype(np.float64), pos, axis=s.axis)
                self._site_bias(s, np.tensordot(mean_out[local[pos]], w, axes=([0], [s.axis])))

    def _site_bias(self, s: Site, delta: np.ndarray) -> None:
        """Add ``delta`` to what a site's consumer computes: a recurrent op's input bias ``Wb``
        (``[D, G*H]``), or the bias of a Gemm/MatMul."""
        if s.kind == "recurrent_input":
            s.recurrence.absorb(input_delta=delta)
        else:
            self._add_bias(s.node, delta)

    def _add_bias(self, node: gs.Node, delta: np.ndarray) -> None:
        """Add ``delta`` to the bias of a Gemm, or of the Add after a MatMul (one is inserted if none)."""
        if node.op == "Gemm" and len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
            b = np.asarray(node.inputs[2].values)
            beta = float(node.attrs.get("beta", 1.0))
            compensated = (b + delta.reshape(b.shape[-1:]) / beta).astype(b.dtype)
            node.inputs[2] = gs.Constant(f"{node.name}/C_comp", compensated)
            return
        out = node.outputs[0]
        for c in list(out.outputs):
            consts = [i for i, x in enumerate(c.inputs) if isinstance(x, gs.Constant)] if c.op == "Add" else []
            if len(consts) == 1 and np.asarray(c.inputs[consts[0]].values).size == delta.size:
                b = np.asarray(c.inputs[consts[0]].values)
                c.inputs[consts[0]] = gs.Constant(f"{c.name}/B_comp", (b + delta.reshape(b.shape)).astype(b.dtype))
                return
        if node.op == "Gemm" and len(node.inputs) <= 2:
            node.inputs.append(gs.Constant(f"{node.name}/C_comp", delta.astype(np.float32)))
            return
        biased = gs.Variable(f"{out.name}/compensated", dtype=out.dtype)
        for c in list(out.outputs):
            c.inputs = [biased if x is out else x for x in c.inputs]
        self.graph.outputs = [biased if x is out else x for x in self.graph.outputs]
        self.graph.nodes.append(gs.Node("Add", f"{node.name}/compensation",
                                        inputs=[out, gs.Constant(f"{node.name}/comp", delta.astype(np.float32))],
                                        outputs=[biased]))

    def _reselect(self, s: Site, kept_ids: np.ndarray) -> None:
        """Rewrite a unit-selecting Slice/Gather as a Gather over the units that remain."""
        kept_mask = np.isin(s.labels, kept_ids) | (s.labels < 0)
        new_pos = np.cumsum(kept_mask) - 1  # old position -> new position (where kept)
        chosen = [int(new_pos[p]) for p in s.positions if kept_mask[p]]
        if s.squeeze:
            if len(chosen) != 1:
                raise UnsupportedModelError(f"{self.source}: node {s.node.name!r} selects a unit that the concern "
                                            f"removed")
            idx = np.array(chosen[0], dtype=np.int64)
        else:
            idx = np.array(chosen, dtype=np.int64)
        data = s.node.inputs[0]
        s.node.op = "Gather"
        s.node.attrs = {"axis": int(s.axis)}
        s.node.inputs = [data, gs.Constant(f"{s.node.name}/units", idx)]

    def _bridge(self, enc: Recurrence, es: UnitSelection | None, dec: Recurrence, ds: UnitSelection | None,
                site: Site) -> None:
        """Map the encoder's kept units onto the decoder's: ``init[d, b, q] = state[d, b, p]`` when
        decoder unit q is encoder unit p, else 0 (a removed unit's state is 0). A per-direction 0/1
        MatMul ``[D, Ke, Kd]``; nothing when both keep the same units."""
        H, D = enc.hidden_size if es is None else es.hidden_size, enc.directions
        ek = [np.arange(H)] * D if es is None else list(es.kept)
        dk = [np.arange(H)] * D if ds is None else list(ds.kept)
        ei = [np.array([], int)] * D if es is None else list(es.inert)
        di = [np.array([], int)] * D if ds is None else list(ds.inert)
        if all(np.array_equal(a, b) and np.array_equal(c, e) for a, b, c, e in zip(ek, dk, ei, di)):
            return
        Ke = ek[0].size
        idx = np.full((D, dk[0].size), Ke, dtype=np.int64)  # Ke = the zero column added by Pad
        for d in range(D):
            for q, j in enumerate(dk[d]):
                if j in di[d] or j in ei[d] or j not in ek[d]:
                    continue
                idx[d, q] = int(np.flatnonzero(ek[d] == j)[0])
        state = site.node.inputs[site.input_index]
        p = f"{site.node.name}/bridge_{site.input_index}"
        padded = gs.Variable(f"{p}/padded", dtype=np.float32)
        self.graph.nodes.append(gs.Node("Pad", f"{p}/pad", inputs=[state, gs.Constant(f"{p}/pads",
                                        np.array([0, 0, 0, 0, 0, 1], dtype=np.int64))], outputs=[padded]))
        out = gs.Variable(p, dtype=np.float32)
        if D == 1 or all(np.array_equal(idx[0], r) for r in idx[1:]):
            self.graph.nodes.append(gs.Node("Gather", p, attrs={"axis": 2},
                                            inputs=[padded, gs.Constant(f"{p}/idx", idx[0])], outputs=[out]))
        else:  # per direction: [D, B, Ke+1] -> GatherElements with indices broadcast over the batch
            shape = gs.Variable(f"{p}/shape", dtype=np.int64)
            full = gs.Variable(f"{p}/idx_full", dtype=np.int64)
            dims = gs.Variable(f"{p}/dims", dtype=np.int64)
            self.graph.nodes += [
                gs.Node("Shape", f"{p}/shape", inputs=[state], outputs=[shape]),
                gs.Node("Concat", f"{p}/dims", attrs={"axis": 0}, outputs=[dims], inputs=[
                    gs.Constant(f"{p}/D", np.array([D], dtype=np.int64)),
                    gs.Variable(f"{p}/B", dtype=np.int64),
                    gs.Constant(f"{p}/Kd", np.array([idx.shape[1]], dtype=np.int64))]),
            ]
            b = self.graph.nodes[-1].inputs[1]
            self.graph.nodes.append(gs.Node("Slice", f"{p}/batch", inputs=[shape, gs.Constant(f"{p}/s1", np.array([1])),
                                                                        gs.Constant(f"{p}/s2", np.array([2]))],
                                            outputs=[b]))
            self.graph.nodes.append(gs.Node("Expand", f"{p}/expand", inputs=[gs.Constant(f"{p}/idx", idx[:, None, :]),
                                                                          dims], outputs=[full]))
            self.graph.nodes.append(gs.Node("GatherElements", p, attrs={"axis": 2}, inputs=[padded, full],
                                            outputs=[out]))
        site.node.inputs[site.input_index] = out
