"""Text from files made safe to print: control characters (ANSI escapes, carriage returns, line
breaks, C1 controls, bidirectional overrides) in class names, paths or metadata would otherwise
reach the terminal raw, and could forge an ``onnxmod: error:`` line or rewrite what is shown."""
from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _code(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape(text) -> str:
    """``text`` with every control character written as ``\\xNN`` / ``\\uNNNN`` (one line, always)."""
    return _CONTROL.sub(_code, str(text))


def printable(obj):
    """``obj`` (dicts, lists, strings, numbers) with every string, keys included, ``escape``d."""
    if isinstance(obj, str):
        return escape(obj)
    if isinstance(obj, dict):
        return {printable(k): printable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(printable(v) for v in obj)
    return obj
