"""The sha256 of every module file onnxmod writes for every fixture model: refactors change no byte.

    python tools/module_digests.py             # decompose, print the digests, compare with tools/module_digests.json
    python tools/module_digests.py --write     # (re)write tools/module_digests.json (the branch's reference)
    python tools/module_digests.py --only exporters cells   # a subset of the fixture folders
    python tools/module_digests.py --jobs 2    # models decomposed in that many processes

Decomposes every model in ``fixtures/{math_topics,brown_genre,brown_pos,cmu_phones,exporters/*,cells/*}``
in rolled mode (and a few in unrolled mode) with ``evaluate=False``, the guard off and small samples
(``SAMPLES`` positives and negatives, ``SEQUENCES`` traced sequences) to stay fast, and hashes every
``.onnx`` file written (modules, composition, fused composition). The ``surround`` folder decomposes
every model of ``fixtures/surround/manifest.json`` the same way (its CTC models with ``labels="model"``),
and ``options`` a few models with the options whose code paths the plain runs do not take
(``OPTIONS``: the guard, the size search, a CTC head, a translator, gate monitoring, a class subset),
evaluated on the test split. The reports are hashed without their timings (``report.json``'s
``timings``, ``report.md``'s timings line) and with the repository's path taken out. A model onnxmod
refuses is recorded with its refusal's first line, so a refusal that appears or disappears shows too.
Exit status 1 when a digest differs from the reference file (``--write`` replaces the reference instead).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REFERENCE = ROOT / "tools" / "module_digests.json"
FOLDERS = ("math_topics", "brown_genre", "brown_pos", "cmu_phones", "exporters", "cells", "surround", "options")
SAMPLES, SEQUENCES = 40, 120
# unrolled mode is slow (one module per step): a few models, one per form
UNROLLED = ("math_topics/lstm1.onnx", "brown_pos/gru1.onnx", "exporters/tf2onnx_keras3/brown_genre_gru.onnx",
            "cells/digits/indrnn1_loop.onnx")
# (model, data, variant, decompose's keyword arguments): the guard (accuracy; many-output; CTC
# strings; a translator's BLEU), the size search, gate monitoring and a class subset
OPTIONS = (
    ("math_topics/lstm1.onnx", "math_topics/data.npz", "guard", {"mode": "rolled"}),
    ("brown_pos/gru1.onnx", "brown_pos/data.npz", "guard", {"mode": "rolled"}),
    ("math_topics/gru1.onnx", "math_topics/data.npz", "max_loss", {"mode": "rolled", "max_loss": 1.0}),
    ("brown_genre/lstm1.onnx", "brown_genre/data.npz", "max_loss", {"mode": "rolled", "max_loss": 1.0}),
    ("math_topics/lstm1.onnx", "math_topics/data.npz", "gates", {"mode": "rolled", "monitor": "gates"}),
    ("math_topics/lstm1.onnx", "math_topics/data.npz", "classes", {"mode": "rolled", "classes": "algebra,3"}),
    ("ctc/crnn_batch_first.onnx", "ctc/data.npz", "ctc guard", {"labels": "model"}),
    ("ctc/crnn_batch_first.onnx", "ctc/data.npz", "ctc max_loss", {"labels": "model", "mode": "rolled",
                                                                   "max_loss": 1.0}),
    ("translation/en_frdeit/rnn_tanh.onnx", "translation/en_frdeit/data.npz", "guard", {"mode": "rolled"}),
)


def jobs(only) -> list[tuple[str, str, str, dict]]:
    """(model path relative to fixtures/, data path, variant, options) for every model to decompose;
    the variant is the mode for plain runs (guard off, small samples)."""
    out = []
    fx = ROOT / "fixtures"
    for folder in only:
        if folder == "options":
            out.extend((rel, str(fx / data), variant, {"guarded": True, "evaluate": True, **kw})
                       for rel, data, variant, kw in OPTIONS)
            continue
        if folder == "surround":
            for e in json.loads((fx / "surround" / "manifest.json").read_text())["models"]:
                kw = {"labels": "model", "ctc_blank": 0} if e["task"] == "digits_ctc" else {}
                out.append((f"surround/{e['file']}", str(ROOT / e["data"]), "rolled", {"mode": "rolled", **kw}))
            continue
        base = fx / folder
        if not base.exists():
            continue
        manifest = json.loads((base / "manifest.json").read_text()) if (base / "manifest.json").exists() else {}
        task_of = {m["file"]: m["task"] for m in manifest.get("models", [])}
        for model in sorted(base.rglob("*.onnx")):
            rel = str(model.relative_to(fx))
            task = task_of.get(str(model.relative_to(base)), model.parent.name if folder in ("exporters", "cells")
                               else folder)
            data = fx / task / "data.npz"
            if not data.exists():
                continue
            out.append((rel, str(data), "rolled", {"mode": "rolled"}))
            if rel in UNROLLED:
                out.append((rel, str(data), "unrolled", {"mode": "unrolled"}))
    return out


def digest(job) -> tuple[str, dict]:
    """Decompose one model; {file written: sha256} or {"refused": first line of the refusal}."""
    from onnxmod import api
    from onnxmod.concern import ConcernConfig
    from onnxmod.errors import OnnxmodError
    from onnxmod.sampling import SamplingConfig

    rel, data, variant, kw = job
    key = f"{rel} [{variant}]"
    kw = dict(kw)
    guarded = kw.pop("guarded", False)
    cfg = ConcernConfig(sampling=SamplingConfig(positives=SAMPLES, negatives=SAMPLES, max_sequences=SEQUENCES))
    if not guarded:
        cfg.guard = None
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = Path(tmp) / "out"
        try:
            api.decompose(ROOT / "fixtures" / rel, data, out, seed=0, config=cfg, progress=False, threads=1,
                          **{"evaluate": False, **kw})
        except OnnxmodError as exc:
            return key, {"refused": str(exc).splitlines()[0].replace(str(ROOT) + "/", "")}
        files = sorted(p for p in out.rglob("*.onnx"))
        got = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
        return key, {**got, **{name: _report_digest(out / name) for name in REPORTS if (out / name).exists()}}


REPORTS = ("report.json", "report.md", "report.html")


def _report_digest(path: Path) -> str:
    """sha256 of a report without what changes from run to run (timings) or from clone to clone
    (the repository's path)."""
    text = path.read_text(encoding="utf-8")
    if path.name == "report.json":
        report = json.loads(text)
        report.pop("timings", None)
        text = json.dumps(report, sort_keys=True, indent=1)
    elif path.name == "report.md":
        text = "\n".join(line for line in text.splitlines() if not line.startswith("Timings (s): "))
    return hashlib.sha256(text.replace(str(ROOT) + "/", "").encode()).hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=list(FOLDERS), help="fixture folders (default: all)")
    p.add_argument("--write", action="store_true", help=f"write {REFERENCE.relative_to(ROOT)} instead of comparing")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--reference", default=str(REFERENCE))
    args = p.parse_args(argv)
    todo = jobs(args.only)
    got: dict[str, dict] = {}
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as ex:
            for key, files in ex.map(digest, todo):
                got[key] = files
                print(key, "refused" if "refused" in files else f"{len(files)} files", flush=True)
    else:
        for job in todo:
            key, files = digest(job)
            got[key] = files
            print(key, "refused" if "refused" in files else f"{len(files)} files", flush=True)
    ref_path = Path(args.reference)
    if args.write:
        old = json.loads(ref_path.read_text()) if ref_path.exists() else {}
        old.update(got)
        ref_path.write_text(json.dumps(dict(sorted(old.items())), indent=1) + "\n")
        print(f"wrote {len(got)} models' digests to {ref_path}")
        return 0
    ref = json.loads(ref_path.read_text()) if ref_path.exists() else {}
    same, differ, new = 0, [], []
    for key, files in got.items():
        if key not in ref:
            new.append(key)
        elif ref[key] == files:
            same += 1
        else:
            differ.append(key)
    for key in differ:
        was, now = ref[key], got[key]
        what = (f"refused: {now['refused']}" if "refused" in now else
                f"was refused ({was['refused']})" if "refused" in was else
                ", ".join(sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))))
        print(f"DIFFERS {key}: {what}")
    for key in new:
        print(f"NEW {key}")
    print(f"{same} identical, {len(differ)} different, {len(new)} not in the reference")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
