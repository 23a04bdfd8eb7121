"""Decompose every fixture model and print monolithic vs composed accuracy (the δ table).

    python tools/decompose_fixtures.py [--task math_topics brown_genre ...] [--mode rolled unrolled]
                                       [--max-loss POINTS]   # the size option (smaller modules)
    python tools/decompose_fixtures.py --set exporters cells --mode rolled   # other exporters' and forms' models

Writes the table as JSON to out/fixtures-report.json (or --json PATH).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxmod import api  # noqa: E402
from onnxmod.concern import ConcernConfig  # noqa: E402
from onnxmod.errors import OnnxmodError  # noqa: E402

TASKS = ["math_topics", "brown_genre", "cmu_phones", "brown_pos"]


def _jobs(args):
    """(task, model file, data file) for every model asked for."""
    if args.set:
        for which in args.set:
            folder = ROOT / "fixtures" / which
            manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else {}
            task_of = {m["file"]: m["task"] for m in manifest.get("models", [])}
            for model in sorted(folder.rglob("*.onnx")):
                rel = str(model.relative_to(folder))
                task = task_of.get(rel, model.parent.name)
                data = ROOT / "fixtures" / task / "data.npz"
                if data.exists():
                    yield task, model, data
        return
    for task in args.task:
        folder = ROOT / "fixtures" / task
        if not (folder / "data.npz").exists():
            print(f"{task}: no fixture (skipped)")
            continue
        for model in sorted(folder.glob("*.onnx")):
            yield task, model, folder / "data.npz"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", nargs="*", default=TASKS)
    p.add_argument("--mode", nargs="*", default=["rolled", "unrolled"])
    p.add_argument("--models", nargs="*", default=None, help="model stems to run, e.g. lstm1 gru2")
    p.add_argument("--removal-cap", type=float, default=ConcernConfig().removal_cap)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-loss", type=float, default=None, metavar="POINTS", help="decompose with the size option")
    p.add_argument("--compensate", action="store_true", help="mean-compensate removed units (see README)")
    p.add_argument("--set", nargs="*", default=None, choices=["exporters", "cells"],
                   help="decompose the models of fixtures/exporters or fixtures/cells (each on its task's data) "
                        "instead of the tasks' own models")
    p.add_argument("--json", default=str(ROOT / "out" / "fixtures-report.json"))
    args = p.parse_args(argv)
    rows = []
    print(f"{'task':12} {'model':12} {'shape':5} {'mode':9} {'model%':>7} {'composed%':>9} {'delta':>7} "
          f"{'params':>7} {'max':>6} {'jaccard':>7} {'time s':>7}")
    for task, model, data in _jobs(args):
        if args.models and model.stem not in args.models:
            continue
        for mode in args.mode:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    r = api.decompose(model, data, Path(tmp) / "o", mode=mode, seed=args.seed,
                                      config=ConcernConfig(removal_cap=args.removal_cap, compensate=args.compensate),
                                      progress=False, max_loss=args.max_loss)
                except OnnxmodError as exc:
                    print(f"{task:12} {model.stem:12} refused: {exc}", flush=True)
                    rows.append({"task": task, "model": str(model.relative_to(ROOT)), "refused": str(exc)})
                    continue
            mods = r["modules"]
            forms = (r.get("recurrence_forms") or {}).get("recurrences")
            row = {"task": task, "model": model.stem, "file": str(model.relative_to(ROOT)), "forms": forms,
                   "shape": r["shape"], "mode": mode,
                   "monolithic_accuracy": r["monolithic_accuracy"], "composed_accuracy": r["composed_accuracy"],
                   "delta": r["delta"], "mean_params_ratio": sum(m["params_ratio"] for m in mods) / len(mods),
                   "max_params_ratio": max(m["params_ratio"] for m in mods),
                   "mean_jaccard": sum(m["jaccard"] for m in mods) / len(mods), "seconds": r["timings"]["total"]}
            rows.append(row)
            print(f"{task:12} {model.stem:12} {r['shape']:5} {mode:9} {100 * row['monolithic_accuracy']:7.2f} "
                  f"{100 * row['composed_accuracy']:9.2f} {100 * row['delta']:+7.2f} "
                  f"{row['mean_params_ratio']:7.3f} {row['max_params_ratio']:6.3f} {row['mean_jaccard']:7.3f} "
                  f"{row['seconds']:7.1f}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
