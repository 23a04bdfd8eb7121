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
    """``hidden[k]``: op k's states ``[N, T, D, H]``;
    ``inputs[k]``: op k's input ``[N, T, I]`` when traced with ``inputs=True``."""

    hidden: list[np.ndarray]
    logits: np.ndarray
    inputs: list[np.ndarray] | None = None


def trace_model(model: Model, inputs: bool = False) -> "onnx.ModelProto":  # noqa: F821
    m = model.fresh()
    outs = []
    xs = []
    for op in m.recurrent:
        if inputs:
            xt = gs.Variable(f"onnxmod_trace/x{op.index}", dtype=np.float32)
            m.graph.nodes.append(gs.Node("Transpose", f"onnxmod_trace/transpose_x{op.index}",
                                         attrs={"perm": [1, 0, 2]}, inputs=[op.node.inputs[0]], outputs=[xt]))
            xs.append(xt)
        y = op.node.outputs[0]
        if not y.name:
            y = gs.Variable(f"{op.name}/Y", dtype=np.float32)
            op.node.outputs[0] = y
        t = gs.Variable(f"onnxmod_trace/{op.index}", dtype=np.float32)
        m.graph.nodes.append(gs.Node("Transpose", f"onnxmod_trace/transpose_{op.index}",
                                     attrs={"perm": [2, 0, 1, 3]}, inputs=[y], outputs=[t]))
        outs.append(t)
    out = m.output
    return m.export(outputs=[out, *outs, *xs])


def run_trace(model: Model, x: np.ndarray, batch_size: int = 256,
              progress: bool | None = None, threads: int | None = None, inputs: bool = False) -> Trace:
    sess = runtime.session(trace_model(model, inputs=inputs), threads=threads)
    names = [o.name for o in sess.get_outputs()]
    K = len(model.recurrent)

    with tqdm(total=x.shape[0], desc="trace", unit="seq", disable=None if progress is None else not progress,
              leave=False) as bar:
        res = runtime.run_batched(sess, x, names, batch_size, progress=bar.update)
    return Trace(hidden=res[1:1 + K], logits=res[0], inputs=res[1 + K:] if inputs else None)


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
