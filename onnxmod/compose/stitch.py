"""Stitching modules into one composition, one module at a time (``Stitcher``), and checking it."""
from __future__ import annotations

import hashlib
import json
import logging

import onnx
from onnx import helper, numpy_helper

from .. import __version__
from ..errors import IncompatibleError, InputError
from ..io import keys
from .graphs import _copy, _prefixed, _share_common_nodes, _toposort, _unnamed_dims
from .heads import _route_head, _vote_head
from .identity import check_compatible, module_info, resolve_duplicates


def compose(modules: list[onnx.ModelProto], sources: list[str] | None = None,
            allow_mismatch: bool = False, prefer=()) -> onnx.ModelProto:
    """One graph from ``modules`` (ModelProtos written by onnxmod).

    Classifier modules *vote*: outputs ``label`` and ``scores``. Translator modules (encoder-decoder,
    one per target language) are *routed*: each sentence goes to the module of its language token
    (``tgt_in[:, 0]``) and the output is ``logits``, so the composition translates like the model.
    """
    if not modules:
        raise InputError("compose needs at least one module")
    sources = sources or [f"module {i}" for i in range(len(modules))]
    modules, sources = resolve_duplicates(modules, sources, prefer)
    infos = [module_info(m, s) for m, s in zip(modules, sources)]
    check_compatible(infos, allow_mismatch)
    kinds = {i["shape"] == "enc-dec" for i in infos}
    if len(kinds) != 1:
        tr = next(i["where"] for i in infos if i["shape"] == "enc-dec")
        cl = next(i["where"] for i in infos if i["shape"] != "enc-dec")
        raise IncompatibleError(f"{tr} is a translator (encoder-decoder) module and {cl} a classifier module; "
                                f"they cannot be composed")
    stitch = Stitcher(translators=next(iter(kinds)))
    for m, info in zip(modules, infos):
        stitch.add(m, info)
    return stitch.finish(sources)


FULL_CHECK_BYTES = 256 << 20  # a composition up to this size is checked whole; a bigger one by its skeleton


class Stitcher:
    """``compose`` one module at a time, so a caller that builds modules one by one (``api``:
    67 modules of a 54 MB model) holds one module and the composition, never every module.

    ``add(module, info, inplace=True)`` takes what the composition needs of ``module`` (its names
    prefixed, in place when its owner is done with it): its initializers are copied straight into
    the composition's graph, identical ones stored once, and its nodes and value types are copied,
    so nothing keeps the module's own memory alive. ``finish()`` adds the vote (or the router),
    shares identical nodes, writes the metadata and checks the result (``check``). The modules'
    own value types (each module was shape-inferred when built) are carried over, so the
    composition needs no second inference over all of it."""

    def __init__(self, translators: bool = False):
        self.translators = translators
        self.proto = onnx.ModelProto()
        self.nodes, self.dedup, self.value_info = [], {}, []
        self.module_outputs, self.infos, self.metas = [], [], []
        self.opsets, self.ir_version, self.in_vis = {}, 0, None

    def add(self, m: onnx.ModelProto, info: dict, inplace: bool = False) -> None:
        k = len(self.infos)
        if self.in_vis is None:
            self.in_vis = [_copy(i) for i in m.graph.input]
        self.metas.append({p.key: p.value for p in m.metadata_props})
        for o in m.opset_import:
            self.opsets[o.domain] = max(self.opsets.get(o.domain, 0), o.version)
        self.ir_version = max(self.ir_version, m.ir_version)
        g = _prefixed(m, f"m{k}/", own_inputs=self.translators, inplace=inplace)
        rename = {}
        for init in g.initializer:
            payload = init.raw_data if init.HasField("raw_data") else numpy_helper.to_array(init).tobytes()
            h = hashlib.sha256(init.data_type.to_bytes(4, "little") + bytes(str(list(init.dims)), "ascii")
                               + payload).hexdigest()
            if h in self.dedup:
                rename[init.name] = self.dedup[h]
            else:
                self.dedup[h] = init.name
                self.proto.graph.initializer.add().CopyFrom(init)
        for node in g.node:
            for i, n in enumerate(node.input):
                if n in rename:
                    node.input[i] = rename[n]
            self.nodes.append(_copy(node))
        self.value_info += [_unnamed_dims(_copy(v)) for v in list(g.value_info) + list(g.output)]
        self.module_outputs.append({o.name[len(f"m{k}/"):]: _copy(o) for o in g.output})
        self.infos.append(info)

    def finish(self, sources: list[str] | None = None) -> onnx.ModelProto:
        infos, module_outputs = self.infos, self.module_outputs
        sources = sources or [i["where"] for i in infos]
        if self.translators:
            nodes, inits, outputs = _route_head(self.nodes, [], module_outputs, infos, self.in_vis, sources)
        else:
            nodes, inits, outputs = _vote_head(self.nodes, [], module_outputs, infos, sources)
        nodes = _toposort(nodes)  # the router feeds modules from nodes added after them
        # once every node is in (the heads read the surviving names when two modules' nodes coincide)
        nodes, alias = _share_common_nodes(nodes)
        resolved = [[[name, alias.get(vi.name, vi.name)] for name, vi in outs.items()] for outs in module_outputs]
        produced = {o for n in nodes for o in n.output}
        proto, self.proto = self.proto, None
        g = proto.graph
        g.name = "onnxmod_composition"
        g.initializer.extend(inits)
        g.node.extend(nodes)
        g.input.extend(self.in_vis)
        g.output.extend(outputs)
        g.value_info.extend(v for v in self.value_info if v.name in produced)
        self.nodes = self.value_info = None
        proto.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(self.opsets.items()))
        proto.producer_name, proto.producer_version = "onnxmod", __version__
        proto.ir_version = self.ir_version
        classes = [{"class_index": i["class_index"], "class_name": i["class_name"],
                    "source_sha256": i["source_sha256"], "mode": i["mode"]} for i in infos]
        meta = {keys.KIND: "composition", keys.VERSION: __version__,
                keys.CLASSES: json.dumps(classes, sort_keys=True),
                keys.INPUT_SIGNATURE: json.dumps(infos[0]["input_signature"], sort_keys=True),
                keys.VOCAB_SHA256: infos[0]["vocab_sha256"], keys.SHAPE: infos[0]["shape"]}
        if infos[0]["ctc_blank"] is not None:
            meta[keys.CTC_BLANK] = str(infos[0]["ctc_blank"])
        meta[keys.MODULES] = json.dumps(self.metas, sort_keys=True)
        # per module, in order: [its output name, the tensor that holds it here (shared nodes resolved)]
        meta[keys.MODULE_OUTPUTS] = json.dumps(resolved)
        limits = [i["max_steps"] for i in infos if i["max_steps"]]
        if limits:
            meta[keys.MAX_STEPS] = str(min(limits))
        for k, v in sorted(meta.items()):
            proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
        check(proto)
        return proto


def check(proto: onnx.ModelProto, limit: int = FULL_CHECK_BYTES) -> None:
    """``onnx.checker`` with strict shape inference on a composition. Up to ``limit`` bytes the
    whole model is checked; a bigger one (the checker would serialize and parse it again, twice
    its memory) by its *skeleton*: the same nodes, types and metadata, each initializer declared
    as a typed graph input instead of carried (each module was checked whole when it was built)."""
    size = proto.ByteSize()
    logging.getLogger("onnxmod").debug("checking the composition (%.0f MB%s)", size / 2**20,
                                       "" if size <= limit else ", by its skeleton")
    if size <= limit:
        onnx.checker.check_model(proto, full_check=True)
        return
    sk = onnx.ModelProto()
    sk.ir_version, sk.producer_name, sk.producer_version = proto.ir_version, proto.producer_name, proto.producer_version
    sk.opset_import.extend(proto.opset_import)
    sk.metadata_props.extend(proto.metadata_props)
    g = sk.graph
    g.name = proto.graph.name
    g.node.extend(proto.graph.node)
    g.input.extend(proto.graph.input)
    g.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in proto.graph.initializer)
    g.output.extend(proto.graph.output)
    g.value_info.extend(proto.graph.value_info)
    onnx.checker.check_model(sk, full_check=True)
