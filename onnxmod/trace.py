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
from tqdm.auto import tqdm

from . import runtime
from .graph import Model


@dataclass
class Trace:
    """``hidden[k]``: op k's states ``[N, T, D, H]``;
    ``inputs[k]``: op k's input ``[N, T, I]`` when traced with ``inputs=True``."""

    hidden: list[np.ndarray]
    inputs: list[np.ndarray] | None = None


def trace_model(model: Model, inputs: bool = False) -> "onnx.ModelProto":  # noqa: F821
    """The model up to its recurrent ops, with every op's ``Y`` ``[T, D, N, H]`` (and ``X``
    ``[T, N, I]``) as its outputs."""
    import onnx_graphsurgeon as gs

    m = model.fresh()
    outs, xs = [], []
    for op in m.recurrent:
        y = op.node.outputs[0]
        if not y.name:
            y = gs.Variable(f"{op.name}/Y", dtype=np.float32)
            op.node.outputs[0] = y
        outs.append(y)
        if inputs:
            xs.append(op.node.inputs[0])
    return m.export(outputs=[*outs, *xs])


class Tracer:
    """One session over the trace graph; ``run`` traces any number of inputs with it."""

    def __init__(self, model: Model, inputs: bool = False, threads: int | None = None):
        self.model, self.inputs = model, inputs
        self.session = runtime.session(trace_model(model, inputs=inputs), threads=threads)
        self.names = [o.name for o in self.session.get_outputs()]

    def run(self, x, batch_size: int = 256, progress: bool | None = None) -> Trace:
        """``x``: the first input's array, or ``{input name: array}`` with the same number of rows."""
        n = next(iter(x.values())).shape[0] if isinstance(x, dict) else x.shape[0]
        K = len(self.model.recurrent)
        hidden, xs = None, [None] * (K if self.inputs else 0)
        with tqdm(total=n, desc="trace", unit="seq", delay=1.0, disable=None if progress is None else not progress,
                  leave=False) as bar:
            for s, e, res in runtime.batches(self.session, x, self.names, batch_size, bar.update):
                if hidden is None:
                    hidden = [np.empty((n, y.shape[0], y.shape[1], y.shape[3]), dtype=np.float32) for y in res[:K]]
                    xs = [np.empty((n, v.shape[0], v.shape[2]), dtype=np.float32) for v in res[K:]]
                for k, y in enumerate(res[:K]):  # [T, D, B, H] -> rows s..e of [N, T, D, H]
                    hidden[k][s:e] = y.transpose(2, 0, 1, 3)
                for k, v in enumerate(res[K:]):
                    xs[k][s:e] = v.transpose(1, 0, 2)
        return Trace(hidden=hidden, inputs=xs if self.inputs else None)


def run_trace(model: Model, x, batch_size: int = 256, progress: bool | None = None, threads: int | None = None,
              inputs: bool = False) -> Trace:
    return Tracer(model, inputs=inputs, threads=threads).run(x, batch_size, progress)


def gate_activations(model: Model, tr: Trace) -> list[np.ndarray]:
    """Per op, every gate's activation ``[N, T, G, D*H]`` rebuilt exactly from the traced X and Y."""
    out = []
    for op, x, y in zip(model.recurrent, tr.inputs, tr.hidden):
        g = op.handler.gates_from_trace(op.node, x.transpose(1, 0, 2), y.transpose(1, 2, 0, 3))  # [T, D, G, N, H]
        T, D, G, N, H = g.shape
        out.append(g.transpose(3, 0, 2, 1, 4).reshape(N, T, G, D * H).astype(np.float32))
    return out


def final_step(a: np.ndarray, directions: int) -> np.ndarray:
    """``[N, T, ..., D*H]`` -> ``[N, ..., D*H]``: each direction's value after reading the whole
    sequence (forward units at step T-1, reverse units at step 0)."""
    last = a[:, -1].copy()
    if directions == 2:
        H = a.shape[-1] // 2
        last[..., H:] = a[:, 0, ..., H:]
    return last
