"""What onnxmod may write over, and what it may clean up: nothing it did not write itself.

* An output folder never equals or contains an input (the model, its external data, the data
  file, the module files), symlinks resolved: refused before anything is touched, ``--force``
  or not.
* ``--force`` replaces an existing output folder only when it is a previous onnxmod output: it
  holds the marker file ``.onnxmod-output`` (JSON: ``{"onnxmod_output": 1, "files": [...]}``,
  every file onnxmod wrote, relative, sorted) and nothing that the marker does not list. A
  folder written before the marker existed is recognised by its exact layout (``composed.onnx``,
  ``report.json``, and only ``modules/*.onnx``, ``fused.onnx``, ``report.md`` besides).
* ``--force`` replaces an existing single-file output (``compose``/``replace``) only when it is
  an ONNX file carrying ``onnxmod.kind`` metadata, and never an input (same path, symlink or
  hard link).
* Temporary siblings carry the writer's pid in their name (``.NAME.PID.XXXX.partial`` /
  ``.tmp`` / ``.old``; a ``.partial`` folder also records pid and host in its marker). A run
  into the same folder removes those whose writer is dead (killed mid-way), whichever output
  they were for (``--out out/b`` sweeps a killed ``--out out/a``'s): nothing else, and never a
  live writer's.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

from .errors import UsageError
from .io import keys

MARKER = ".onnxmod-output"
MARKER_FORMAT = 1
_LEGACY_FILES = {"composed.onnx", "fused.onnx", "report.json", "report.md"}


def real(path) -> Path:
    """``path`` with every symlink resolved (the path need not exist)."""
    return Path(os.path.realpath(os.fspath(path)))


def _same(a: Path, b: Path) -> bool:
    if real(a) == real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_not_over_inputs(out, inputs) -> None:
    """Refuse (exit 2) an output that is, or whose folder would hold, one of ``inputs``."""
    out = Path(out)
    r = real(out)
    for i in inputs:
        ri = real(i)
        if _same(out, Path(i)):
            raise UsageError(f"{out}: output would overwrite the input {i}")
        if r in ri.parents:
            raise UsageError(f"{out}: output folder holds the input {i}; onnxmod never writes over its inputs "
                             f"(choose another --out)")


def marker_bytes(files) -> bytes:
    """The finished output's marker: deterministic (same files, same bytes)."""
    return (json.dumps({"onnxmod_output": MARKER_FORMAT, "files": sorted(files)}, indent=1) + "\n").encode()


def _read_marker(folder: Path) -> dict | None:
    try:
        m = folder / MARKER
        if m.is_symlink() or not m.is_file() or m.stat().st_size > (1 << 20):
            return None
        d = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeError):
        return None
    return d if isinstance(d, dict) and d.get("onnxmod_output") == MARKER_FORMAT else None


def _contents(folder: Path) -> tuple[set, set] | None:
    """Relative files and folders under ``folder`` (symlinks count as files, never followed)."""
    files, dirs = set(), set()
    try:
        for root, dnames, fnames in os.walk(folder):
            rel = Path(root).relative_to(folder)
            for d in list(dnames):
                if (Path(root) / d).is_symlink():
                    dnames.remove(d)
                    files.add((rel / d).as_posix())
                else:
                    dirs.add((rel / d).as_posix())
            files.update((rel / f).as_posix() for f in fnames)
    except OSError:
        return None
    return files, dirs


def foreign(folder: Path) -> str | None:
    """None when ``folder`` holds only what a previous onnxmod run wrote there (see module doc),
    else what is not: the first entry no marker lists, or that there is no marker."""
    got = _contents(folder)
    if got is None:
        return "cannot be listed"
    files, dirs = got
    marker = _read_marker(folder)
    if marker is not None:
        listed = marker.get("files")
        if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed):
            return f"has a damaged {MARKER} marker"
        allowed_dirs = {p.as_posix() for f in listed for p in Path(f).parents if p.as_posix() != "."}
        extra = sorted((files - {MARKER} - set(listed)) | (dirs - allowed_dirs))
        return f"holds {extra[0]!r}, which onnxmod did not write there" if extra else None
    # written before the marker existed: the exact layout of a decomposition
    modules = {f for f in files if re.fullmatch(r"modules/[^/]+\.onnx", f)}
    if {"composed.onnx", "report.json"} <= files and files - modules <= _LEGACY_FILES and dirs <= {"modules"}:
        return None
    return f"has no {MARKER} marker"


def is_onnxmod_output(folder: Path) -> bool:
    return foreign(folder) is None


def check_output_dir(out, force: bool, inputs=()) -> Path:
    """Everything ``decompose`` checks before it starts: inputs, existence, ``--force`` rights."""
    out = Path(out)
    check_not_over_inputs(out, inputs)
    if not os.path.lexists(out):
        return out
    if not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory")
    if not force:
        raise UsageError(f"{out}: already exists (use --force to replace a previous onnxmod output)")
    why = foreign(real(out))
    if why:
        raise UsageError(f"{out}: is not a previous onnxmod output ({why}); --force replaces only those: "
                         f"remove it yourself or choose another --out")
    return out


def _onnxmod_file(p: Path) -> bool:
    import onnx

    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception:  # anything unreadable is not ours
        return False
    return any(e.key == keys.KIND for e in proto.metadata_props)


def check_output_file(path, force: bool, inputs=()) -> Path:
    """Everything ``compose``/``replace`` check before they start (see module doc)."""
    p = Path(path)
    check_not_over_inputs(p, inputs)
    if not os.path.lexists(p):
        return p
    if p.is_dir():
        raise UsageError(f"{p}: is a directory")
    if not force:
        raise UsageError(f"{p}: already exists (use --force to replace a previous onnxmod output)")
    if p.is_symlink() or not p.is_file() or not _onnxmod_file(p):
        raise UsageError(f"{p}: is not an ONNX file written by onnxmod (no {keys.KIND} metadata); --force "
                         f"replaces only those: remove it yourself or choose another --out")
    return p


# ---- temporary siblings ---------------------------------------------------------------------


def temp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def partial_stamp() -> bytes:
    return (json.dumps({"onnxmod_output": 0, "pid": os.getpid(), "host": socket.gethostname()}) + "\n").encode()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _stamp_pid(folder: Path) -> int | None:
    try:
        m = folder / MARKER
        if m.is_symlink() or m.stat().st_size > 4096:
            return None
        d = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeError):
        return None
    if isinstance(d, dict) and d.get("onnxmod_output") == 0 and d.get("host") == socket.gethostname():
        return d.get("pid")
    return None


_TEMP = re.compile(r"\.(.+)\.(\d{1,10})\.[A-Za-z0-9_]+\.(partial|tmp|old)")


def sweep_stale(final) -> list[Path]:
    """Remove the temporary files and folders killed onnxmod runs left in ``final``'s folder, for
    any output (``.NAME.PID.XXXX.partial`` / ``.tmp`` / ``.old``, NAME any name): named by
    onnxmod's rule with a pid that is dead (and, for a ``.partial`` folder, the same pid and this
    host in its marker; for an ``.old`` folder, a valid output marker). A live writer's, and
    anything that only looks alike, stay. Returns what was removed."""
    folder = Path(final).parent
    removed = []
    try:
        names = os.listdir(folder if str(folder) else ".")
    except OSError:
        return removed
    for n in sorted(names):
        m = _TEMP.fullmatch(n)
        if not m:
            continue
        pid, kind = int(m.group(2)), m.group(3)
        if _alive(pid):
            continue
        p = folder / n
        try:
            if p.is_symlink():
                continue
            if kind == "tmp":
                if p.is_file():
                    p.unlink()
                    removed.append(p)
            elif p.is_dir() and ((kind == "partial" and _stamp_pid(p) == pid)
                                 or (kind == "old" and is_onnxmod_output(p))):
                shutil.rmtree(p)
                removed.append(p)
        except OSError:
            continue
    return removed
