"""onnxmod.text: control characters escaped in everything printed."""
from onnxmod.text import escape, printable


def test_escape_every_control_character():
    assert escape("a\x1b[31mb\nc\rd\te\x7f\x9b\u202e") == "a\\x1b[31mb\\x0ac\\x0dd\\x09e\\x7f\\x9b\\u202e"
    assert escape("plain — ünïcode 数学") == "plain — ünïcode 数学"


def test_printable_escapes_keys_and_values_recursively():
    got = printable({"k\x1b": ["v\n", {"x": "\r"}], "n": 3, "t": ("\x00",)})
    assert got == {"k\\x1b": ["v\\x0a", {"x": "\\x0d"}], "n": 3, "t": ("\\x00",)}
