"""Which classes a decomposition builds modules for (``--classes``), and what it says about the rest.

A model's head may score thousands of classes (an OCR model: 8,210 characters) while the data
holds a few dozen. Modules are built for the classes asked for (default: all) that have training
samples; the others get no module and one warning line says how many. Negatives come from every
class present either way (``sampling``). Scores of a subset decomposition are taken on the samples
(or steps) of its classes, as ``evaluate`` scores a subset composition.
"""
from __future__ import annotations

import numpy as np

from .errors import UsageError

SHOWN = 8  # class names a warning line shows before "…"
LIST_ALL = 256  # evaluate lists every class of a head up to this wide; beyond, the classes with test samples


def parse(text: str | None) -> list[str] | None:
    """``"a,b, 3"`` -> ``["a", "b", "3"]``; None stays None."""
    if text is None:
        return None
    return [c.strip() for c in str(text).split(",") if c.strip()]


def class_id(c, names: list[str], C: int, where) -> int:
    """A class given by name (first) or index, as its index; a one-line UsageError otherwise."""
    if str(c) in names:
        return names.index(str(c))
    if str(c).isdigit() and int(c) < C:
        return int(c)
    shown = ", ".join(names[:SHOWN]) + (", …" if len(names) > SHOWN else "")
    raise UsageError(f"{where}: --classes: no class {c!r} (the model's {C:,} classes: {shown})")


def select(classes, names: list[str], C: int, where, exclude=()) -> list[int] | None:
    """``classes`` (names or indices, or None for all) as sorted unique indices; None means all.
    ``exclude``: classes that never get a module (a CTC head's blank)."""
    if classes is None:
        return None if not exclude else [c for c in range(C) if c not in set(exclude)]
    if isinstance(classes, str):
        classes = parse(classes)
    ids = sorted({class_id(c, names, C, where) for c in classes})
    if not ids:
        raise UsageError(f"{where}: --classes names no class")
    bad = [names[c] for c in ids if c in set(exclude)]
    if bad:
        raise UsageError(f"{where}: --classes: {bad[0]!r} is the CTC blank, every module's background; it gets no "
                         f"module of its own")
    return ids


def skipped_line(path, skipped: list[str], asked: int) -> str | None:
    """One warning line for the classes that get no module for lack of training samples."""
    if not skipped:
        return None
    if len(skipped) == 1:
        return f"{path}: class {skipped[0]!r} has no training samples; no module is built for it"
    shown = ", ".join(repr(s) for s in skipped[:SHOWN]) + (", …" if len(skipped) > SHOWN else "")
    return (f"{path}: {len(skipped):,} of {asked:,} classes have no training samples; no module is built for them "
            f"({shown}; report.json lists them under 'skipped')")


def only(y: np.ndarray | None, selected) -> np.ndarray | None:
    """``y`` with every label outside ``selected`` set to -1 (not scored); unchanged for None."""
    if y is None or selected is None:
        return y
    return np.where(np.isin(y, np.asarray(list(selected), dtype=np.int64)), y, -1)
