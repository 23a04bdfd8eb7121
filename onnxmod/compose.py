"""Composition (SPEC §3, step 6): modules stitched into one ONNX graph that votes.

All modules read the same graph input; each module's dominant probability ``score[..., 1]`` is
stacked into ``scores`` ``[..., K]`` and ``label`` is the class id of the highest one (per step for
many-output modules). Modules of a CTC head (``onnxmod.ctc_blank``) vote per step over the blank
(``ctc``): ``label`` is the blank unless some module's dominant − blank log-odds is positive. The vote compares log-odds ``logits[..., 1] - logits[..., 0]``, which rank
exactly as the probabilities do but never tie at a saturated 1.0. One graph holding K native recurrent stacks runs much faster than K sessions
(SPEC §6). Identical initializers (e.g. an embedding table shared by modules of one model) are
stored once.
"""
from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import __version__
from .errors import IncompatibleError, InputError
from .io import check_metadata_map, parse_index

LABEL, SCORES = "label", "scores"


def module_info(proto: onnx.ModelProto, where: str) -> dict:
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("onnxmod.kind") != "module":
        raise InputError(f"{where}: not an onnxmod module (metadata 'onnxmod.kind' is {meta.get('onnxmod.kind')!r})")
    check_metadata_map(meta, where, nested=True)  # every field read below, checked where it is read
    return {"class_index": parse_index(meta["onnxmod.class_index"]), "class_name": meta["onnxmod.class_name"],
            "input_signature": json.loads(meta["onnxmod.input_signature"]),
            "vocab_sha256": meta.get("onnxmod.vocab_sha256", ""), "shape": meta.get("onnxmod.shape", ""),
            "source_sha256": meta.get("onnxmod.source_sha256", ""), "mode": meta.get("onnxmod.mode", ""),
            "max_steps": parse_index(meta["onnxmod.max_steps"]) if meta.get("onnxmod.max_steps") else None,
            "lang_token": parse_index(meta["onnxmod.lang_token"]) if meta.get("onnxmod.lang_token") else None,
            "output_vocab_sha256": meta.get("onnxmod.output_vocab_sha256", ""),
            "ctc_blank": parse_index(meta["onnxmod.ctc_blank"]) if meta.get("onnxmod.ctc_blank") else None,
            "where": where}


def _signature_key(sig) -> tuple:
    sigs = sig if isinstance(sig, list) else [sig]
    return tuple((s["name"], s["dtype"], tuple(s["shape"][1:])) for s in sigs)  # batch size may differ


def _blank_words(info: dict) -> str:
    b = info["ctc_blank"]
    return "no CTC blank (a (rest, dominant) module)" if b is None else f"CTC blank {b}"


def check_compatible(infos: list[dict], allow_mismatch: bool = False) -> None:
    first = infos[0]
    for info in infos[1:]:
        if first["ctc_blank"] != info["ctc_blank"]:  # never overridable: the votes would not line up
            raise IncompatibleError(f"{first['where']} has {_blank_words(first)} and {info['where']} has "
                                    f"{_blank_words(info)}; the modules of one composition vote the same way")
        a, b = first["input_signature"], info["input_signature"]
        if _signature_key(a) != _signature_key(b) and not allow_mismatch:
            raise IncompatibleError(
                f"{first['where']} and {info['where']} have different input signatures ({a} vs {b})")
        oa, ob = first["output_vocab_sha256"], info["output_vocab_sha256"]
        if oa and ob and oa != ob and not allow_mismatch:
            raise IncompatibleError(
                f"{first['where']} and {info['where']} have different output vocabularies ({oa[:12]} vs {ob[:12]}); "
                f"their logits do not line up")
        va, vb = first["vocab_sha256"], info["vocab_sha256"]
        if va and vb and va != vb and not allow_mismatch:
            raise IncompatibleError(
                f"{first['where']} and {info['where']} were built for different input vocabularies "
                f"({va[:12]} vs {vb[:12]}); pass --allow-mismatch if you know they agree")


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


def _vote_head(nodes, inits, module_outputs, infos, sources):
    ranks = set()
    pairs = []
    for k, outs in enumerate(module_outputs):
        if "score" not in outs or "logits" not in outs:
            raise InputError(f"{sources[k]}: module lacks its 'score' and 'logits' outputs")
        ranks.add(len(outs["score"].type.tensor_type.shape.dim))
        pairs.append((outs["score"].name, outs["logits"].name))
    if len(ranks) != 1:
        by_rank = {}
        for k, outs in enumerate(module_outputs):
            by_rank.setdefault(len(outs["score"].type.tensor_type.shape.dim), sources[k])
        a, b = list(by_rank.values())[:2]
        raise IncompatibleError(f"{a} and {b} mix one-output and many-output shapes; they cannot vote per step")
    rank = ranks.pop()
    one = numpy_helper.from_array(np.array([1], dtype=np.int64), "onnxmod/one")
    zero = numpy_helper.from_array(np.array([0], dtype=np.int64), "onnxmod/zero")
    ids = numpy_helper.from_array(np.array([i["class_index"] for i in infos], dtype=np.int64), "onnxmod/class_ids")
    blank = infos[0].get("ctc_blank")
    if blank is not None:  # CTC: margins over the blank, and a first column of 0 that the blank wins ties with
        ids = numpy_helper.from_array(np.array([blank] + [i["class_index"] for i in infos], dtype=np.int64),
                                      "onnxmod/class_ids")
        inits.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "onnxmod/two"))
    inits = inits + [one, zero, ids]
    against = "onnxmod/zero" if blank is None else "onnxmod/two"  # rest (logit 0), or the blank (logit 2)
    dom, margins = [], []
    for k, (s, lg) in enumerate(pairs):
        nodes.append(helper.make_node("Gather", [s, "onnxmod/one"], [f"onnxmod/dominant_{k}"], axis=-1,
                                      name=f"onnxmod/dominant_{k}"))
        nodes.append(helper.make_node("Gather", [lg, "onnxmod/one"], [f"onnxmod/dom_logit_{k}"], axis=-1,
                                      name=f"onnxmod/dom_logit_{k}"))
        nodes.append(helper.make_node("Gather", [lg, against], [f"onnxmod/rest_logit_{k}"], axis=-1,
                                      name=f"onnxmod/rest_logit_{k}"))
        nodes.append(helper.make_node("Sub", [f"onnxmod/dom_logit_{k}", f"onnxmod/rest_logit_{k}"],
                                      [f"onnxmod/margin_{k}"], name=f"onnxmod/margin_{k}"))
        dom.append(f"onnxmod/dominant_{k}")
        margins.append(f"onnxmod/margin_{k}")
    nodes.append(helper.make_node("Concat", dom, [SCORES], axis=-1, name="onnxmod/scores"))
    if blank is not None:
        nodes.append(helper.make_node("Sub", [margins[0], margins[0]], ["onnxmod/blank_margin"],
                                      name="onnxmod/blank_margin"))
        margins = ["onnxmod/blank_margin"] + margins
    nodes.append(helper.make_node("Concat", margins, ["onnxmod/margins"], axis=-1, name="onnxmod/margins"))
    nodes.append(helper.make_node("ArgMax", ["onnxmod/margins"], ["onnxmod/argmax"], axis=-1, keepdims=0,
                                  name="onnxmod/argmax"))
    nodes.append(helper.make_node("Gather", ["onnxmod/class_ids", "onnxmod/argmax"], [LABEL], axis=0,
                                  name="onnxmod/label"))
    batch = [None] * (rank - 1)
    outputs = [helper.make_tensor_value_info(LABEL, onnx.TensorProto.INT64, batch),
               helper.make_tensor_value_info(SCORES, onnx.TensorProto.FLOAT, batch + [len(pairs)])]
    return nodes, inits, outputs


def _route_head(nodes, inits, module_outputs, infos, in_vis, sources):
    """Each sentence runs through its language's module only (``tgt_in[:, 0]`` is the language
    token): per module, the rows of its language are gathered from every input and the module
    runs on them; the answers are concatenated and each batch row gathers its own back — so the
    composition costs one module pass per sentence, not one per module (measured on en_frdeit at
    batch 256: 19.8 ms against 125 ms when every module read every sentence; the model: 16.2 ms).
    Rows of a language no module serves get zeros.

    onnxruntime's recurrent ops cannot run an empty batch, so each module also runs on one spare
    row (row 0) whose answer is never read."""
    if len(in_vis) < 2:
        raise InputError(f"{sources[0]}: translator modules need two inputs (source, target prefix)")
    tokens = []
    for k, info in enumerate(infos):
        if info.get("lang_token") is None:
            raise InputError(f"{sources[k]}: translator module lacks 'onnxmod.lang_token' metadata")
        tokens.append(info["lang_token"])
    if len(set(tokens)) != len(tokens):
        raise IncompatibleError("two translator modules serve the same target-language token")
    tgt = in_vis[1].name
    c = {"first": np.array(0, np.int64), "zero1": np.array([0], np.int64), "one1": np.array([1], np.int64),
         "flat": np.array([-1], np.int64), "zero_f": np.array(0, np.float32), "step": np.array(1, np.int64)}
    inits = inits + [numpy_helper.from_array(v, f"onnxmod/{n}") for n, v in c.items()]

    def node(op, ins, outs, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=outs[0], **attrs))

    node("Gather", [tgt, "onnxmod/first"], ["onnxmod/lang"], axis=1)
    node("Shape", [tgt], ["onnxmod/tgt_shape"])
    node("Slice", ["onnxmod/tgt_shape", "onnxmod/zero1", "onnxmod/one1"], ["onnxmod/batch"])
    for k, outs in enumerate(module_outputs):
        if "logits" not in outs:
            raise InputError(f"{sources[k]}: translator module lacks its 'logits' output")
    served, logits = [], []
    for k, (outs, tok) in enumerate(zip(module_outputs, tokens)):
        p = f"onnxmod/route_{k}"
        inits.append(numpy_helper.from_array(np.array(tok, dtype=np.int64), f"{p}/token"))
        node("Equal", ["onnxmod/lang", f"{p}/token"], [f"{p}/is"])
        node("NonZero", [f"{p}/is"], [f"{p}/nonzero"])
        node("Reshape", [f"{p}/nonzero", "onnxmod/flat"], [f"{p}/rows"])
        node("Concat", [f"{p}/rows", "onnxmod/zero1"], [f"{p}/read"], axis=0)  # + the spare row
        node("Concat", [f"{p}/rows", "onnxmod/batch"], [f"{p}/serves"], axis=0)  # the spare answers row B
        for vi in in_vis:
            node("Gather", [vi.name, f"{p}/read"], [f"m{k}/{vi.name}"], axis=0)
        served.append(f"{p}/serves")
        logits.append(outs["logits"].name)
    # every module's answers one after another, then one zero row; row r of the batch reads the
    # answer of the module that served it (or the zero row): one Concat and one Gather in all
    node("Slice", [logits[0], "onnxmod/zero1", "onnxmod/one1"], ["onnxmod/one_answer"])
    node("Mul", ["onnxmod/one_answer", "onnxmod/zero_f"], ["onnxmod/zero_row"])
    node("Concat", logits + ["onnxmod/zero_row"], ["onnxmod/answers"], axis=0)
    node("Concat", served, ["onnxmod/served"], axis=0)  # which batch row each answer belongs to
    node("Shape", ["onnxmod/served"], ["onnxmod/answers_n"])  # = the zero row's index
    node("Add", ["onnxmod/batch", "onnxmod/one1"], ["onnxmod/batch_1"])
    node("Expand", ["onnxmod/answers_n", "onnxmod/batch_1"], ["onnxmod/unserved"])
    node("Squeeze", ["onnxmod/answers_n", "onnxmod/zero1"], ["onnxmod/answers_count"])
    node("Range", ["onnxmod/first", "onnxmod/answers_count", "onnxmod/step"], ["onnxmod/positions"])
    node("ScatterElements", ["onnxmod/unserved", "onnxmod/served", "onnxmod/positions"], ["onnxmod/where"], axis=0)
    node("Slice", ["onnxmod/where", "onnxmod/zero1", "onnxmod/batch"], ["onnxmod/pick"])
    node("Gather", ["onnxmod/answers", "onnxmod/pick"], ["logits"], axis=0)
    outputs = [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [None, None, None])]
    return nodes, inits, outputs


def resolve_duplicates(modules: list[onnx.ModelProto], sources: list[str], prefer=()) -> tuple[list, list]:
    """Drop duplicate-class modules the user said lose (``prefer`` names the winners' sources)."""
    infos = [module_info(m, s) for m, s in zip(modules, sources)]
    prefer = {str(p) for p in prefer}
    by_class: dict[tuple, list[int]] = {}
    for i, info in enumerate(infos):
        by_class.setdefault((info["class_name"], info["class_index"]), []).append(i)
    keep = []
    for key, idx in by_class.items():
        if len(idx) == 1:
            keep.append(idx[0])
            continue
        winners = [i for i in idx if sources[i] in prefer]
        if len(winners) != 1:
            names = " and ".join(sources[i] for i in idx)
            raise IncompatibleError(f"{names} are all modules of class {key[0]!r}; say which wins with "
                                    f"--prefer MODULE (or use replace)")
        keep.append(winners[0])
    keep.sort()
    return [modules[i] for i in keep], [sources[i] for i in keep]


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
        meta = {"onnxmod.kind": "composition", "onnxmod.version": __version__,
                "onnxmod.classes": json.dumps(classes, sort_keys=True),
                "onnxmod.input_signature": json.dumps(infos[0]["input_signature"], sort_keys=True),
                "onnxmod.vocab_sha256": infos[0]["vocab_sha256"], "onnxmod.shape": infos[0]["shape"]}
        if infos[0]["ctc_blank"] is not None:
            meta["onnxmod.ctc_blank"] = str(infos[0]["ctc_blank"])
        meta["onnxmod.modules"] = json.dumps(self.metas, sort_keys=True)
        # per module, in order: [its output name, the tensor that holds it here (shared nodes resolved)]
        meta["onnxmod.module_outputs"] = json.dumps(resolved)
        limits = [i["max_steps"] for i in infos if i["max_steps"]]
        if limits:
            meta["onnxmod.max_steps"] = str(min(limits))
        for k, v in sorted(meta.items()):
            proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
        check(proto)
        return proto


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


def split(composed: onnx.ModelProto, where: str = "composition", only=None) -> list[onnx.ModelProto]:
    """The modules a composition was built from, as standalone ModelProtos (inverse of compose);
    ``only``: the positions of the modules wanted (default: all)."""
    meta = {p.key: p.value for p in composed.metadata_props}
    if meta.get("onnxmod.kind") == "fused":
        raise IncompatibleError(f"{where}: a fused composition runs one shared trunk and holds no separable modules; "
                                f"split or replace the composed.onnx written beside it")
    if meta.get("onnxmod.kind") != "composition":
        raise InputError(f"{where}: not an onnxmod composition (metadata 'onnxmod.kind' is {meta.get('onnxmod.kind')!r})")
    try:
        metas = json.loads(meta["onnxmod.modules"])
    except (KeyError, ValueError):
        raise InputError(f"{where}: composition metadata lacks its modules' identities ('onnxmod.modules')")
    g = composed.graph
    inits = {i.name: i for i in g.initializer}
    outputs_of = json.loads(meta.get("onnxmod.module_outputs", "[]"))
    out = []
    producer = {o: n for n in g.node for o in n.output}
    order = {id(n): i for i, n in enumerate(g.node)}
    for k, mmeta in enumerate(metas):
        if only is not None and k not in only:
            continue
        prefix = f"m{k}/"
        pairs = outputs_of[k] if k < len(outputs_of) else []
        if not pairs:
            raise InputError(f"{where}: composition metadata lacks module {k}'s outputs ('onnxmod.module_outputs')")
        wanted = [t for _, t in pairs]
        own_inputs = {prefix + i.name for i in g.input}  # a routed module's inputs (fed by the router)
        # every node the module's outputs depend on (shared nodes included), in graph order
        needed, stack = {}, list(wanted)
        while stack:
            t = stack.pop()
            n = None if t in own_inputs else producer.get(t)
            if n is None or id(n) in needed:
                continue
            needed[id(n)] = n
            stack.extend(n.input)
        nodes = sorted(needed.values(), key=lambda n: order[id(n)])

        def strip(name: str) -> str:
            return name[len(prefix):] if name.startswith(prefix) else name
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
        known = {v.name: v for v in list(g.value_info) + list(g.output)}
        out_vi = []
        for name, tensor in pairs:
            if tensor not in known:
                raise InputError(f"{where}: composition lacks the type of module output {tensor!r}")
            if strip(tensor) != name:  # the module's output was computed by a node it shares
                new_nodes.append(helper.make_node("Identity", [strip(tensor)], [name], name=f"onnxmod/output_{name}"))
            v = onnx.ValueInfoProto()
            v.CopyFrom(known[tensor])
            v.name = name
            out_vi.append(v)
        graph = helper.make_graph(new_nodes, "onnxmod_module", list(g.input), out_vi, initializer=new_inits)
        proto = helper.make_model(graph, opset_imports=list(composed.opset_import),
                                  producer_name="onnxmod", producer_version=__version__)
        proto.ir_version = composed.ir_version
        for key, v in sorted(mmeta.items()):
            proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=v))
        out.append(proto)
    return out


def module_position(composed: onnx.ModelProto, class_name, where: str = "composition") -> int:
    """The position of the module of ``class_name`` (its name first, else its index) in a composition."""
    infos = [{"class_index": c["class_index"], "class_name": c["class_name"]}
             for c in json.loads({p.key: p.value for p in composed.metadata_props}.get("onnxmod.classes", "[]"))]
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
