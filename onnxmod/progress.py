"""Progress bars for long steps: tqdm on stderr, drawn only for a step that lasts more than a second.

Off unless turned on (``with progress.shown(True)``): the CLI turns bars on when stderr is a
terminal and neither ``--json`` nor ``--quiet`` was given, so library callers, pipes and JSON
output never see one. Each onnxruntime pass over a data set (``runtime.batches``) and each greedy
decoding (``seq2seq.greedy_decode``) is one bar, labelled by the innermost ``step(name)``.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys

from tqdm.auto import tqdm

_state = {"on": False, "step": "run"}


def on() -> bool:
    return _state["on"]


@contextlib.contextmanager
def shown(flag: bool):
    """Turn bars on (or off) for the duration of the block."""
    old = _state["on"]
    _state["on"] = bool(flag)
    try:
        yield
    finally:
        _state["on"] = old


@contextlib.contextmanager
def step(name: str):
    """Label the bars drawn inside the block (e.g. "guard", "evaluate")."""
    old = _state["step"]
    _state["step"] = name
    try:
        yield
    finally:
        _state["step"] = old


def bar(total: int, unit: str = "rows", desc: str | None = None):
    """A bar that appears after one second (never, when bars are off)."""
    return tqdm(total=total, unit=unit, desc=desc or _state["step"], delay=1.0, disable=not _state["on"],
                leave=False, file=sys.stderr, **(_size() if _state["on"] else {}))


def each(items, unit: str):
    """``items``, one bar step each (e.g. the modules being built)."""
    items = list(items)
    with bar(len(items), unit=unit) as b:
        for x in items:
            yield x
            b.update()


def _size() -> dict:
    """The terminal's size; 80 x 24 where it reports none (tqdm draws nothing on a 0 x 0 terminal)."""
    try:
        cols, rows = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        cols, rows = 0, 0
    return {"ncols": cols or 80, "nrows": rows or 24}


def labelled(name: str):
    """Decorator: the function's bars are labelled ``name``."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*a, **kw):
            with step(name):
                return fn(*a, **kw)
        return inner
    return wrap
