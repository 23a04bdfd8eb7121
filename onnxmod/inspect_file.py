"""What a file is, for ``inspect``: a model (its recurrent ops, its I/O, whether it decomposes and
why not), a module (its class, source model, mode and kept units) or a composition (its modules)."""
from __future__ import annotations

import json

from .errors import InputError, UnsupportedModelError
from .graph import Model, count_parameters_proto, describe_leniently
from .io import keys, load_onnx


def inspect(path) -> dict:
    """What a file is: a model (its recurrent ops and I/O shape), a module or a composition."""
    proto = load_onnx(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    k = meta.get(keys.KIND, "model")
    if k == "model":
        try:
            m = Model(proto, source=str(path))
            from .unrolled import why_not_unrolled

            described = {**m.describe(), "decompose": {"ok": True, "unrolled": why_not_unrolled(m) or True}}
        except (UnsupportedModelError, InputError) as exc:  # readable, but not decomposable: say why
            described = {**describe_leniently(proto, str(path)), "decompose": {"ok": False, "why_not": str(exc)}}
        return {"kind": "model", **described, "metadata": meta}
    out = {"kind": k, "source": str(path), "parameters": count_parameters_proto(proto), "metadata": {}}
    for key, v in meta.items():
        out["metadata"][key] = json_value(v)
    if k == "module":
        out["modules"] = [module_summary(meta)]
    elif isinstance(out["metadata"].get(keys.MODULES), list):
        out["modules"] = [module_summary(m) for m in out["metadata"][keys.MODULES] if isinstance(m, dict)]
        # a composition's per-module metadata holds JSON strings: decoded, --json prints no escaped JSON
        out["metadata"][keys.MODULES] = [{key: json_value(v) for key, v in m.items()} if isinstance(m, dict)
                                         else m for m in out["metadata"][keys.MODULES]]
    return out


def json_value(v):
    """A metadata value: decoded when it is a JSON list or object, else as it is."""
    try:
        return json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v
    except ValueError:
        return v


def module_summary(meta: dict) -> dict:
    """One module's identity for ``inspect``: class, source model, mode, kept/total units per layer."""
    concern = json_value(meta.get(keys.CONCERN, "{}"))
    layers = concern.get("layers", []) if isinstance(concern, dict) else []
    kept = {}
    for layer in layers:
        k = layer.get("kept")
        kept[layer.get("op")] = round(sum(k) / len(k), 1) if isinstance(k, list) and k else k
    digest = meta.get(keys.SOURCE_SHA256) or ""
    idx = meta.get(keys.CLASS_INDEX)
    return {"class_index": int(idx) if str(idx).isdigit() else idx, "class_name": meta.get(keys.CLASS_NAME),
            "source_model": f"sha256 {digest[:12]}" if digest else None, "mode": meta.get(keys.MODE),
            "kept_units": kept, "units": {layer.get("op"): layer.get("units") for layer in layers},
            "unrolled": any(isinstance(layer.get("kept"), list) for layer in layers),
            "ctc_blank": int(meta[keys.CTC_BLANK]) if str(meta.get(keys.CTC_BLANK, "")).isdigit() else None}
