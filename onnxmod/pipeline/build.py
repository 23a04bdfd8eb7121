"""Building a decomposition's modules and their composition: at the configured removal cap, behind
the guard, or as small as the size search certifies (``search``); and the fused composition when
one graph can hold every module."""
from __future__ import annotations

import logging
import warnings

from .. import module_files as _module_files
from .. import progress as _progress
from .. import search
from ..compose import Stitcher, module_info
from ..fuse import fuse, why_not_fusable
from ..graph import count_parameters_proto
from ..modularize import build_module

_log = logging.getLogger("onnxmod")


def build(model, concerns, vocab, digest, unrolled="output", means=None):
    """Every concern's module and their composition, built one module at a time
    (``compose.Stitcher``): each module is then kept only as a ``module_files.StoredModule`` (its
    bytes when its file will be written, ``model.keep_module_files``), so building K modules of a
    big model holds one module and the composition, not K modules."""
    keep = getattr(model, "keep_module_files", True)
    stitch = Stitcher()
    modules = []
    for c in _progress.each(concerns, "modules"):
        proto = build_module(model, c, vocab, digest, unrolled, means)
        modules.append(_module_files.StoredModule(proto, keep))
        stitch.add(proto, module_info(proto, f"{c.class_name} module"), inplace=True)
        del proto
    _log.info("composing %s modules", f"{len(modules):,}")
    return modules, stitch.finish()


def modules_for(model, run, o, vocab, digest) -> tuple:
    """The modules and composition of a decomposition: ``(concerns, modules, composition, the
    report's size_search entry or None)``, from the concerns identified (``identify.Identified``)
    and the options (``load.Options``)."""
    config, means = o.config, run.means(o.config)
    if o.max_loss is not None:
        return _size_searched(model, run, config, o.max_loss, vocab, digest, means, o.threads)
    if o.guarded:
        concerns, modules, composed, size = search.guard_accuracy(
            model, run.scores, config, run.x_val, run.y_val,
            lambda cs: build(model, cs, vocab, digest, config.unrolled, means), o.threads, run.metric, run.judged)
        size["heldout_split"] = run.heldout_split
        return concerns, modules, composed, size
    concerns = [s.concern(config) for s in run.scores]
    _log.info("building %s modules (removal cap %g) and their composition", f"{len(concerns):,}",
              config.removal_cap)
    modules, composed = build(model, concerns, vocab, digest, config.unrolled, means)
    return concerns, modules, composed, None


def _size_searched(model, run, config, max_loss, vocab, digest, means, threads) -> tuple:
    """``search.size_search`` within ``max_loss`` points, then the reference cap's composition
    built for comparison: a searched composition bigger than it is said in one warning line."""
    concerns, modules, composed, size = search.size_search(
        model, run.scores, config, max_loss / 100, run.x_val, run.y_val,
        lambda c: build_module(model, c, vocab, digest, config.unrolled, means), threads,
        run.info["token_counts"], run.metric, run.judged)
    size["heldout_split"] = run.heldout_split
    size["max_loss_points"] = max_loss
    _, reference = build(model, [s.concern(config) for s in run.scores], vocab, digest, config.unrolled, means)
    size["reference_cap_params"] = count_parameters_proto(reference)
    if count_parameters_proto(composed) > size["reference_cap_params"] and not search.removes_nothing(concerns):
        warnings.warn(f"--max-loss {max_loss}: the composition ({count_parameters_proto(composed):,} parameters) "
                      f"is bigger than the default removal cap's ({size['reference_cap_params']:,}): the search "
                      f"starts from modules that keep every unit and removes only what the validation split "
                      f"certifies within {max_loss} points", stacklevel=1)
    return concerns, modules, composed, size


def fused(model, concerns, vocab, digest, compensated: bool) -> tuple:
    """The fused composition (one graph for every module), or None and why not."""
    reason = why_not_fusable(model, concerns, compensated=compensated)
    if reason:
        _log.info("no fused.onnx: %s", reason)
    else:
        _log.info("fusing %s modules into fused.onnx", len(concerns))
    return (None if reason else fuse(model, concerns, vocab, digest)), reason
