"""One map for embarrassingly parallel jobs: serial by default, Ray tasks when asked.

``pmap(fn, items)`` returns ``[fn(x) for x in items]`` in the order of ``items`` either way, with a
tqdm bar on stderr. With ``ray=True`` (or an ``address``) every item becomes one Ray task:
``ray.init()`` starts a local Ray on this machine unless ``address`` names a cluster
(``"auto"``, ``"ray://host:10001"``...). Ray is an optional extra (``pip install 'onnxmod[ray]'``);
asking for it without it installed is a one-line UsageError.

``fn`` must be a module-level function (Ray pickles it by reference) whose result depends only on
its item: results are then identical to the serial path. An item's exception is re-raised as
itself (Ray's wrapper removed), for the first failing item in item order.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from .errors import UsageError


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except Exception:  # not installed, or broken against this numpy/protobuf
        return False
    return True


def _bar(total: int, desc: str | None, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not progress, leave=False)


def pmap(fn: Callable, items: Iterable, *, ray: bool = False, address: str | None = None,
         progress: bool = True, desc: str | None = None, num_cpus: int | None = None) -> list:
    """``[fn(x) for x in items]``, serially or as Ray tasks (same results, same order)."""
    items = list(items)
    if not (ray or address):
        out = []
        with _bar(len(items), desc, progress) as bar:
            for x in items:
                out.append(fn(x))
                bar.update(1)
        return out
    return _ray_map(fn, items, address, progress, desc, num_cpus)


def _ray_map(fn, items, address, progress, desc, num_cpus):
    try:
        import ray
    except Exception as exc:
        raise UsageError(f"--ray needs Ray: pip install 'onnxmod[ray]' ({type(exc).__name__}: {exc})") from None
    started = False
    if not ray.is_initialized():
        kw = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kw)
        started = True
    try:
        task = ray.remote(num_cpus=1)(fn)
        refs = [task.remote(x) for x in items]
        pending = list(refs)
        with _bar(len(refs), desc, progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
        out = []
        for r in refs:  # item order, whatever order they finished in
            try:
                out.append(ray.get(r))
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, BaseException) else exc) from None
        return out
    finally:
        if started:
            ray.shutdown()
