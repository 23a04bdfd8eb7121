"""What the guard and the size search decided, checked and said: a decomposition that removes
nothing (for whatever reason), and each class's own loss (the size search bounds it, every report
flags a class whose test loss lies far beyond the bound).

A composition can look fine overall while one class collapses: on Brown POS ``lstm1`` at
``--max-loss 1.0`` the overall loss was 1.03 points while ``PRT`` lost 15.9. And a decomposition
can silently remove nothing: a removal cap below one unit of every layer, a guard that backed off,
scores that mark no unit. Both are said here, once, in one ``onnxmod: warning:`` line each.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

FLAG_Z = 2.0  # a class is flagged when its test loss exceeds the bound by more than this many standard errors


# --------------------------------------------------------------------------------------------
# a decomposition that removes nothing
# --------------------------------------------------------------------------------------------
def removes_nothing(concerns) -> bool:
    """Every concern keeps every unit (at every step), every embedding row and every feature: each
    module computes what the model computes."""
    return all(bool(np.all(k)) for c in concerns for k in c.keep.values()) and all(
        (c.vocabulary is None or bool(np.all(c.vocabulary))) and c.embedding_rank is None for c in concerns)


def _layers(model, concerns) -> list[tuple[str, int]]:
    """(layer name, units) of every recurrent layer."""
    return [(op.name, int(concerns[0].keep[op.index].shape[-1])) for op in model.recurrent]


def why_nothing_removed(model, concerns, removal_cap: float, size: dict | None) -> str:
    """Why no module lost a unit, in words: the guard backed off to cap 0, the cap (as chosen) is
    below one unit of every layer, no unit's concern scores mark it, or the size search certified
    nothing."""
    whole = "modules are the whole model (Jaccard 1.000)"
    size = size or {}
    if size.get("kind") == "size search":
        return (f"the size search certified no removal within --max-loss {size.get('max_loss_points')} points on "
                f"the validation split: {whole}; a larger --max-loss, or the default removal cap without it, "
                f"removes units")
    cap = size["cap"] if size.get("kind") == "guard" else removal_cap
    if size.get("kind") == "guard" and cap == 0 and removal_cap > 0:
        what = ("mean BLEU on the validation pairs" if "heldout_model_bleu" in size
                else "points of validation accuracy")
        return (f"the guard backed off to removal cap 0 (the composition lost more than {size['tolerance_points']} "
                f"{what} at every larger cap): {whole}; --no-guard or a larger --guard removes units anyway")
    guarded = size.get("kind") == "guard" and cap < removal_cap
    cap_is = (f"the guard backed off to removal cap {cap:g}, which is" if guarded else f"removal cap {cap:g} is")
    hint = "a larger --guard or --no-guard removes units" if guarded else "a larger --removal-cap removes units"
    layers = _layers(model, concerns)
    below = [(name, u) for name, u in layers if math.floor(cap * u) == 0]
    if cap == 0:
        return f"removal cap 0 removes no unit: {whole}"
    if len(below) == len(layers):
        name, u = max(layers, key=lambda lu: lu[1])
        return (f"{cap_is} below one unit of every layer (largest: {name!r} with {u} units, floor({cap:g} × {u}) "
                f"= 0): {whole}; {hint}")
    rounded = f"; it is below one unit of {', '.join(repr(n) for n, _ in below)}" if below else ""
    at = f"at the removal cap the guard backed off to ({cap:g})" if guarded else f"at removal cap {cap:g}"
    return (f"no class's concern scores mark any unit for removal {at}{rounded}: no unit is used more by the "
            f"other classes than by its own; {whole}")


def nothing_removed(model, concerns, removal_cap: float, size: dict | None) -> str | None:
    """Why the decomposition removes nothing (for the report and ``warn``), or None when it removes
    something."""
    if not concerns or not removes_nothing(concerns):
        return None
    return why_nothing_removed(model, concerns, removal_cap, size)


def warn(report: dict) -> None:
    """The report's warnings, one ``onnxmod: warning:`` line each, once its files are written (a run
    that fails to write them prints only its error): nothing removed, classes beyond the bound."""
    if report.get("nothing_removed"):
        warnings.warn(report["nothing_removed"], stacklevel=3)
    flagged = report.get("flagged_classes")
    if flagged:
        shown = ", ".join(f"{f['name']!r} {100 * f['delta']:+.2f} (± {100 * f['standard_error']:.2f})" for f in flagged)
        many = len(flagged) > 1
        warnings.warn(f"{len(flagged)} class{'es' if many else ''} lost far more on the test split than "
                      f"{report['flag_bound']} allows (δ more than {FLAG_Z:g} standard errors below the bound): "
                      f"{shown}", stacklevel=3)


# --------------------------------------------------------------------------------------------
# each class's own loss
# --------------------------------------------------------------------------------------------
def class_losses(label: np.ndarray, reference: np.ndarray, y: np.ndarray, rows: np.ndarray,
                 classes) -> dict[int, tuple[float, float, int]]:
    """Per class c of ``classes``: (the recall c loses against ``reference``, its standard error,
    the labelled answers of class c in ``rows``) — answers of class c turned wrong minus answers
    turned right, over n_c. As for the overall bound (``api._loss_bound``), answers within one
    sequence are not independent: the error is sqrt(sum over sequences of (lost - won)^2) / n_c.
    Classes with no answer in ``rows`` are left out."""
    was, now = (reference == y) & rows, (label == y) & rows
    d = ((was & ~now).astype(np.int64) - (~was & now)).reshape(y.shape[0], -1)
    yy, rr = y.reshape(y.shape[0], -1), rows.reshape(y.shape[0], -1)
    out = {}
    for c in classes:
        mine = (yy == c) & rr
        n = int(mine.sum())
        if n == 0:
            continue
        per_sequence = np.where(mine, d, 0).sum(axis=1)
        out[int(c)] = (float(per_sequence.sum()) / n, math.sqrt(float((per_sequence ** 2).sum())) / n, n)
    return out


def class_over_bound(label, reference, y, rows, classes, tolerance: float, z: float) -> tuple | None:
    """The class whose recall loss exceeds ``tolerance`` by more than ``z`` of its own standard
    errors, by the widest margin: (class, loss, standard error), or None when every class holds.
    The size search's per-class bound: a small class is judged within its own (larger) error, so
    noise on a few dozen answers does not close every knob, while a collapse (Brown POS ``PRT``:
    15.9 points) is refused."""
    worst, margin = None, 0.0
    for c, (loss, se, _) in class_losses(label, reference, y, rows, classes).items():
        over = loss - z * se - tolerance
        if over > margin:
            worst, margin = (c, loss, se), over
    return worst


def flag_classes(report: dict, tolerance_points: float | None, bound: str) -> list[dict]:
    """Classes whose test δ (composed minus model recall, ``delta``) lies far below
    ``-tolerance_points``: beyond ``FLAG_Z`` of their own standard errors (``delta_se``, the
    paired error of ``class_losses``). Stored in the report as ``flagged_classes`` (and
    ``flag_bound``: whose tolerance it is, e.g. ``--max-loss 1.0``), for ``warn`` to name."""
    if tolerance_points is None:
        return []
    tol = tolerance_points / 100
    flagged = [{"class": m["class"], "name": m["name"], "delta": m["delta"], "standard_error": m["delta_se"]}
               for m in report["modules"] if m.get("delta") is not None and m.get("delta_se") is not None
               and -m["delta"] - FLAG_Z * m["delta_se"] > tol]
    report["flagged_classes"], report["flag_bound"] = flagged, bound
    return flagged
