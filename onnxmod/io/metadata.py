"""The ``onnxmod.*`` metadata of modules and compositions, checked once when a file is read."""
from __future__ import annotations

import re

import onnx

from ..errors import InputError
from . import keys

MAX_CLASS_INDEX = 1 << 16  # one module per class: far beyond any model onnxmod decomposes
KINDS = ("model", "module", "composition", "fused")


def _is_int(v, lo: int, hi: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v < hi)


_INDEX = re.compile(r"0|[1-9][0-9]{0,17}")


def parse_index(text) -> int | None:
    """A metadata integer as onnxmod writes it: plain decimal digits, no sign, no leading zero,
    no spaces or underscores (``int()`` would take ``" 3 "``, ``"1_000"``, 30 digits)."""
    return int(text) if isinstance(text, str) and _INDEX.fullmatch(text) else None


def _json(where: str, key: str, text: str):
    import json

    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise InputError(f"{where}: metadata {key!r} is not valid JSON ({text[:40]!r})") from None


def _signature_ok(sig) -> bool:
    sigs = sig if isinstance(sig, list) else [sig]
    return bool(sigs) and all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("dtype"), str)
        and isinstance(s.get("shape"), list) and all(d is None or _is_int(d, 0) or isinstance(d, str)
                                                     for d in s["shape"]) for s in sigs)


def check_metadata(proto: onnx.ModelProto, where: str) -> None:
    """The ``onnxmod.*`` metadata that modules and compositions carry, checked once at the door so
    composing, splitting and evaluating can trust it (hand-edited or damaged files are refused here
    with the key named, instead of failing somewhere later)."""
    check_metadata_map({e.key: e.value for e in proto.metadata_props}, where)


def check_metadata_map(meta: dict, where: str, nested: bool = False) -> None:
    """``check_metadata`` on a key/value map: a file's, or one module's inside a composition's
    ``onnxmod.modules`` (``nested``: it must then be a module's, with its identity complete)."""
    kind = meta.get(keys.KIND)
    if kind is not None and kind not in KINDS:
        raise InputError(f"{where}: metadata {keys.KIND!r} is {str(kind)[:40]!r}, expected one of {', '.join(KINDS)}")
    if nested:
        if kind != "module":
            raise InputError(f"{where}: metadata {keys.KIND!r} is {kind!r}, expected 'module'")
        for key in (keys.CLASS_INDEX, keys.CLASS_NAME, keys.INPUT_SIGNATURE):
            if key not in meta:
                raise InputError(f"{where}: metadata {key!r} is missing")

    def integer(key, lo, hi=None):
        if key in meta:
            v = parse_index(meta[key])
            if v is None or not _is_int(v, lo, hi):
                bound = f"{lo}..{hi - 1}" if hi else f">= {lo}"
                raise InputError(f"{where}: metadata {key!r} is {meta[key][:40]!r}, expected a plain decimal "
                                 f"integer {bound}")

    integer(keys.CLASS_INDEX, 0, MAX_CLASS_INDEX)
    integer(keys.MAX_STEPS, 1, 1 << 31)
    integer(keys.LANG_TOKEN, 0, 1 << 31)
    integer(keys.CTC_BLANK, 0, MAX_CLASS_INDEX)
    if keys.INPUT_SIGNATURE in meta:
        if not _signature_ok(_json(where, keys.INPUT_SIGNATURE, meta[keys.INPUT_SIGNATURE])):
            raise InputError(f"{where}: metadata {keys.INPUT_SIGNATURE!r} is malformed (expected name, dtype and "
                             f"shape per input)")
    if keys.CLASSES in meta:
        classes = _json(where, keys.CLASSES, meta[keys.CLASSES])
        if not isinstance(classes, list) or not all(
                isinstance(c, dict) and _is_int(c.get("class_index"), 0, MAX_CLASS_INDEX)
                and isinstance(c.get("class_name"), str) for c in classes):
            raise InputError(f"{where}: metadata {keys.CLASSES!r} is malformed (expected a list of "
                             f"class_index/class_name entries)")
    if keys.MODULES in meta:
        mods = _json(where, keys.MODULES, meta[keys.MODULES])
        if nested or not isinstance(mods, list) or not all(
                isinstance(m, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
                for m in mods):
            raise InputError(f"{where}: metadata {keys.MODULES!r} is malformed "
                             f"(expected one key/value map per module)")
        for k, m in enumerate(mods):
            check_metadata_map(m, f"{where}: metadata {keys.MODULES!r} entry {k}", nested=True)
    if keys.MODULE_OUTPUTS in meta:
        outs = _json(where, keys.MODULE_OUTPUTS, meta[keys.MODULE_OUTPUTS])
        if not isinstance(outs, list) or not all(
                isinstance(o, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p)
                                            for p in o) for o in outs):
            raise InputError(f"{where}: metadata {keys.MODULE_OUTPUTS!r} is malformed "
                             f"(expected per module a list of [output name, tensor name] pairs)")
    if keys.CLASS_NAMES in meta:
        names = _json(where, keys.CLASS_NAMES, meta[keys.CLASS_NAMES])
        if not isinstance(names, list):
            raise InputError(f"{where}: metadata {keys.CLASS_NAMES!r} is not a list")
