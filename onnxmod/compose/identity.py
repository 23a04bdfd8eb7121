"""A module's identity as its metadata states it, and which modules may vote together: the same
input signature, vocabularies and CTC blank, one module per class (or a stated winner)."""
from __future__ import annotations

import json

import onnx

from ..errors import IncompatibleError, InputError
from ..io import check_metadata_map, keys, parse_index


def module_info(proto: onnx.ModelProto, where: str) -> dict:
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(keys.KIND) != "module":
        raise InputError(f"{where}: not an onnxmod module (metadata {keys.KIND!r} is {meta.get(keys.KIND)!r})")
    check_metadata_map(meta, where, nested=True)  # every field read below, checked where it is read
    return {"class_index": parse_index(meta[keys.CLASS_INDEX]), "class_name": meta[keys.CLASS_NAME],
            "input_signature": json.loads(meta[keys.INPUT_SIGNATURE]),
            "vocab_sha256": meta.get(keys.VOCAB_SHA256, ""), "shape": meta.get(keys.SHAPE, ""),
            "source_sha256": meta.get(keys.SOURCE_SHA256, ""), "mode": meta.get(keys.MODE, ""),
            "max_steps": parse_index(meta[keys.MAX_STEPS]) if meta.get(keys.MAX_STEPS) else None,
            "lang_token": parse_index(meta[keys.LANG_TOKEN]) if meta.get(keys.LANG_TOKEN) else None,
            "output_vocab_sha256": meta.get(keys.OUTPUT_VOCAB_SHA256, ""),
            "ctc_blank": parse_index(meta[keys.CTC_BLANK]) if meta.get(keys.CTC_BLANK) else None,
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
