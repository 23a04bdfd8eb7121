"""Whether a decomposition writes one standalone file per module (``--modules``).

A module keeps whole what it does not slice (a CNN front-end, an embedding), so K standalone
modules of a big model cost about K copies of it on disk: 67 characters of a 54 MB OCR model would
take gigabytes. ``composed.onnx`` stores what its modules share once, and ``onnxmod split
COMPOSED.onnx --class C`` writes any module from it on request, identical in its outputs to the
standalone file. Choices:

* ``standalone``: every module as ``modules/<class>.onnx`` (and the composition);
* ``none``: the composition, ``fused.onnx`` where there is one, and the reports, no module files;
* ``auto`` (default): ``standalone`` while the module files would total at most ``FACTOR`` times
  the model's size or ``FLOOR`` bytes, whichever is larger; otherwise ``none``, said in one
  warning line (how large they would be, and how to get them).
"""
from __future__ import annotations

import onnx

from .errors import UsageError

CHOICES = ("auto", "standalone", "none")
FACTOR = 8  # module files may total this many times the model's size ...
FLOOR = 256 << 20  # ... or this many bytes, whichever is larger


def check(choice: str) -> str:
    if choice not in CHOICES:
        raise UsageError(f"--modules {choice!r} is not one of {', '.join(CHOICES)}")
    return choice


def budget(model_bytes: int) -> int:
    """The most bytes ``auto`` lets standalone module files take."""
    return max(FACTOR * int(model_bytes), FLOOR)


def decide(choice: str, module_bytes: int, model_bytes: int, count: int, out) -> tuple[bool, str | None]:
    """(write standalone module files?, the warning line when ``auto`` decides not to), decided
    before any module is built from ``module_bytes`` (``estimate``)."""
    if check(choice) != "auto":
        return choice == "standalone", None
    if module_bytes <= budget(model_bytes):
        return True, None
    return False, (f"{count} module files would take {module_bytes / 2**20:,.0f} MB "
                   f"({module_bytes / max(model_bytes, 1):.0f}x the model): writing the composition only "
                   f"(what modules share is stored once); "
                   f"`onnxmod split {out}/composed.onnx --class C --out C.onnx` writes one module, "
                   f"--modules standalone writes them all")


def parameter_count(proto) -> int:
    """Parameters of a ModelProto, counted without copying any weight (``graph.count_parameters_proto``)."""
    from .graph import count_parameters_proto

    return count_parameters_proto(proto)


class StoredModule:
    """A built module as what the decomposition still needs of it: its serialized bytes (when its
    file will be written; about half a ModelProto's memory) or none, its parameter count and
    size. ``save_model_atomic`` writes it like a ModelProto."""

    def __init__(self, proto, keep: bool):
        self.params = parameter_count(proto)
        self.size = proto.ByteSize()
        self.data = proto.SerializeToString(deterministic=True) if keep else None

    def ByteSize(self) -> int:  # noqa: N802 (the ModelProto name)
        return self.size

    def SerializeToString(self, deterministic: bool = True) -> bytes:  # noqa: N802
        if self.data is None:
            raise RuntimeError("this module's bytes were not kept (--modules none)")
        return self.data

    def proto(self):
        return onnx.ModelProto.FromString(self.SerializeToString())


def estimate(model, count: int) -> int:
    """Bytes ``count`` standalone modules of ``model`` (a ``graph.Model``) take at most: the model
    each, less its head's classes but three (a module keeps rest, dominant and the blank). The head's
    weight is read as stored: a constant, or the integers a ``DequantizeLinear`` reads (QDQ)."""
    from .quantized import stored

    w = stored(model.head.node, 1).raw
    C = max(model.num_classes, 1)
    head = w.nbytes * max(C - 3, 0) / C
    return int(count * max(model.original.ByteSize() - head, 0))
