"""What a composition adds after its modules: the vote of classifier modules (``label`` and
``scores``, per step for many-output modules, over the blank for CTC heads) and the router of
translator modules (each sentence through its language's module)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import IncompatibleError, InputError
from ..io import keys

LABEL, SCORES = "label", "scores"


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
            raise InputError(f"{sources[k]}: translator module lacks {keys.LANG_TOKEN!r} metadata")
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
