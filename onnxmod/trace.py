"""Tracing: run the model once in onnxruntime and expose every recurrent op's hidden states.

The trace graph is the normalized model cut after its last recurrent op, with each recurrent op's
``Y`` (``[T, D, N, H]``, as the op computes it anyway) and, for gate monitoring, its ``X`` as its
outputs: no extra node runs, and the layers after the recurrence (the output layer: a
translator's projection onto its target vocabulary) do not run at all, since no decision reads
the model's own scores. ``Tracer`` creates the session once; each batch's outputs are copied once, straight into
preallocated batch-major arrays ``[N, T, D, H]``, so one pass over the sampled inputs serves
every class at the cost of that copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from tqdm.auto import tqdm

from . import runtime
from .graph import Model


@dataclass
class Trace:
    """``hidden[k]``: op k's states ``[N, T, D, H]``;
    ``inputs[k]``: op k's input ``[N, T, I]`` when traced with ``inputs=True``;
    ``lengths[k]``: op k's ``sequence_lens`` ``[N]`` (None when it reads every step)."""

    hidden: list[np.ndarray]
    inputs: list[np.ndarray] | None = None
    lengths: list[np.ndarray | None] | None = None  # op k's sequence_lens [N], where it reads one


def trace_model(model: Model, inputs: bool = False) -> onnx.ModelProto:  # noqa: F821
    """The model up to its recurrent ops, with every op's ``Y`` ``[T, D, N, H]`` (and ``X``
    ``[T, N, I]``) as its outputs."""
    m = model.fresh()
    outs = [op.y for op in m.recurrent]
    xs = [op.x for op in m.recurrent] if inputs else []
    lens = [op.lengths for op in m.recurrent if isinstance(op.lengths, gs.Variable)]
    return m.export(outputs=[*outs, *xs, *lens])


class Tracer:
    """One session over the trace graph; ``run`` traces any number of inputs with it."""

    def __init__(self, model: Model, inputs: bool = False, threads: int | None = None):
        self.model, self.inputs = model, inputs
        self.session = runtime.session(trace_model(model, inputs=inputs), threads=threads)
        self.names = [o.name for o in self.session.get_outputs()]
        self.has_lengths = [isinstance(op.lengths, gs.Variable) for op in model.recurrent]
        self.fixed_lengths = [np.asarray(op.lengths.values) if isinstance(op.lengths, gs.Constant) else None
                              for op in model.recurrent]

    def run(self, x, batch_size: int = 256, progress: bool | None = None) -> Trace:
        """``x``: the first input's array, or ``{input name: array}`` with the same number of rows."""
        n = next(iter(x.values())).shape[0] if isinstance(x, dict) else x.shape[0]
        K = len(self.model.recurrent)
        X = K if self.inputs else 0
        hidden, xs = None, [None] * X
        lens = [np.empty(n, dtype=np.int64) if has else None for has in self.has_lengths]
        with tqdm(total=n, desc="trace", unit="seq", delay=1.0, disable=None if progress is None else not progress,
                  leave=False) as bar:
            for s, e, res in runtime.batches(self.session, x, self.names, batch_size, bar.update):
                if hidden is None:
                    hidden = [np.empty((n, y.shape[0], y.shape[1], y.shape[3]), dtype=np.float32) for y in res[:K]]
                    xs = [np.empty((n, v.shape[0], v.shape[2]), dtype=np.float32) for v in res[K:K + X]]
                for k, y in enumerate(res[:K]):  # [T, D, B, H] -> rows s..e of [N, T, D, H]
                    hidden[k][s:e] = y.transpose(2, 0, 1, 3)
                for k, v in enumerate(res[K:K + X]):
                    xs[k][s:e] = v.transpose(1, 0, 2)
                it = iter(res[K + X:])
                for k, has in enumerate(self.has_lengths):
                    if has:
                        lens[k][s:e] = next(it)
        lens = [fixed if fixed is not None else got for fixed, got in zip(self.fixed_lengths, lens)]
        return Trace(hidden=hidden, inputs=xs if self.inputs else None, lengths=lens)


def run_trace(model: Model, x, batch_size: int = 256, progress: bool | None = None, threads: int | None = None,
              inputs: bool = False) -> Trace:
    return Tracer(model, inputs=inputs, threads=threads).run(x, batch_size, progress)


def gate_activations(model: Model, tr: Trace) -> list[np.ndarray]:
    """Per op, every gate's activation ``[N, T, G, D*H]`` rebuilt exactly from the traced X and Y."""
    out = []
    for op, x, y in zip(model.recurrent, tr.inputs, tr.hidden):
        g = op.gates_from_trace(x.transpose(1, 0, 2), y.transpose(1, 2, 0, 3))  # [T, D, G, N, H]
        T, D, G, N, H = g.shape
        out.append(g.transpose(3, 0, 2, 1, 4).reshape(N, T, G, D * H).astype(np.float32))
    return out


def final_step(a: np.ndarray, reverse: list[bool], lengths: np.ndarray | None = None) -> np.ndarray:
    """``[N, T, ..., D*H]`` -> ``[N, ..., D*H]``: each direction's value after reading the whole
    sequence: a forward direction's at the row's last real step (``lengths[n] - 1``, else T-1), a
    reverse direction's at step 0."""
    N, T = a.shape[0], a.shape[1]
    H = a.shape[-1] // len(reverse)
    last = (np.full(N, T - 1) if lengths is None else np.clip(np.asarray(lengths, dtype=np.int64) - 1, 0, T - 1))
    out = a[np.arange(N), last].copy()
    for d, rev in enumerate(reverse):
        if rev:
            out[..., d * H:(d + 1) * H] = a[:, 0, ..., d * H:(d + 1) * H]
    return out
