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
    lines += _held_out(report.get("size_search"))
    if report.get("skipped"):
        lines += ["", "Skipped classes (no training samples): " + ", ".join(report["skipped"])]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report["timings"].items()), ""]
    return "\n".join(lines)


def _held_out(s: dict | None) -> list[str]:
    """What the validation split decided: the guard's cap, or the size search's choices."""
    if not s:
        return []
    if s.get("kind") == "guard":
        return ["", f"Guard ({s['heldout_rows']:,} validation rows): removal cap {s['cap']} "
                    f"(tried {', '.join(str(t['cap']) for t in s['trail'])}; tolerance {s['tolerance_points']} points)."]
    if s.get("kind") != "size search":
        return []
    cert = s.get("certification") or []
    kept = cert[-1]["accepted_steps_kept"] if cert else None
    out = ["", f"Size search (max loss {s['max_loss_points']} points; {s['heldout_rows']:,} validation rows, "
               f"{s['search_rows']:,} searched): {sum(t['accepted'] for t in s['trail'])} steps accepted, "
               f"{kept} kept after certification on the unseen half (loss bound "
               f"{100 * cert[-1]['loss_bound']:.2f} points).", "",
           "| class | units removed | vocabulary rows removed | embedding features removed |", "|---|---:|---:|---:|"]
    out += [f"| {c['class']} | {c['units_removed']:.0%} | {c['vocabulary_removed']:.0%} | "
            f"{c['embedding_features_removed']:.1%} |" for c in s["chosen"]]
    return out


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
