"""Removing units physically: every recurrence sliced to the units a concern keeps, every site
that reads them (weights, shapes, unit-selecting Gathers) rewritten, an encoder's final state
bridged to its decoder, and (optionally) removed units' means folded into their consumers."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from .errors import UnsupportedModelError

if TYPE_CHECKING:  # annotations only
    from .recurrence import Recurrence

from .flow import Site
from .units import UnitSelection


class Slicing:
    """``Model``'s rewrites (a mixin)."""

    def apply_selection(self, selections: dict[int, UnitSelection], means: dict | None = None) -> None:
        """Remove hidden units physically: ``selections[op.index]`` per recurrent op.

        With ``means`` (``means[op.index]`` = (mean h over every step, mean h over the steps the
        output layer reads), each ``[D*H]``) removed units are *mean-compensated*: each consumer's
        bias absorbs the unit's mean contribution, as if the unit emitted its average instead of 0.
        Without ``means`` the result is exactly the model with those units zeroed."""
        for op in self.recurrent:
            sel = selections.get(op.index)
            if sel is None:
                continue
            kept_ids, inert_ids = sel.global_ids("kept"), sel.global_ids("inert")
            if means is not None and op.index in means:
                self._compensate(op, sel, *means[op.index])
            op.slice_units(sel)
            for s in op.sites:
                if s.kind == "state":
                    continue  # bridged below, once every op is sliced
                if s.kind == "concat":
                    continue  # concatenation follows its inputs
                if s.kind == "select":
                    self._reselect(s, kept_ids)
                    continue
                pos = np.flatnonzero(np.isin(s.labels, kept_ids))
                zero = np.isin(s.labels[pos], inert_ids)
                if s.kind == "recurrent_input":
                    s.recurrence.slice_input(pos, zero)
                elif s.kind == "weight":
                    w = np.take(np.asarray(s.node.inputs[s.input_index].values), pos, axis=s.axis)
                    if zero.any():
                        idx = [slice(None)] * w.ndim
                        idx[s.axis] = zero
                        w[tuple(idx)] = 0
                    s.node.inputs[s.input_index] = gs.Constant(f"{s.node.name}/W_sliced", np.ascontiguousarray(w))
                else:  # shape
                    target = np.asarray(s.node.inputs[1].values).copy()
                    target[s.axis] = pos.size
                    s.node.inputs[1] = gs.Constant(f"{s.node.name}/shape", target)
        for op in self.recurrent:
            for s in op.sites:
                if s.kind == "state":
                    dst = s.recurrence
                    self._bridge(op, selections.get(op.index), dst, selections.get(dst.index), s)

    def _compensate(self, op: Recurrence, sel: UnitSelection, mean_all: np.ndarray, mean_out: np.ndarray) -> None:
        removed = np.setdiff1d(np.arange(op.units), np.setdiff1d(sel.global_ids("kept"), sel.global_ids("inert")))
        if removed.size == 0:
            return
        op.absorb(own={int(u): float(mean_all[u]) for u in removed})
        for s in op.sites:
            if s.kind not in ("recurrent_input", "weight"):
                continue
            pos = np.flatnonzero(np.isin(s.labels, removed))
            if pos.size == 0:
                continue
            if s.kind == "recurrent_input":
                W2 = s.recurrence.weights()[0].astype(np.float64)
                self._site_bias(s, W2[:, :, pos] @ mean_all[s.labels[pos]])
            else:
                w = np.take(np.asarray(s.node.inputs[s.input_index].values).astype(np.float64), pos, axis=s.axis)
                self._site_bias(s, np.tensordot(mean_out[s.labels[pos]], w, axes=([0], [s.axis])))

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
            node.inputs[2] = gs.Constant(f"{node.name}/C_comp", (b + delta.reshape(b.shape[-1:]) / beta).astype(b.dtype))
            return
        out = node.outputs[0]
        for c in list(out.outputs):
            consts = [i for i, x in enumerate(c.inputs) if isinstance(x, gs.Constant)] if c.op == "Add" else []
            if len(consts) == 1:
                b = np.asarray(c.inputs[consts[0]].values)
                c.inputs[consts[0]] = gs.Constant(f"{c.name}/B_comp", (b + delta.reshape(b.shape[-1:])).astype(b.dtype))
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
        kept_mask = np.isin(s.labels, kept_ids)
        new_pos = np.cumsum(kept_mask) - 1  # old position -> new position (where kept)
        chosen = [int(new_pos[p]) for p in s.positions if kept_mask[p]]
        if s.squeeze:
            if len(chosen) != 1:
                raise UnsupportedModelError(f"{self.source}: node {s.node.name!r} selects a unit that the concern removed")
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

