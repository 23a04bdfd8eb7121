"""Writing outputs atomically: every file and directory is built under a temporary name in the
destination's folder and renamed into place, with SIGINT/SIGTERM held during the renames, so a
reader (or an interrupted run) sees either the previous state or the whole result."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import onnx

from .. import safety
from ..errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM until the block ends, so a create-and-register or rename sequence is
    never cut in half (the signal is delivered, and acted on, right after)."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _make_parent(p: Path) -> list[Path]:
    """Create ``p``'s missing folders; returns them (deepest first) so a failure can remove them."""
    missing = []
    with contextlib.suppress(OSError):
        for a in (p.parent, *p.parent.parents):
            if a.exists():
                break
            missing.append(a)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        return missing
    except OSError as exc:
        _remove_empty(missing)
        reason = _os_reason(exc)
        with contextlib.suppress(OSError):
            blocker = next((a for a in (p.parent, *p.parent.parents) if a.exists()), None)
            if blocker is not None and not blocker.is_dir():
                reason = f"{blocker} is a file, not a directory"
        raise OutputError(f"{p}: cannot create its folder ({reason})") from None


def _remove_empty(folders: list[Path]) -> None:
    for a in folders:  # deepest first; only if still empty
        with contextlib.suppress(OSError):
            a.rmdir()


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling ``.name.*.tmp`` renamed into place."""
    p = Path(path)
    created = _make_parent(p)
    safety.sweep_stale(p)
    tmp = None
    try:
        with signals_deferred():
            fd, tmp = tempfile.mkstemp(prefix=safety.temp_prefix(p.name), suffix=".tmp", dir=str(p.parent))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        with signals_deferred():
            os.replace(tmp, p)
            tmp = None
    except BaseException as exc:
        with signals_deferred():
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            _remove_empty(created)
        if isinstance(exc, OSError):
            raise OutputError(f"{p}: cannot write ({_os_reason(exc)})") from None
        raise


def save_model_atomic(proto: onnx.ModelProto, path) -> None:
    write_bytes_atomic(path, proto.SerializeToString(deterministic=True))


check_output_file = safety.check_output_file
check_output_dir = safety.check_output_dir


@contextlib.contextmanager
def atomic_directory(path, force: bool = False, inputs=()):
    """Build a directory under a temporary name (``.name.PID.*.partial``); rename it into place only
    on success, with the ``safety.MARKER`` file listing what it holds. With ``force`` an existing
    previous onnxmod output is replaced, and put back if the swap fails; anything else is refused
    (``safety.check_output_dir``)."""
    final = safety.check_output_dir(path, force, inputs)
    created = _make_parent(final)
    safety.sweep_stale(final)
    tmp = None
    try:
        with signals_deferred():
            try:
                tmp = Path(tempfile.mkdtemp(prefix=safety.temp_prefix(final.name), suffix=".partial",
                                            dir=str(final.parent)))
                os.chmod(tmp, 0o777 & ~_umask())
                (tmp / safety.MARKER).write_bytes(safety.partial_stamp())
            except OSError as exc:
                raise OutputError(f"{final}: cannot create a directory next to it ({_os_reason(exc)})") from None
        yield tmp
        files = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file() and p != tmp / safety.MARKER]
        write_bytes_atomic(tmp / safety.MARKER, safety.marker_bytes(files))
        with signals_deferred():
            _swap_into_place(tmp, final)
            tmp = None
    except BaseException:
        with signals_deferred():
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            _remove_empty(created)
        raise


def _swap_into_place(tmp: Path, final: Path) -> None:
    old = None
    try:
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=safety.temp_prefix(final.name), suffix=".old", dir=str(final.parent)))
            os.rmdir(old)
            os.replace(final, old)
        os.replace(tmp, final)
    except OSError as exc:
        if old is not None and not final.exists():
            with contextlib.suppress(OSError):
                os.replace(old, final)
        raise OutputError(f"{final}: cannot move the finished output into place ({_os_reason(exc)})") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
