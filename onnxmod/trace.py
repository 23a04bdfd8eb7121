"""Tracing: run the model once in onnxruntime and expose every recurrent op's hidden states.

The trace graph is the normalized model plus, per recurrent op, its ``Y`` output transposed to
batch-major ``[N, T, D, H]`` and the logits — fetched together in one ``run`` per batch, so one
pass over the sampled inputs serves every class.
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
    """``hidden[k]``: op k's states ``[N, T, D, H]`` (or ``[N, D, H]`` with ``steps='last'``)."""

    hidden: list[np.ndarray]
    logits: np.ndarray


def trace_model(model: Model) -> "onnx.ModelProto":  # noqa: F821
    m = model.fresh()
    outs = []
    for op in m.recurrent:
        y = op.node.outputs[0]
        if not y.name:
            y = gs.Variable(f"{op.name}/Y", dtype=np.float32)
            op.node.outputs[0] = y
        t = gs.Variable(f"onnxmod_trace/{op.index}", dtype=np.float32)
        m.graph.nodes.append(gs.Node("Transpose", f"onnxmod_trace/transpose_{op.index}",
                                     attrs={"perm": [2, 0, 1, 3]}, inputs=[y], outputs=[t]))
        outs.append(t)
    out = m.output
    return m.export(outputs=[out, *outs])


def _last_step(h: np.ndarray) -> np.ndarray:
    """The state after reading the whole sequence: forward at T-1, reverse at 0."""
    last = [h[:, -1, 0]]
    if h.shape[2] == 2:
        last.append(h[:, 0, 1])
    return np.stack(last, axis=1)


def run_trace(model: Model, x: np.ndarray, steps: str = "all", batch_size: int = 256,
              progress: bool | None = None, threads: int | None = None) -> Trace:
    sess = runtime.session(trace_model(model), threads=threads)
    names = [o.name for o in sess.get_outputs()]

    def keep(res):
        if steps == "last":
            return [res[0], *[_last_step(h) for h in res[1:]]]
        return res

    with tqdm(total=x.shape[0], desc="trace", unit="seq", disable=None if progress is None else not progress,
              leave=False) as bar:
        res = runtime.run_batched(sess, x, names, batch_size, progress=bar.update, transform=keep)
    return Trace(hidden=res[1:], logits=res[0])
