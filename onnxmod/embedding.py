"""The token embedding: finding it, pruning its rows (``prune_vocabulary``) and reducing its
features (``reduce_embedding``), with every layer that reads them rewritten to match."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .errors import UnsupportedModelError, UsageError
from .flow import Flow, Site, Units


class Embedding:
    """``Model``'s token embedding (a mixin)."""

    def embedding(self) -> gs.Node | None:
        """The token embedding: a ``Gather`` (axis 0) of a 2-D float table by the graph input, or by
        the vocabulary remap table that ``prune_vocabulary`` puts in front of it."""
        for node in self.graph.nodes:
            if (node.op == "Gather" and int(node.attrs.get("axis", 0)) == 0 and len(node.inputs) == 2
                    and isinstance(node.inputs[0], gs.Constant)
                    and (node.inputs[1] is self.input or self._remap(node) is not None)
                    and np.asarray(node.inputs[0].values).ndim == 2
                    and np.issubdtype(np.asarray(node.inputs[0].values).dtype, np.floating)):
                return node
        return None

    def _embedding_for(self, verb: str) -> gs.Node:
        node = self.embedding()
        if node is None:
            raise UnsupportedModelError(f"{self.source}: no token embedding (Gather of a 2-D table by the input) "
                                        f"to {verb}")
        return node

    def _remap(self, node: gs.Node) -> np.ndarray | None:
        """The ``[V]`` token -> row table feeding an embedding Gather (a pruned vocabulary), if any."""
        ids = node.inputs[1]
        if isinstance(ids, gs.Constant) or len(ids.inputs) != 1:
            return None
        p = ids.inputs[0]
        if (p.op == "Gather" and int(p.attrs.get("axis", 0)) == 0 and len(p.inputs) == 2
                and isinstance(p.inputs[0], gs.Constant) and p.inputs[1] is self.input
                and np.issubdtype(np.asarray(p.inputs[0].values).dtype, np.integer)):
            return np.asarray(p.inputs[0].values)
        return None

    def vocabulary_size(self) -> int | None:
        node = self.embedding()
        if node is None:
            return None
        remap = self._remap(node)
        return int(remap.size if remap is not None else np.asarray(node.inputs[0].values).shape[0])

    def embedding_width(self) -> int | None:
        node = self.embedding()
        return None if node is None else int(np.asarray(node.inputs[0].values).shape[1])

    def prune_vocabulary(self, keep: np.ndarray) -> None:
        """Keep the embedding rows of the tokens in ``keep`` (bool ``[V]``); every other token reads
        the kept row nearest to its own (Euclidean), so it still lands where the model put similar
        words. An ``int32 [V]`` remap table (an index, not a parameter) routes token ids to rows;
        negative ids keep Gather's meaning (counted from the end), as in the model."""
        node = self._embedding_for("prune")
        table = np.asarray(node.inputs[0].values)
        V = table.shape[0]
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (V,):
            raise UsageError(f"{self.source}: vocabulary mask has shape {list(keep.shape)}, the embedding has {V} rows")
        if keep.all():
            return
        if not keep.any():
            raise UsageError(f"{self.source}: a vocabulary mask must keep at least one token")
        kept, removed = np.flatnonzero(keep), np.flatnonzero(~keep)
        t, k = table[removed].astype(np.float64), table[kept].astype(np.float64)
        d = (t * t).sum(1)[:, None] - 2 * t @ k.T + (k * k).sum(1)[None, :]  # [removed, kept] only
        remap = np.empty(V, dtype=np.int32)
        remap[kept] = np.arange(kept.size, dtype=np.int32)
        remap[removed] = np.argmin(d, axis=1)  # ties: the lowest kept id
        ids = gs.Variable(f"{node.name}/pruned_ids", dtype=np.int32)
        self.graph.nodes.insert(self.graph.nodes.index(node), gs.Node(
            "Gather", f"{node.name}/vocabulary", attrs={"axis": 0},
            inputs=[gs.Constant(f"{node.name}/remap", remap), self.input], outputs=[ids]))
        node.inputs = [gs.Constant(f"{node.name}/table_pruned", np.ascontiguousarray(table[kept])), ids]

    def reduce_embedding(self, rank: int, weights: np.ndarray | None = None) -> np.ndarray:
        """Replace the embedding's ``d`` features by ``rank`` linear combinations of them.

        Every layer that reads the features (a recurrent op's ``W`` columns, a Gemm/MatMul weight;
        several positions of one token flattened into one row are blocks of ``d`` columns) keeps
        ``rank`` columns per block, and the table keeps ``rank`` columns: parameters shrink by
        ``rank / d`` on both sides. The combinations are those that lose least of what those layers
        see, ``sum_p |W_p (x - x')|^2`` over the tokens weighted by ``weights`` (``[V]``, e.g. how
        often each occurs; uniform if None): with ``C`` the tokens' covariance and ``S = sum_p
        W_p^T W_p``, keep the top ``rank`` eigenvectors ``Q`` of ``C^1/2 S C^1/2``; the table becomes
        ``(E - mean) C^-1/2 Q``, each block ``W_p C^1/2 Q``, and ``W_p mean`` moves into the bias.
        Returns the table the rewritten model computes as if it had (``mean + (E - mean) B A^T``):
        the model with that table gives the same outputs up to rounding."""
        node = self._embedding_for("reduce")
        table = np.asarray(node.inputs[0].values)
        rows, d = table.shape
        if not 1 <= int(rank) <= d:
            raise UsageError(f"{self.source}: embedding rank must be 1..{d}, got {rank}")
        if rank == d:
            return table.copy()
        sites = self._feature_sites(node, d)
        w = np.ones(rows) if weights is None else np.asarray(weights, dtype=np.float64)
        remap = self._remap(node)
        if remap is not None and w.shape == remap.shape:  # token weights -> weights of the kept rows
            w = np.bincount(remap, weights=w, minlength=rows)
        if w.shape != (rows,) or not np.isfinite(w).all() or (w < 0).any():
            raise UsageError(f"{self.source}: embedding weights must be {rows} finite non-negative numbers")
        w = w / w.sum() if w.sum() > 0 else np.full(rows, 1.0 / rows)
        E = table.astype(np.float64)
        mean = w @ E
        cov = (E - mean).T @ ((E - mean) * w[:, None])
        lam, vec = np.linalg.eigh(cov)
        lam = np.maximum(lam, 1e-6 * max(float(lam.max()), 1e-12))
        half, inv_half = (vec * np.sqrt(lam)) @ vec.T, (vec / np.sqrt(lam)) @ vec.T
        blocks = [self._feature_blocks(s, d) for s in sites]
        S = sum(np.einsum("gpi,gpj->ij", b, b) for b in blocks if b is not None)
        _, q = np.linalg.eigh(half @ S @ half)
        q = q[:, ::-1][:, :rank]
        q = q * np.where(q[np.abs(q).argmax(axis=0), np.arange(rank)] < 0, -1.0, 1.0)  # deterministic signs
        A, B = half @ q, inv_half @ q  # x - mean ~ A (B^T (x - mean))
        dtype = table.dtype
        node.inputs[0] = gs.Constant(f"{node.name}/table_reduced", np.ascontiguousarray(((E - mean) @ B).astype(dtype)))
        for s, b in zip(sites, blocks):
            if s.kind == "shape":
                target = np.asarray(s.node.inputs[1].values).copy()
                target[s.axis] = target[s.axis] // d * rank
                s.node.inputs[1] = gs.Constant(f"{s.node.name}/shape_reduced", target)
                continue
            if s.kind == "recurrent_input":
                wt = s.recurrence.weights()[0]
                new = (b @ A).reshape(*wt.shape[:2], -1)
                s.recurrence.set_input_weights(np.ascontiguousarray(new.astype(dtype)))
            else:  # weight: features along s.axis
                moved = np.moveaxis(np.asarray(s.node.inputs[1].values), s.axis, -1)
                new = np.moveaxis((b @ A).reshape(*moved.shape[:-1], -1), -1, s.axis)
                s.node.inputs[1] = gs.Constant(f"{s.node.name}/W_reduced", np.ascontiguousarray(new.astype(dtype)))
            self._site_bias(s, (b @ mean).sum(axis=1).reshape(new.shape[:-1] if s.kind == "recurrent_input"
                                                              else -1))
        return (mean + (E - mean) @ B @ A.T).astype(dtype)

    def why_not_reducible_embedding(self) -> str | None:
        """None when ``reduce_embedding`` can take features away on this model, else why not (one
        line). Following the features only reads the graph."""
        node = self.embedding()
        if node is None:
            return "no token embedding"
        d = int(np.asarray(node.inputs[0].values).shape[1])
        if d < 2:
            return "the embedding has one feature"
        try:
            sites = self._feature_sites(node, d)
        except UnsupportedModelError as exc:
            return str(exc)
        for s in sites:
            if s.kind == "recurrent_input" and not s.recurrence.input_weight:
                return f"{s.recurrence.name!r} is a general cell: no single input weight to fold the features into"
        return None

    def _feature_sites(self, node: gs.Node, d: int) -> list[Site]:
        """Where the embedding's features go: the sites that index them, each in blocks of ``d``."""
        out = node.outputs[0]
        ndim = len(out.shape) if out.shape is not None else len(self.input.shape or []) + 1
        what = f"features of {node.name!r}"
        flow = Flow(self.graph, self.source, self._reader, lambda ids: what)
        sites = flow.run([(out, Units(np.arange(d).reshape([1] * (ndim - 1) + [d]), ndim - 1))])

        def refuse(s: Site, why: str):
            where = f"node {s.node.name!r} ({s.node.op})" if s.node is not None else f"output {s.tensor.name!r}"
            raise UnsupportedModelError(f"{self.source}: {where} consumes the {what}: {why}")

        for s in sites:
            if s.kind == "widen":
                refuse(s, f"{s.why}; only layers reading all of them can take fewer")
            if s.kind not in ("recurrent_input", "weight", "shape"):
                refuse(s, f"selects or concatenates features ({s.kind}); only layers reading all of them can "
                          f"take fewer")
            if s.kind == "weight" and np.asarray(s.node.inputs[1].values).ndim != 2:
                refuse(s, "reads them through a weight that is not 2-D")
            if (s.labels < 0).any():
                refuse(s, "reads them concatenated with another tensor; only layers reading the features alone "
                          "can take fewer")
            if s.labels.size % d or not (s.labels.reshape(-1, d) == np.arange(d)).all():
                refuse(s, "reads the features in an order other than whole blocks of the embedding")
        if not any(s.kind != "shape" for s in sites):
            raise UnsupportedModelError(f"{self.source}: the features of embedding {node.name!r} reach no layer")
        return sites

    def _feature_blocks(self, s: Site, d: int) -> np.ndarray | None:
        """A site's weight as ``[consumer rows, blocks, d]`` (float64), None for a shape literal."""
        if s.kind == "shape":
            return None
        if s.kind == "recurrent_input":
            Wt = s.recurrence.weights()[0].astype(np.float64)
            return Wt.reshape(Wt.shape[0] * Wt.shape[1], -1, d)
        wt = np.moveaxis(np.asarray(s.node.inputs[1].values).astype(np.float64), s.axis, -1)
        return wt.reshape(-1, wt.shape[-1] // d, d)

