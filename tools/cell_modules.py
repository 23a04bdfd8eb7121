"""Decompose every custom-cell fixture (``fixtures/cells``) and write the modules' table.

    python tools/cell_modules.py            # ~4 min on 2 cores; needs neither torch nor scikit-learn

For each model of ``fixtures/cells/manifest.json`` (DuRNN 1 and 2 layers, IndRNN, the GRU cell in
plain ops, each in both exports, and the native LSTM/GRU of about the DuRNN's size), rolled modules
twice: on the shipped defaults (removal cap 5 %, the guard backing the cap off while validation
accuracy drops more than 0.5 point) and with the guard off (the cap applied as is). Records δ
(composed − monolithic test accuracy), the units the modules keep, their parameters and bytes
against the model's, and whether ``fused.onnx`` was built, in ``fixtures/cells/modules.json``, and
the tables in ``fixtures/cells/README.md`` between ``<!-- modules:begin -->`` and
``<!-- modules:end -->``.
"""
from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxmod import api  # noqa: E402
from onnxmod.concern import ConcernConfig  # noqa: E402

CELLS = ROOT / "fixtures" / "cells"
LABEL = {"durnn": "DuRNN", "indrnn": "IndRNN", "grucell": "GRU cell in plain ops", "lstm": "LSTM (nn.LSTM)",
         "gru": "GRU (nn.GRU)"}
ORDER = ("durnn", "lstm", "gru", "indrnn", "grucell")
RUNS = {"defaults": ConcernConfig(), "no guard": ConcernConfig(guard=None)}


def run(model: dict, task: str) -> dict:
    out = {}
    for label, cfg in RUNS.items():
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = api.decompose(ROOT / "fixtures" / model["file"], ROOT / "fixtures" / task / "data.npz",
                              Path(tmp) / "o", mode="rolled", config=cfg, progress=False)
            mbytes = [(Path(tmp) / "o" / m["file"]).stat().st_size for m in r["modules"]]
        kept = [sum(m["kept_units"].values()) for m in r["modules"]]
        units = sum(r["modules"][0]["units"].values())
        out[label] = {"delta": round(r["delta"], 6), "monolithic_accuracy": round(r["monolithic_accuracy"], 6),
                      "composed_accuracy": round(r["composed_accuracy"], 6), "units": units,
                      "mean_kept_units": round(sum(kept) / len(kept), 2), "max_kept_units": max(kept),
                      "max_params_ratio": round(max(m["params_ratio"] for m in r["modules"]), 4),
                      "max_bytes_ratio": round(max(mbytes) / (ROOT / "fixtures" / model["file"]).stat().st_size, 4),
                      "recurrences": r["recurrence_forms"]["recurrences"] if r["recurrence_forms"] else ["native"],
                      "fused_why_not": r["fused"].get("why_not")}
        print(f"{model['file']:42} {label:9} δ {100 * r['delta']:+6.2f}  kept {out[label]['mean_kept_units']:5.1f}/"
              f"{units}  params ≤ {out[label]['max_params_ratio']:.3f}  bytes ≤ {out[label]['max_bytes_ratio']:.3f}",
              flush=True)
    return out


def tables(man: dict, res: dict) -> str:
    lines = ["### Modules: DuRNN vs LSTM vs GRU", "",
             "Rolled modules, δ = composed − monolithic test accuracy (points). *defaults*: removal cap 5 % with "
             "the guard (0.5 point on the validation split); *no guard*: the cap as is. Units: mean kept / total per "
             "module; size: the largest module's parameters and bytes against the model's.", "",
             "| task | model | layers | params | test acc. | δ (defaults) | units kept | δ (no guard) | units kept | "
             "params ≤ | bytes ≤ |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for task in ("digits_pixels", "digits", "brown_genre"):
        for m in sorted(man["tasks"][task]["models"], key=lambda m: (ORDER.index(m["cell"]), m["layers"], m["export"])):
            r = res.get(m["file"])
            if r is None or m["export"] == "unrolled":  # the unrolled export: same numbers (table below)
                continue
            d, n = r["defaults"], r["no guard"]
            lines.append(f"| {task} | {LABEL[m['cell']]} | {m['layers']} | {m['params']:,} | "
                         f"{100 * m['test_accuracy']:.2f} % | {100 * d['delta']:+.2f} | "
                         f"{d['mean_kept_units']:g}/{d['units']} | "
                         f"{100 * n['delta']:+.2f} | {n['mean_kept_units']:g}/{n['units']} | "
                         f"{n['max_params_ratio']:.3f} | "
                         f"{n['max_bytes_ratio']:.3f} |")
    lines += ["", "### Modules of every export", "",
              "| file | recurrence as onnxmod runs it | δ (defaults) | δ (no guard) | units kept (no guard) | "
              "fused.onnx |", "|---|---|---:|---:|---:|---|"]
    for task in ("digits_pixels", "digits", "brown_genre"):
        for m in sorted(man["tasks"][task]["models"], key=lambda m: (ORDER.index(m["cell"]), m["layers"], m["export"])):
            r = res.get(m["file"])
            if r is None:
                continue
            d, n = r["defaults"], r["no guard"]
            fused = "built" if d["fused_why_not"] is None else "not built: " + d["fused_why_not"].split(") ", 1)[-1]
            lines.append(f"| `{m['file'][len('cells/'):]}` | {'; '.join(d['recurrences'])} | {100 * d['delta']:+.2f} | "
                         f"{100 * n['delta']:+.2f} | {n['mean_kept_units']:g}/{n['units']} | {fused} |")
    return "\n".join(lines)


def main() -> int:
    man = json.loads((CELLS / "manifest.json").read_text())
    res = {}
    for task, t in man["tasks"].items():
        for m in t["models"]:
            res[m["file"]] = run(m, task)
    (CELLS / "modules.json").write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    readme = CELLS / "README.md"
    text = readme.read_text()
    begin, end = "<!-- modules:begin -->", "<!-- modules:end -->"
    a, b = text.index(begin) + len(begin), text.index(end)
    readme.write_text(text[:a] + "\n\n" + tables(man, res) + "\n\n" + text[b:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
