"""Composition (SPEC §3, step 6): modules stitched into one ONNX graph that votes.

All modules read the same graph input; each module's dominant probability ``score[..., 1]`` is
stacked into ``scores`` ``[..., K]`` and ``label`` is the class id of the highest one (per step for
many-output modules). Modules of a CTC head (``onnxmod.ctc_blank``) vote per step over the blank
(``ctc``): ``label`` is the blank unless some module's dominant − blank log-odds is positive. The
vote compares log-odds ``logits[..., 1] - logits[..., 0]``, which rank exactly as the probabilities
do but never tie at a saturated 1.0. One graph holding K native recurrent stacks runs much faster
than K sessions (SPEC §6). Identical initializers (e.g. an embedding table shared by modules of one
model) are stored once.

``identity``: a module's identity and which modules may vote together; ``graphs``: the graph
pieces (prefixed names, dependency order, shared nodes); ``heads``: the vote and the translators'
router; ``stitch``: ``compose`` and the ``Stitcher`` that builds a composition one module at a
time, and ``check``; ``replace_split``: ``split``, ``module_position`` and ``replace``. Everything is
importable from ``onnxmod.compose`` itself.
"""
from __future__ import annotations

from .heads import LABEL, SCORES
from .identity import _signature_key, check_compatible, module_info, resolve_duplicates
from .replace_split import module_position, replace, split
from .stitch import FULL_CHECK_BYTES, Stitcher, check, compose

__all__ = [
    "FULL_CHECK_BYTES", "LABEL", "SCORES", "Stitcher", "_signature_key", "check", "check_compatible", "compose",
    "module_info", "module_position", "replace", "resolve_duplicates", "split",
]
