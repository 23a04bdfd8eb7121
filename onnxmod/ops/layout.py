"""``layout=1`` (batch-major) recurrent ops rewritten as ``layout=0`` ops between Transposes.

onnxruntime's CPU kernels reject ``layout=1``; every other part of onnxmod reads the time-major
layout. The rewrite is exact: ``X`` ``[B, T, I]`` and the initial states ``[B, D, H]`` are
transposed in, ``Y`` ``[T, D, B, H]`` and ``Y_h``/``Y_c`` ``[D, B, H]`` are transposed back out to the
tensors the rest of the graph reads.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

_IN_PERMS = {0: [1, 0, 2], 5: [1, 0, 2], 6: [1, 0, 2]}  # X, initial_h, initial_c
_OUT_PERMS = {0: [2, 0, 1, 3], 1: [1, 0, 2], 2: [1, 0, 2]}  # Y, Y_h, Y_c back to batch-major


def to_time_major(graph: gs.Graph, op_types) -> list[str]:
    """Rewrite every ``layout=1`` node of ``op_types`` in place; returns their names."""
    done = []
    for node in list(graph.nodes):
        if node.op not in op_types or int(node.attrs.get("layout", 0)) != 1:
            continue
        name = node.name or node.op
        for i, perm in _IN_PERMS.items():
            if len(node.inputs) > i and node.inputs[i].name:
                src = node.inputs[i]
                t = gs.Variable(f"{name}/time_major_in{i}", dtype=src.dtype)
                graph.nodes.append(gs.Node("Transpose", f"{name}/to_time_major_{i}", attrs={"perm": perm},
                                           inputs=[src], outputs=[t]))
                node.inputs[i] = t
        for i, perm in _OUT_PERMS.items():
            if len(node.outputs) > i and node.outputs[i].name:
                dst = node.outputs[i]
                t = gs.Variable(f"{name}/time_major_out{i}", dtype=dst.dtype)
                node.outputs[i] = t
                graph.nodes.append(gs.Node("Transpose", f"{name}/to_batch_major_{i}", attrs={"perm": perm},
                                           inputs=[t], outputs=[dst]))
        node.attrs["layout"] = 0
        done.append(name)
    if done:
        graph.toposort()
    return done
