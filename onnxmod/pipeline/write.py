"""Writing a decomposition: ``modules/<class>.onnx``, ``composed.onnx``, ``fused.onnx``, and the
reports, all at once (``io.atomic_directory``: the directory appears only when complete)."""
from __future__ import annotations

import logging
import re

from .. import progress as _progress
from .. import report as rep
from ..io import atomic_directory, save_model_atomic, write_bytes_atomic

_log = logging.getLogger("onnxmod")
MAX_NAME = 100  # characters of a class name kept in its module's file name


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._-")[:MAX_NAME].rstrip("._-")
    return s or "class"


def module_file_names(classes) -> list[str]:
    """File names (without ``.onnx``) for ``(class_index, class_name)`` pairs, unique by
    construction: the name made safe (runs of anything but ``A-Za-z0-9_.-`` become ``_``, leading
    and trailing ``._-`` go, at most ``MAX_NAME`` characters, ``class`` if nothing is left) when no
    other class's safe name equals it ignoring case and it does not start with digits and ``_``;
    otherwise ``<class_index>_<safe name>``, whose digits before the first ``_`` are the (unique)
    class index. Checked again here: a repeat is a bug, never a silent overwrite."""
    slugs = [(int(i), _slug(n)) for i, n in classes]
    count: dict = {}
    for _, s in slugs:
        count[s.lower()] = count.get(s.lower(), 0) + 1
    names = [s if count[s.lower()] == 1 and not re.match(r"\d+_", s) else f"{i}_{s}" for i, s in slugs]
    if len({n.lower() for n in names}) != len(names):
        raise RuntimeError(f"module file names repeat: {names}")
    return names


def stable(report: dict) -> dict:
    """report.json without wall-clock timings would be byte-identical across runs; keep timings
    but round them so the file stays readable."""
    r = dict(report)
    r["timings"] = {k: round(v, 3) for k, v in report["timings"].items()}
    return r


def write(out, force, concerns, modules, composed, report, fused=None, standalone: bool = True) -> None:
    """Write the decomposition atomically; ``standalone=False`` (``--modules none``) writes no
    module files (``report.json`` then says ``file: null`` and how to split one out)."""
    names = module_file_names([(c.class_index, c.class_name) for c in concerns])
    report["module_files"] = "standalone" if standalone else "none"
    _log.info("writing %s: %s composed.onnx%s and the reports", out,
              f"{len(modules):,} module files," if standalone else "no module files (--modules none),",
              ", fused.onnx" if fused is not None else "")
    with atomic_directory(out, force=force, inputs=(report["model"], report["data"])) as tmp:
        if standalone:
            (tmp / "modules").mkdir()
        for name, proto, entry in _progress.each(list(zip(names, modules, report["modules"])), "files"):
            entry["file"] = f"modules/{name}.onnx" if standalone else None
            if standalone:
                save_model_atomic(proto, tmp / "modules" / f"{name}.onnx")
        save_model_atomic(composed, tmp / "composed.onnx")
        if fused is not None:
            save_model_atomic(fused, tmp / "fused.onnx")
        write_bytes_atomic(tmp / "report.json", rep.dumps(stable(report)).encode())
        write_bytes_atomic(tmp / "report.md", rep.markdown(report).encode())
        _log.info("drawing report.html (%s classes)", f"{len(report['modules']):,}")
        from .. import report_html

        write_bytes_atomic(tmp / "report.html", report_html.decomposition(report).encode())
