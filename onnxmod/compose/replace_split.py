"""Taking a composition apart: its modules as standalone files (``split``), the position of a
class's module, and one module swapped for another (``replace``)."""
from __future__ import annotations

import json

import onnx
from onnx import helper

from .. import __version__
from ..errors import IncompatibleError, InputError
from ..io import keys
from .identity import module_info
from .stitch import compose


class _Composition:
    """What taking modules out of a composition reads of it, computed once for all its modules."""

    def __init__(self, composed: onnx.ModelProto):
        g = self.graph = composed.graph
        self.proto = composed
        self.inits = {i.name: i for i in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.order = {id(n): i for i, n in enumerate(g.node)}
        self.known = {v.name: v for v in list(g.value_info) + list(g.output)}


def split(composed: onnx.ModelProto, where: str = "composition", only=None) -> list[onnx.ModelProto]:
    """The modules a composition was built from, as standalone ModelProtos (inverse of compose);
    ``only``: the positions of the modules wanted (default: all)."""
    meta = {p.key: p.value for p in composed.metadata_props}
    if meta.get(keys.KIND) == "fused":
        raise IncompatibleError(f"{where}: a fused composition runs one shared trunk and holds no separable modules; "
                                f"split or replace the composed.onnx written beside it")
    if meta.get(keys.KIND) != "composition":
        raise InputError(f"{where}: not an onnxmod composition "
                         f"(metadata {keys.KIND!r} is {meta.get(keys.KIND)!r})")
    try:
        metas = json.loads(meta[keys.MODULES])
    except (KeyError, ValueError):
        raise InputError(f"{where}: composition metadata lacks its modules' identities ({keys.MODULES!r})") from None
    c = _Composition(composed)
    outputs_of = json.loads(meta.get(keys.MODULE_OUTPUTS, "[]"))
    out = []
    for k, mmeta in enumerate(metas):
        if only is not None and k not in only:
            continue
        pairs = outputs_of[k] if k < len(outputs_of) else []
        if not pairs:
            raise InputError(f"{where}: composition metadata lacks module {k}'s outputs ({keys.MODULE_OUTPUTS!r})")
        out.append(_module(c, f"m{k}/", pairs, mmeta, where))
    return out


def _module(c: _Composition, prefix: str, pairs: list, mmeta: dict, where: str) -> onnx.ModelProto:
    """The module whose names carry ``prefix``, with its outputs ``pairs`` ([output name, tensor in
    the composition]) and its metadata ``mmeta``, as a standalone ModelProto."""
    def strip(name: str) -> str:
        return name[len(prefix):] if name.startswith(prefix) else name

    nodes = _needed_nodes(c, prefix, [t for _, t in pairs])
    new_nodes, new_inits = _stripped(nodes, c.inits, strip)
    out_vi = []
    for name, tensor in pairs:
        if tensor not in c.known:
            raise InputError(f"{where}: composition lacks the type of module output {tensor!r}")
        if strip(tensor) != name:  # the module's output was computed by a node it shares
            new_nodes.append(helper.make_node("Identity", [strip(tensor)], [name], name=f"onnxmod/output_{name}"))
        v = onnx.ValueInfoProto()
        v.CopyFrom(c.known[tensor])
        v.name = name
        out_vi.append(v)
    graph = helper.make_graph(new_nodes, "onnxmod_module", list(c.graph.input), out_vi, initializer=new_inits)
    proto = helper.make_model(graph, opset_imports=list(c.proto.opset_import),
                              producer_name="onnxmod", producer_version=__version__)
    proto.ir_version = c.proto.ir_version
    for key, v in sorted(mmeta.items()):
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=v))
    return proto


def _needed_nodes(c: _Composition, prefix: str, wanted: list[str]) -> list[onnx.NodeProto]:
    """Every node the tensors ``wanted`` depend on (shared nodes included), in graph order."""
    own_inputs = {prefix + i.name for i in c.graph.input}  # a routed module's inputs (fed by the router)
    needed, stack = {}, list(wanted)
    while stack:
        t = stack.pop()
        n = None if t in own_inputs else c.producer.get(t)
        if n is None or id(n) in needed:
            continue
        needed[id(n)] = n
        stack.extend(n.input)
    return sorted(needed.values(), key=lambda n: c.order[id(n)])


def _stripped(nodes: list[onnx.NodeProto], inits: dict, strip) -> tuple[list, list]:
    """Copies of ``nodes`` and of the initializers they read (in first-read order), renamed by ``strip``."""
    new_nodes, used = [], []
    for n in nodes:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.name = strip(c.name)
        for i, x in enumerate(c.input):
            if x in inits and x not in used:
                used.append(x)
            c.input[i] = strip(x)
        for i, x in enumerate(c.output):
            c.output[i] = strip(x)
        new_nodes.append(c)
    new_inits = []
    for name in used:
        t = onnx.TensorProto()
        t.CopyFrom(inits[name])
        t.name = strip(name)
        new_inits.append(t)
    return new_nodes, new_inits


def module_position(composed: onnx.ModelProto, class_name, where: str = "composition") -> int:
    """The position of the module of ``class_name`` (its name first, else its index) in a composition."""
    infos = [{"class_index": c["class_index"], "class_name": c["class_name"]}
             for c in json.loads({p.key: p.value for p in composed.metadata_props}.get(keys.CLASSES, "[]"))]
    target = str(class_name)
    hits = ([i for i, info in enumerate(infos) if info["class_name"] == target]
            or [i for i, info in enumerate(infos) if str(info["class_index"]) == target])
    if not hits:
        names = ", ".join(i["class_name"] for i in infos[:20]) + (", …" if len(infos) > 20 else "")
        raise InputError(f"{where}: has no module of class {target!r} (it has {names})")
    return hits[0]


def replace(composed: onnx.ModelProto, new_module: onnx.ModelProto, class_name: str | None = None,
            where: str = "composition", module_where: str = "module", allow_mismatch: bool = False) -> onnx.ModelProto:
    """``composed`` with the module of ``class_name`` (default: the new module's class) swapped for
    ``new_module``. Every other module keeps its position, names and weights, so its outputs are
    unchanged."""
    mods = split(composed, where)
    infos = [module_info(m, f"{where} module {i}") for i, m in enumerate(mods)]
    new = module_info(new_module, module_where)
    target = class_name if class_name is not None else new["class_name"]
    # a name wins over an index (digit characters' classes are named "0".."9" at indices 1..10)
    hits = ([i for i, info in enumerate(infos) if info["class_name"] == target]
            or [i for i, info in enumerate(infos) if str(info["class_index"]) == str(target)])
    if not hits:
        names = ", ".join(i["class_name"] for i in infos)
        raise IncompatibleError(f"{where}: has no module of class {target!r} (it has {names})")
    if new["class_name"] != infos[hits[0]]["class_name"] and not allow_mismatch:
        raise IncompatibleError(f"{module_where} is a module of class {new['class_name']!r}, not {target!r}; "
                                f"pass --allow-mismatch to put it in that place anyway")
    mods[hits[0]] = new_module
    names = [f"{where} module {i}" for i in range(len(mods))]
    names[hits[0]] = module_where
    return compose(mods, names, allow_mismatch=allow_mismatch)
