"""Fingerprints: what a model, module or composition does, as one row of numbers (SPEC §9).

Three kinds, each a row per file:

* ``functional`` (the paper's non-interactive probing): the file's outputs on one seeded set of
  probing inputs, shared by every file. Probes are drawn from unlabelled real inputs when probe
  data is given (every ``x_*`` array of an ``.npz``, read lazily; labels are never opened), else
  from the input signature: token ids uniform in ``[0, V)`` with ``V`` the rows of the embedding
  table the input indexes, float features from a standard normal. What is recorded per probe:
  a module's log-odds ``logits[1] - logits[0]`` (its vote), a composition's per-module log-odds
  ``log(p / (1 - p))`` of ``scores``, a model's raw first output (its logits).
* ``interactive`` (the paper's interactive probing, for token inputs): ``chains`` probes start
  as above; each next probe is the previous one shifted left by one token with the file's own
  answer appended. *Fed back* means: the answer's class ``c`` (argmax of a model's logits; for a
  module 1 if its log-odds > 0 else 0; for a composition its ``label``) is written as token id
  ``1 + c mod (V - 1)`` (id 0, usually padding, is never written). For a binary acceptor over
  {0, 1} tokenized as 1, 2 (the Tomita zoo), the model writes its verdict as the next symbol.
  It does not apply to float-feature inputs (a class is not a row of features): refused there.
  The row holds the answers (as above) along every chain.
* ``mechanistic`` (baseline): per recurrent op, direction and gate block, statistics of ``W``,
  ``R`` and the biases that do not change when hidden units are permuted: moments (mean, std,
  skewness, kurtosis), quantiles, norms, the largest singular values, and for ``R`` its diagonal's
  mean and std (``P R Pᵀ`` keeps the diagonal's multiset).

Rows of different files may differ in width (classes, gates, layers): the table is padded with
NaN and ``widths`` says each row's own width. Deterministic: onnxruntime runs with one intra-op
thread, probes come from ``numpy.random.default_rng(seed)``, and the ``.npz`` is written with
fixed zip timestamps and no compression, so the same files and seed give the same bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx

from . import runtime
from .errors import IncompatibleError, InputError, OnnxmodError, UsageError
from .io import NpzArrays, input_spec, keys, load_onnx, read_npz

KINDS = ("functional", "interactive", "mechanistic")
N_SINGULAR = 4
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


# --------------------------------------------------------------------------------------------
# deterministic npz
# --------------------------------------------------------------------------------------------
def npz_bytes(arrays: dict, compress: bool = False) -> bytes:
    """An ``.npz`` (``numpy.load`` reads it) with sorted members and fixed timestamps; stored, or
    deflated with ``compress`` (the same bytes for the same zlib)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for k in sorted(arrays):
            a = np.asarray(arrays[k])
            if a.dtype == object:
                raise TypeError(f"{k}: object arrays are not allowed (pickle)")
            b = io.BytesIO()
            np.lib.format.write_array(b, a if a.flags.c_contiguous else a.copy(order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            z.writestr(info, b.getvalue())
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# probes
# --------------------------------------------------------------------------------------------
def signature(proto: onnx.ModelProto) -> dict:
    """The first real input: name, dtype, shape without the batch axis (None = dynamic)."""
    spec = input_spec(proto)
    if not spec:
        raise InputError("the graph has no tensor input")
    inits = {t.name for t in proto.graph.initializer}
    name = next(i.name for i in proto.graph.input if i.name not in inits)
    shape = list(spec.get("input_shape") or [])
    return {"name": name, "dtype": str(spec["input_dtype"]), "shape": shape[1:], "vocab": spec.get("max_token")}


def _sig_key(sig: dict) -> tuple:
    return sig["dtype"], tuple(sig["shape"])


def _probe_arrays(path, sig: dict) -> list[tuple[NpzArrays, str, int]]:
    """(file, key, rows) of every ``x_*`` array of ``path`` (sorted by key), each checked against
    ``sig`` from its ``.npy`` header alone (``io.read_npz``: nothing is decompressed yet, a bomb is
    refused here); ``y_*`` never read."""
    z = read_npz(path, "an .npz file of probe inputs")
    p = z.p
    names = sorted(k for k in z if k.startswith("x_"))
    if not names:
        raise InputError(f"{p}: no x_* array to draw probes from")
    out, shapes = [], set()
    want = list(sig["shape"])
    for k in names:
        shape, dtype = z.header(k)
        if len(shape) != len(want) + 1 or any(w not in (None, 0) and w != d for w, d in zip(want, shape[1:])):
            raise InputError(f"{p}: {k} has shape {list(shape)}, the model takes [N, "
                             f"{', '.join('?' if w is None else str(w) for w in want)}]")
        if np.dtype(sig["dtype"]).kind in "iu":
            if dtype.kind not in "iu":
                raise InputError(f"{p}: {k} is {dtype}, the model takes token ids ({sig['dtype']})")
        elif dtype.kind != "f":
            raise InputError(f"{p}: {k} is {dtype}, the model takes {sig['dtype']}")
        shapes.add(shape[1:])
        out.append((z, k, shape[0]))
    if len(shapes) > 1:
        raise InputError(f"{p}: the x_* arrays have different shapes {sorted(list(s) for s in shapes)}")
    return out


def _probe_rows(z: NpzArrays, key: str, rows: np.ndarray, sig: dict) -> np.ndarray:
    """Rows ``rows`` of one probe array, read (one array at a time: memory stays within one
    array's limit) and checked: token ids within the model's vocabulary."""
    a = z[key]
    if np.dtype(sig["dtype"]).kind in "iu" and sig["vocab"] is not None and a.size and (
            a.min() < 0 or a.max() >= sig["vocab"]):
        raise InputError(f"{z.p}: {key} has token ids outside [0, {sig['vocab']})")
    picked = a[rows]
    del a
    with np.errstate(over="ignore", invalid="ignore"):
        return picked.astype(sig["dtype"])


def read_probe_rows(path, sig: dict) -> np.ndarray:
    """Every ``x_*`` array of ``path`` (sorted by key), checked against ``sig``, rows concatenated."""
    return np.concatenate([_probe_rows(z, k, np.arange(n), sig) for z, k, n in _probe_arrays(path, sig)], axis=0)


def draw_probes(sig: dict, n: int, seed: int = 0, probe_data=None, length: int = 10) -> np.ndarray:
    """``n`` probing inputs: rows of ``probe_data`` (one .npz or a list, rows concatenated; without
    replacement while there are enough), or drawn from the signature. A dynamic length (None) becomes
    the data's, else ``length``."""
    if n < 1:
        raise UsageError(f"--probes must be at least 1 (got {n})")
    rng = np.random.default_rng(seed)
    if probe_data is not None:
        sources = list(probe_data) if isinstance(probe_data, (list, tuple)) else [probe_data]
        arrays = [a for s in sources for a in _probe_arrays(s, sig)]  # every header checked before any read
        total = sum(rows for _, _, rows in arrays)
        if total == 0:
            raise InputError(f"{', '.join(str(s) for s in sources)}: the x_* arrays hold no rows to draw probes from")
        idx = rng.choice(total, size=n, replace=total < n)  # rows of the x_* arrays, concatenated in order
        out, start = None, 0
        for z, key, rows in arrays:
            mine = (idx >= start) & (idx < start + rows)
            if mine.any():
                picked = _probe_rows(z, key, idx[mine] - start, sig)
                if out is None:
                    out = np.empty((n, *picked.shape[1:]), picked.dtype)
                out[mine] = picked
            start += rows
        return np.ascontiguousarray(out)
    shape = [length if d in (None, 0) else d for d in sig["shape"]]
    if np.dtype(sig["dtype"]).kind in "iu":
        if not sig["vocab"]:
            raise InputError("cannot draw token ids: no embedding table is indexed by the input (give --probe-data)")
        return rng.integers(0, sig["vocab"], size=[n, *shape]).astype(sig["dtype"])
    return rng.standard_normal([n, *shape]).astype(sig["dtype"])


# --------------------------------------------------------------------------------------------
# answers
# --------------------------------------------------------------------------------------------
def _kind(proto: onnx.ModelProto) -> str:
    return {p.key: p.value for p in proto.metadata_props}.get(keys.KIND, "model")


def _answers(proto: onnx.ModelProto, sess, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(answer values [N, ...] float64, answer class [N]) of one file on ``x``."""
    k = _kind(proto)
    outs = [o.name for o in sess.get_outputs()]
    if k == "module" and "logits" in outs:
        (lg,) = runtime.run_batched(sess, x, ["logits"], batch_size=256)
        v = lg[..., 1].astype(np.float64) - lg[..., 0].astype(np.float64)
        return v, (v > 0).astype(np.int64).reshape(v.shape[0], -1)[:, -1]
    if k in ("composition", "fused") and "scores" in outs and "label" in outs:
        sc, lab = runtime.run_batched(sess, x, ["scores", "label"], batch_size=256)
        p = np.clip(sc.astype(np.float64), 1e-12, 1 - 1e-12)
        return np.log(p / (1 - p)), np.asarray(lab).reshape(lab.shape[0], -1)[:, -1].astype(np.int64)
    (out,) = runtime.run_batched(sess, x, [outs[0]], batch_size=256)
    v = out.astype(np.float64)
    cls = v.reshape(v.shape[0], -1, v.shape[-1])[:, -1].argmax(-1) if v.ndim >= 2 else (v > 0).astype(np.int64)
    return v, cls


def functional_row(proto, probes: np.ndarray, where: str = "") -> np.ndarray:
    sess = runtime.session(proto, threads=1)
    try:
        v, _ = _answers(proto, sess, probes)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return v.reshape(-1)


def interactive_row(proto, starts: np.ndarray, steps: int, vocab: int, where: str = "") -> np.ndarray:
    """``starts`` [chains, T] token ids; ``steps`` answers per chain, each fed back (module doc)."""
    if starts.ndim != 2 or starts.dtype.kind not in "iu":
        raise UsageError(f"{where}: interactive probing applies to token-id inputs [N, T] only; a class "
                         f"cannot be fed back as float features")
    if vocab is None or vocab < 2:
        raise UsageError(f"{where}: interactive probing needs a token vocabulary of at least 2 ids")
    sess = runtime.session(proto, threads=1)
    x = starts.copy()
    rows = []
    try:
        for _ in range(steps):
            v, c = _answers(proto, sess, x)
            rows.append(v.reshape(v.shape[0], -1))
            x = np.concatenate([x[:, 1:], (1 + c % (vocab - 1)).astype(x.dtype)[:, None]], axis=1)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return np.stack(rows, axis=1).reshape(-1)


def _block_stats(a: np.ndarray) -> list[float]:
    a = np.asarray(a, np.float64)
    f = a.reshape(-1)
    mu, sd = f.mean(), f.std()
    z = (f - mu) / sd if sd > 0 else np.zeros_like(f)
    out = [mu, sd, float((z ** 3).mean()), float((z ** 4).mean()), *np.quantile(f, QUANTILES),
           float(np.linalg.norm(f)), float(np.abs(f).max()), float(np.abs(f).mean())]
    if a.ndim == 2:
        s = np.linalg.svd(a, compute_uv=False)
        s = np.pad(s[:N_SINGULAR], (0, max(0, N_SINGULAR - s.size)))
        out += s.tolist()
    return out


def mechanistic_row(proto, where: str = "") -> np.ndarray:
    """Unit-permutation-invariant statistics of every recurrent op's W, R and biases, per gate."""
    from .graph import Model

    model = Model(proto, source=where)
    feats: list[float] = []
    for op in model.recurrent:
        header, blocks = op.parameter_blocks()
        feats += [float(v) for v in header]
        for kind, a in blocks:
            if kind == "diagonal":
                a = np.asarray(a, np.float64)
                feats += [float(a.mean()), float(a.std())]
            else:
                feats += _block_stats(a)
    return np.asarray(feats, np.float64)


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------
def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def fingerprint_rows(paths, kind: str = "functional", probes: int = 256, probe_data=None, seed: int = 0,
                     chains: int = 8, skip_bad: bool = False, progress: bool = False, ray: bool = False,
                     address: str | None = None) -> dict:
    """Rows for ``paths`` (in order). With ``skip_bad`` a file that cannot be read, run or has
    another input signature than the first good one is skipped (``skipped``: [(path, reason)])
    instead of refused."""
    from .parallel import pmap

    if kind not in KINDS:
        raise UsageError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    paths = [str(p) for p in paths]
    if not paths:
        raise UsageError("fingerprint needs at least one ONNX file")
    skipped: list[tuple[str, str]] = []
    sigs: dict[str, dict] = {}
    for p in paths:
        try:
            sigs[p] = signature(load_onnx(p))
        except OnnxmodError as exc:
            if not skip_bad:
                raise
            skipped.append((p, str(exc)))
    good = [p for p in paths if p in sigs]
    if not good:
        raise InputError("no readable ONNX file to fingerprint")
    sig0 = sigs[good[0]]
    for p in list(good):
        if _sig_key(sigs[p]) != _sig_key(sig0) or (kind != "mechanistic" and sig0["vocab"] is not None and
                                                   (sigs[p]["vocab"] or 0) < sig0["vocab"]):
            msg = (f"{p}: input {sigs[p]['dtype']} {sigs[p]['shape']} (vocabulary {sigs[p]['vocab']}) differs from "
                   f"{good[0]}'s {sig0['dtype']} {sig0['shape']} (vocabulary {sig0['vocab']})")
            if not skip_bad:
                raise IncompatibleError(msg)
            skipped.append((p, msg))
            good.remove(p)
    x = None
    if kind == "functional":
        x = draw_probes(sig0, probes, seed, probe_data)
    elif kind == "interactive":
        if chains < 1 or probes < chains:
            raise UsageError(f"interactive probing needs --probes >= chains ({chains}), got {probes}")
        x = draw_probes(sig0, chains, seed, probe_data)
    jobs = [(p, kind, x, probes // chains if kind == "interactive" else 0, sig0["vocab"]) for p in good]
    results = pmap(_row_job, jobs, ray=ray, address=address, progress=progress, desc=f"fingerprint ({kind})")
    rows, kept = [], []
    for p, r in zip(good, results):
        if isinstance(r, str):
            if not skip_bad:
                raise InputError(r)
            skipped.append((p, r))
            continue
        rows.append(r)
        kept.append(p)
    order = {p: i for i, p in enumerate(paths)}
    skipped.sort(key=lambda s: order[s[0]])
    width = max((r.size for r in rows), default=0)
    table = np.full((len(rows), width), np.nan, np.float32)
    for i, r in enumerate(rows):
        table[i, :r.size] = r
    return {"fingerprints": table, "widths": np.array([r.size for r in rows], np.int64), "files": kept,
            "sha256": [_sha256(p) for p in kept], "kind": kind, "seed": seed, "probes": x,
            "signature": sig0, "skipped": skipped}


def _row_job(job):
    """One row (a Ray task in parallel runs): an array, or the one-line reason it failed."""
    p, kind, x, steps, vocab = job
    try:
        proto = load_onnx(p)
        if kind == "mechanistic":
            return mechanistic_row(proto, p)
        if kind == "interactive":
            return interactive_row(proto, x, steps, vocab, p)
        return functional_row(proto, x, p)
    except UsageError:
        raise
    except OnnxmodError as exc:
        msg = str(exc)
        return msg if msg.startswith(p) else f"{p}: {msg}"


def to_npz(res: dict, relative_to=None) -> bytes:
    files = [str(Path(f).relative_to(relative_to)) if relative_to else f for f in res["files"]]
    arrays = {"fingerprints": res["fingerprints"], "widths": res["widths"], "files": np.array(files, dtype=str),
              "sha256": np.array(res["sha256"], dtype=str), "kind": np.array(res["kind"]),
              "seed": np.array(res["seed"], np.int64),
              "signature": np.array(json.dumps(res["signature"], sort_keys=True))}
    if res["probes"] is not None:
        arrays["probes"] = res["probes"]
    return npz_bytes(arrays)
