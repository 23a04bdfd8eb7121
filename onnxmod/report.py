"""``report.json`` and ``report.md`` for a decomposition."""
from __future__ import annotations

import json


def _pct(x):
    return "—" if x is None else f"{100 * x:.2f}"


def _delta(x):
    return "—" if x is None else f"{100 * x:+.2f}"


def markdown(report: dict) -> str:
    lines = [f"# onnxmod decomposition: `{report['model']}`", "",
             f"- shape **{report['shape']}**, mode **{report['mode']}**, seed {report['seed']}",
             f"- monolithic accuracy **{_pct(report['monolithic_accuracy'])} %**, composed "
             f"**{_pct(report['composed_accuracy'])} %**, δ **{_delta(report['delta'])}** points",
             f"- parameters: model {report['model_params']:,}, composed {report['composed_params']:,}", "",
             "| class | name | model acc % | composed acc % | δ | module params | params ratio | jaccard | module binary acc % |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in report["modules"]:
        d = m["delta"]
        lines.append(
            f"| {m['class']} | {m['name']} | {_pct(m['monolithic_accuracy'])} | {_pct(m['composed_accuracy'])} | "
            f"{_delta(d)} | {m['params']:,} | {m['params_ratio']:.3f} | "
            f"{m['jaccard']:.3f} | {_pct(m['binary_accuracy'])} |")
    if report.get("skipped"):
        lines += ["", "Skipped classes (no training samples): " + ", ".join(report["skipped"])]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report["timings"].items()), ""]
    return "\n".join(lines)


def table(report: dict) -> str:
    """The per-class table printed by the CLI."""
    rows = [("class", "name", "model%", "composed%", "delta", "params", "jaccard")]
    for m in report["modules"]:
        d = m["delta"]
        rows.append((str(m["class"]), m["name"][:18], _pct(m["monolithic_accuracy"]), _pct(m["composed_accuracy"]),
                     _delta(d), f"{m['params']:,}", f"{m['jaccard']:.3f}"))
    rows.append(("all", "", _pct(report["monolithic_accuracy"]), _pct(report["composed_accuracy"]),
                 _delta(report["delta"]), f"{report['composed_params']:,}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i != 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"
