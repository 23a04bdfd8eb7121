"""What the fixture builders do to an exported model before committing it (torch-free, so the
Keras builders' venv imports it too): ``strip_debug``."""
from __future__ import annotations

import onnx


def strip_debug(proto: onnx.ModelProto, meta: dict[str, str]) -> onnx.ModelProto:
    """Strip the exporter's per-node debug metadata and doc strings (torch's default exporter stores
    a stack trace per node, ~30x the weights) and the intermediate ``value_info`` (onnxruntime infers
    it; ~1/3 of an unrolled file), in every subgraph; set ``metadata_props`` to ``meta``. The graph
    itself is the exporter's, untouched. In place; returns ``proto``. Idempotent."""

    def strip(g):
        g.ClearField("doc_string")
        del g.value_info[:]
        for n in g.node:
            del n.metadata_props[:]
            n.ClearField("doc_string")
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    strip(a.g)
                for sub in a.graphs:
                    strip(sub)
        for vi in list(g.input) + list(g.output):
            vi.ClearField("doc_string")
            del vi.metadata_props[:]
        for init in g.initializer:
            del init.metadata_props[:]

    strip(proto.graph)
    del proto.metadata_props[:]
    proto.ClearField("doc_string")
    for k, v in meta.items():
        p = proto.metadata_props.add()
        p.key, p.value = k, v
    return proto
