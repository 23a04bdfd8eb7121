"""A module's identity as its metadata states it, and which modules may vote together: the same
input signature, vocabularies and CTC blank, one module per class (or a stated winner)."""
from __future__ import annotations

import json

import onnx

from ..errors import IncompatibleError, InputError
from ..io import check_metadata_map, parse_index


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
