"""Graph pieces the composition is stitched from: a module's graph with its names prefixed, nodes
in dependency order, identical nodes computed once, standalone copies of protobuf messages."""
from __future__ import annotations

import onnx


def _prefixed(proto: onnx.ModelProto, prefix: str, own_inputs: bool = False, inplace: bool = False) -> onnx.GraphProto:
    """The module's graph with every name prefixed, except its graph inputs (shared by all) —
    unless ``own_inputs``: then the module reads ``<prefix><input>``, which the router feeds.
    ``inplace``: rename ``proto`` itself (its owner is done with it) instead of a copy."""
    back = {} if own_inputs else {prefix + i.name: i.name for i in proto.graph.input}
    g = onnx.compose.add_prefix(proto, prefix, rename_inputs=True, rename_outputs=True, inplace=inplace).graph

    def rename(graph: onnx.GraphProto):
        for node in graph.node:
            for i, n in enumerate(node.input):
                if n in back:
                    node.input[i] = back[n]
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    rename(a.g)
                for sub in a.graphs:
                    rename(sub)
    rename(g)
    return g


def _toposort(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Nodes in an order where each comes after the producers of its inputs (stable otherwise)."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    done, out = set(), []

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            j, expanded = stack.pop()
            if j in done:
                continue
            if expanded:
                done.add(j)
                out.append(nodes[j])
                continue
            stack.append((j, True))
            for x in reversed([*nodes[j].input, *_outer_reads(nodes[j])]):
                k = producer.get(x)
                if k is not None and k not in done:
                    stack.append((k, False))

    for i in range(len(nodes)):
        visit(i)
    return out


def _outer_reads(node: onnx.NodeProto) -> list[str]:
    """The outer tensors ``node``'s subgraphs read by name (an ``If`` branch, a loop body)."""
    out = []
    for a in node.attribute:
        for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            local = {i.name for i in g.input} | {i.name for i in g.initializer} | {o for n in g.node for o in n.output}
            for n in g.node:
                out += [x for x in [*n.input, *_outer_reads(n)] if x and x not in local]
            out += [o.name for o in g.output if o.name not in local]
    return out


def _share_common_nodes(nodes: list[onnx.NodeProto]) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """Common-subexpression elimination: a node with the same op, attributes and inputs as an
    earlier one is dropped and its outputs renamed to that node's. Modules of one model share
    everything before their first recurrent layer (embedding lookup, reshapes), computed once."""
    seen: dict[bytes, list[str]] = {}
    alias: dict[str, str] = {}
    out = []
    for node in nodes:
        for i, x in enumerate(node.input):
            if x in alias:
                node.input[i] = alias[x]
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            _alias_inside(node, alias)  # a body reads outer tensors by name: it reads the shared ones too
            out.append(node)
            continue
        key = node.op_type.encode() + b"|" + node.domain.encode() + b"|" + "\x00".join(node.input).encode() + b"|" + \
            b"".join(a.SerializeToString(deterministic=True) for a in sorted(node.attribute, key=lambda a: a.name))
        if key in seen and len(seen[key]) == len(node.output):
            for mine, theirs in zip(node.output, seen[key]):
                alias[mine] = theirs
            continue
        seen[key] = list(node.output)
        out.append(node)
    return out, alias


def _alias_inside(node: onnx.NodeProto, alias: dict[str, str]) -> None:
    """Rename, inside ``node``'s subgraphs, the outer tensors it reads that were merged away."""
    for a in node.attribute:
        for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            local = {i.name for i in g.input} | {i.name for i in g.initializer} | {o for n in g.node for o in n.output}
            for n in g.node:
                for i, x in enumerate(n.input):
                    if x in alias and x not in local:
                        n.input[i] = alias[x]
                _alias_inside(n, {k: v for k, v in alias.items() if k not in local})
            for o in g.output:
                if o.name in alias and o.name not in local:
                    o.name = alias[o.name]


def _unnamed_dims(v: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """``v`` with its named dimensions ("batch") made unknown: in a composition they no longer
    mean one size (a router runs each module on its own rows), and onnxruntime holds tensors that
    share a name to one size."""
    if v.type.HasField("tensor_type"):
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.Clear()
    return v


def _copy(msg):
    """A standalone copy of a protobuf message (a reference into a module would keep all of that
    module's memory alive)."""
    out = type(msg)()
    out.CopyFrom(msg)
    return out
