"""Zoo search: index a directory of models into fingerprinted modules, and rank the modules that
could serve one class (issue 16).

A *zoo* is a directory whose members are ONNX models (``**/*.onnx``, sorted by path) that say in
their ``metadata_props`` which data they were trained on: ``zoo.data`` (an ``.npz`` of the onnxmod
data contract, relative to the zoo directory) and optionally ``zoo.classes`` (JSON list: which of
that file's class ids the model's outputs are, in order; default all). ``tools/build_zoo.py``
writes such zoos.

``index`` decomposes every member (``pipeline.decompose``, rolled, seeded) into modules and fingerprints
every module functionally on one seeded set of probes drawn from the zoo's unlabelled inputs (the
``x_*`` arrays of its data files). Members that cannot be read or decomposed, lack the metadata,
or take another input signature than the first good member are skipped with one warning line each.

``find`` ranks the index's modules of class C that are *compatible* with a given file (same input
signature, same vocabulary fingerprint) by a label-free quality estimate, the sum of two z-scores
over the candidates:

* *agreement*: the Spearman correlation of the module's log-odds over the probes with the mean
  rank profile of the *other* candidates for C. Modules trained well on C agree about which
  inputs are C; a poor module agrees with nobody;
* *decisiveness*: the log of the standard deviation of its log-odds over the probes. Under-trained
  modules answer everything alike.

No label of C is read. On the 500-member digits zoo the sum ranks modules by measured AUC with
Kendall's tau 0.57 on the classes held out when it was chosen (5-9; agreement alone: 0.30);
``tools/zoo_search.py`` measures it.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

from . import fingerprint as fp
from .errors import InputError, OnnxmodError, UsageError
from .io import MAX_CLASS_INDEX, _signature_ok, input_spec, keys, load_data, load_onnx, read_json, read_npz


def members(zoo_dir) -> list[Path]:
    z = Path(zoo_dir)
    if not z.is_dir():
        raise InputError(f"{z}: not a directory (a zoo is a directory of ONNX models)")
    found = sorted(p for p in z.rglob("*.onnx") if p.is_file())
    if not found:
        raise InputError(f"{z}: no *.onnx member found")
    return found


def _member_classes(meta: dict, where: str) -> list[int] | None:
    """``zoo.classes``: which of the data file's class ids the member's outputs are (None: all)."""
    raw = meta.get("zoo.classes")
    if not raw:
        return None
    try:
        classes = json.loads(raw)
    except (ValueError, RecursionError):
        classes = None
    if not (isinstance(classes, list) and classes and len(set(map(repr, classes))) == len(classes)
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < MAX_CLASS_INDEX for c in classes)):
        raise InputError(f"{where}: metadata 'zoo.classes' is not a JSON list of distinct class ids "
                         f"({str(raw)[:40]!r})")
    return classes


def _member_data(zoo: Path, proto, where: str, tmp: Path) -> tuple[Path, list[int] | None]:
    """The member's data file (inside the zoo), or, when ``zoo.classes`` picks some of its classes,
    a temporary file holding only those rows, relabelled 0..k-1. Read through ``io.load_data``:
    the same guards (sizes before decompression, dtypes, shapes) as any data file."""
    meta = {p.key: p.value for p in proto.metadata_props}
    rel = meta.get("zoo.data")
    if not rel:
        raise InputError(f"{where}: not a zoo member (no 'zoo.data' metadata naming its data file)")
    try:
        data = (zoo / rel).resolve()
        inside = data.is_relative_to(zoo.resolve()) and data.is_file()
    except (OSError, ValueError):
        inside = False
    if not inside:
        raise InputError(f"{where}: its data file {rel[:80]!r} is not a file inside the zoo")
    classes = _member_classes(meta, where)
    if classes is None:
        return data, None
    d = load_data(data, **input_spec(proto))
    if d.y_train.ndim != 1:
        raise InputError(f"{data}: metadata 'zoo.classes' of {where} picks classes of one-output data, but y_train "
                         f"has shape {list(d.y_train.shape)}")
    names = d.class_names
    if names is not None and max(classes) >= len(names):
        raise InputError(f"{where}: metadata 'zoo.classes' names class {max(classes)} but {data} has "
                         f"{len(names)} class names")
    out = {}
    order = np.argsort(classes, kind="stable")
    ids = np.array(classes, np.int64)[order]
    for s in ("train", "test", "val"):
        x, y = getattr(d, f"x_{s}"), getattr(d, f"y_{s}")
        if y is None:
            continue
        keep = np.isin(y, ids)
        out[f"x_{s}"] = x[keep]
        out[f"y_{s}"] = order[np.searchsorted(ids, y[keep])].astype(np.int64)  # position in zoo.classes
    out["class_names"] = np.array([str(names[c]) if names is not None else str(c) for c in classes])
    if d.vocab is not None:
        out["vocab"] = np.array(d.vocab)
    p = tmp / "data.npz"
    p.write_bytes(fp.npz_bytes(out))
    return p, classes


def _accuracy(meta: dict, where: str) -> float | None:
    raw = meta.get("zoo.test_accuracy")
    if not raw:
        return None
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not 0.0 <= v <= 1.0:
        raise InputError(f"{where}: metadata 'zoo.test_accuracy' is {raw[:40]!r}, expected a number in 0..1")
    return v


def decompose_member(job) -> dict:
    """Decompose one member (a Ray task in parallel runs). Returns its modules' bytes and identity,
    or ``{"error": one line}``."""
    from . import pipeline
    from .compose import module_info

    zoo, rel, seed = job
    zoo = Path(zoo)
    path = zoo / rel
    try:
        proto = load_onnx(path)
        sig = fp.signature(proto)
        meta = {p.key: p.value for p in proto.metadata_props}
        accuracy = _accuracy(meta, rel)
        with tempfile.TemporaryDirectory(prefix="onnxmod-zoo-") as t:
            tmp = Path(t)
            data, classes = _member_data(zoo, proto, rel, tmp)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                options = pipeline.Options(mode="rolled", seed=seed, progress=False, threads=1, evaluate=False)
                pipeline.decompose(str(path), str(data), str(tmp / "dec"), options)
            mods = []
            for f in sorted((tmp / "dec" / "modules").glob("*.onnx")):
                b = f.read_bytes()
                info = module_info(load_onnx(f), f.name)
                mods.append({"name": f.name, "bytes": b, "class_name": info["class_name"],
                             "class_index": info["class_index"], "vocab_sha256": info["vocab_sha256"],
                             "input_signature": info["input_signature"]})
    except OnnxmodError as exc:
        msg = str(exc)
        return {"error": msg if msg.startswith((rel, str(path))) else f"{rel}: {msg}"}
    return {"member": rel, "signature": sig, "modules": mods, "task": meta.get("zoo.task"),
            "data": meta.get("zoo.data"), "classes": classes, "test_accuracy": accuracy}


def build_index(zoo_dir, out_dir, probes: int = 256, seed: int = 0, probe_data=None, force: bool = False,
                ray: bool = False, address: str | None = None, progress: bool = False) -> dict:
    from .io import atomic_directory
    from .parallel import pmap

    zoo = Path(zoo_dir)
    files = members(zoo)
    out = Path(out_dir)
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists (use --force to replace it)")
    if out.resolve().is_relative_to(zoo.resolve()):
        raise UsageError(f"{out}: the index must not be inside the zoo directory")
    rels = [str(f.relative_to(zoo)) for f in files]
    results = pmap(decompose_member, [(str(zoo), r, seed) for r in rels], ray=ray, address=address,
                   progress=progress, desc="decompose")
    skipped, good = [], []
    sig0 = None
    for r in results:
        if "error" in r:
            skipped.append(r["error"])
            continue
        if sig0 is None:
            sig0 = r["signature"]
        if fp._sig_key(r["signature"]) != fp._sig_key(sig0):
            skipped.append(f"{r['member']}: input {r['signature']['dtype']} {r['signature']['shape']} differs "
                           f"from the zoo's {sig0['dtype']} {sig0['shape']} (first member {good[0]['member']})")
            continue
        good.append(r)
    for s in skipped:
        warnings.warn(f"skipped zoo member {s}", stacklevel=1)
    if not good:
        raise InputError(f"{zoo}: no member could be indexed ({len(skipped)} skipped)")
    sources = [probe_data] if probe_data else sorted({str(zoo / r["data"]) for r in good})
    x = _probes(sig0, probes, seed, sources)
    with atomic_directory(out, force=force) as tmp:
        entries = []
        for r in good:
            stem = Path(r["member"]).with_suffix("")
            for m in r["modules"]:
                f = Path("modules") / stem / m["name"]
                (tmp / f).parent.mkdir(parents=True, exist_ok=True)
                (tmp / f).write_bytes(m["bytes"])
                entries.append({"file": str(f), "member": r["member"], "task": r["task"], "data": r["data"],
                                "classes": r["classes"], "member_test_accuracy": r["test_accuracy"],
                                "class_name": m["class_name"], "class_index": m["class_index"],
                                "vocab_sha256": m["vocab_sha256"], "input_signature": m["input_signature"]})
        rows = pmap(fp._row_job, [(str(tmp / e["file"]), "functional", x, 0, sig0["vocab"]) for e in entries],
                    ray=ray, address=address, progress=progress, desc="fingerprint")
        bad = [r for r in rows if isinstance(r, str)]
        if bad:
            raise InputError(f"a decomposed module cannot be run: {bad[0]}")
        table = np.stack(rows).astype(np.float32)
        res = {"fingerprints": table, "widths": np.full(len(rows), table.shape[1], np.int64),
               "files": [e["file"] for e in entries], "sha256": [fp._sha256(tmp / e["file"]) for e in entries],
               "kind": "functional", "seed": seed, "probes": x, "signature": sig0}
        (tmp / "fingerprints.npz").write_bytes(fp.to_npz(res))
        index = {"zoo": zoo.name, "members": len(files), "indexed": len(good), "skipped": skipped,
                 "probes": probes, "seed": seed, "probe_sources": [Path(s).name for s in sources],
                 "signature": sig0, "modules": entries}
        (tmp / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return {"index": str(out), "members": len(files), "indexed": len(good), "skipped": skipped,
            "modules": len(entries), "probes": probes}


def _probes(sig, n, seed, sources) -> np.ndarray:
    return fp.draw_probes(sig, n, seed, list(sources))


_ENTRY = {"file": str, "member": str, "class_name": str, "vocab_sha256": str}


def _check_index(index, where: Path) -> None:
    """index.json as ``build_index`` writes it: what ``find`` reads of each module entry, typed."""
    mods = index.get("modules") if isinstance(index, dict) else None
    if not isinstance(mods, list):
        raise InputError(f"{where}: not an onnxmod zoo index (no 'modules' list)")
    for k, e in enumerate(mods):
        bad = None
        if not isinstance(e, dict):
            bad = "is not an object"
        else:
            bad = next((f"field {f!r} is not a {t.__name__}" for f, t in _ENTRY.items() if not isinstance(e.get(f), t)),
                       None)
            if bad is None and not (e.get("task") is None or isinstance(e["task"], str)):
                bad = "field 'task' is not a string"
            if bad is None and not _signature_ok(e.get("input_signature")):
                bad = "field 'input_signature' is malformed (expected name, dtype and shape per input)"
        if bad:
            raise InputError(f"{where}: module entry {k} {bad}")


def load_index(index_dir) -> tuple[dict, np.ndarray]:
    """index.json and the fingerprint table of an index directory, read through the guarded readers
    (``io.read_json``, ``io.read_npz``) and checked against each other."""
    d = Path(index_dir)
    if not d.is_dir():
        raise InputError(f"{d}: not a directory (an onnxmod zoo index holds index.json and fingerprints.npz)")
    index = read_json(d / "index.json", "a zoo index (index.json)")
    _check_index(index, d / "index.json")
    z = read_npz(d / "fingerprints.npz", "a zoo index's fingerprint table (fingerprints.npz)")
    for key in ("fingerprints", "files"):
        if key not in z:
            raise InputError(f"{z.p}: missing key {key!r}")
    table, files = z["fingerprints"], z["files"]
    if table.ndim != 2 or table.dtype.kind != "f":
        raise InputError(f"{z.p}: fingerprints has shape {list(table.shape)} of {table.dtype}, expected a 2-D "
                         f"float table")
    if files.ndim != 1 or files.dtype.kind != "U" or files.shape[0] != table.shape[0]:
        raise InputError(f"{z.p}: files has shape {list(files.shape)} of {files.dtype}, expected one name per "
                         f"fingerprint row ({table.shape[0]})")
    if [str(f) for f in files] != [e["file"] for e in index["modules"]]:
        raise InputError(f"{d}: index.json and fingerprints.npz list different modules")
    return index, table.astype(np.float64)


def _ranks(a: np.ndarray) -> np.ndarray:
    """Row-wise average ranks, centred and scaled to unit norm (Spearman via dot products)."""
    order = np.argsort(a, axis=1, kind="stable")
    r = np.empty_like(a, dtype=np.float64)
    n = a.shape[1]
    for i in range(a.shape[0]):
        r[i, order[i]] = np.arange(n, dtype=np.float64)
        vals, inv, counts = np.unique(a[i], return_inverse=True, return_counts=True)
        if vals.size < n:  # ties get their average rank
            sums = np.bincount(inv, weights=r[i])
            r[i] = (sums / counts)[inv]
    r -= r.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(r, axis=1, keepdims=True)
    return np.divide(r, norm, out=np.zeros_like(r), where=norm > 0)


def consensus_quality(rows: np.ndarray) -> np.ndarray:
    """Per row, the Spearman correlation of its values with the mean rank profile of the others."""
    k = rows.shape[0]
    if k < 2:
        return np.zeros(k)
    r = _ranks(rows)
    total = r.sum(axis=0)
    out = np.empty(k)
    for i in range(k):
        c = (total - r[i]) / (k - 1)
        c = c - c.mean()
        n = np.linalg.norm(c)
        out[i] = float(r[i] @ c / n) if n > 0 else 0.0
    return out


def predicted_quality(rows: np.ndarray) -> np.ndarray:
    """z(agreement) + z(log std of log-odds) over the candidate rows (module doc)."""
    def z(v):
        sd = v.std()
        return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)

    if rows.shape[0] < 2:
        return np.zeros(rows.shape[0])
    return z(consensus_quality(rows)) + z(np.log(rows.std(axis=1) + 1e-12))


def compatible(index: dict, class_name: str, signature_of) -> tuple[list[int], dict]:
    """Indices of the index's modules of ``class_name`` with ``signature_of``'s input and vocabulary."""
    from .compose import _signature_key

    proto = load_onnx(signature_of)
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(keys.INPUT_SIGNATURE):
        sig = json.loads(meta[keys.INPUT_SIGNATURE])
    else:
        from .graph import Model
        from .modularize import input_signature

        sig = input_signature(Model(proto, source=str(signature_of)))
    vocab = meta.get(keys.VOCAB_SHA256, "")
    key = _signature_key(sig)
    out = [i for i, e in enumerate(index["modules"]) if e["class_name"] == str(class_name)
           and _signature_key(e["input_signature"]) == key and (not vocab or e["vocab_sha256"] == vocab)]
    return out, {"input_signature": sig, "vocab_sha256": vocab}


def find(index_dir, class_name: str, signature_of, top: int = 5, exclude_member: str | None = None,
         task: str | None = None) -> dict:
    """``task`` keeps only modules of members trained on that task (``zoo.task``): where a class name
    means different things in different members (a Tomita acceptor's ``accept``)."""
    index, table = load_index(index_dir)
    if not any(e["class_name"] == str(class_name) for e in index["modules"]):
        names = sorted({e["class_name"] for e in index["modules"]})
        raise InputError(f"{index_dir}: no module of class {class_name!r} (classes: {', '.join(names)})")
    cand, want = compatible(index, class_name, signature_of)
    if exclude_member:
        cand = [i for i in cand if index["modules"][i]["member"] != exclude_member]
    if task is not None:
        cand = [i for i in cand if index["modules"][i]["task"] == task]
    if not cand:
        raise InputError(f"{index_dir}: no module of class {class_name!r}" + (f" of task {task!r}" if task else "")
                         + f" is compatible with {signature_of} (input {want['input_signature']}, vocabulary "
                         f"{want['vocab_sha256'] or 'none'})")
    q = predicted_quality(table[cand])
    order = sorted(range(len(cand)), key=lambda j: (-q[j], index["modules"][cand[j]]["file"]))
    ranked = [{"rank": r + 1, "file": str(Path(index_dir) / index["modules"][cand[j]]["file"]),
               "member": index["modules"][cand[j]]["member"], "task": index["modules"][cand[j]]["task"],
               "score": float(q[j])} for r, j in enumerate(order)]
    return {"class": str(class_name), "candidates": len(cand), "top": ranked[:top], "ranking": ranked}
