"""``report.html``: one self-contained page (no network, no script; charts inline as SVG) drawn from
the report dict ``onnxmod.api`` builds — for ``decompose`` (``decomposition``) and ``evaluate
--report`` (``evaluation``).

Charts come from ``onnxmod.plots`` (no dependency, about a millisecond each): δ per class (with
the loss bound, classes beyond it outlined), kept units per class and layer (and step) on a fixed
0–1 scale, which units each class drops (units × classes, with the share of classes dropping each
unit: overlaps line up), the guard's or the size search's trail. The same report gives the same
bytes.
"""
from __future__ import annotations

import html

from . import plots
from . import report as rep

_CSS = ("body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;padding:0 1.2em;"
        "max-width:72em;color:#222}\n"
        """h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}th,td{padding:.25em .7em;border-bottom:1px solid #e4e4e4}
th{background:#f4f4f4;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.all td{font-weight:600;border-top:2px solid #bbb}svg{max-width:100%;height:auto;display:block;margin:.6em 0}
.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.4em .8em}
.warn{background:#fde8e8;border-left:4px solid #d33;padding:.4em .8em}caption{text-align:left;color:#555}""")


def _e(x) -> str:
    return html.escape(str(x))


def _table(head, rows, last=None, numeric_from=2, caption=None) -> str:
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{_e(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    for r, cls in [(r, "") for r in rows] + ([(last, ' class="all"')] if last else []):
        cells = "".join(f'<td class="n">{_e(c)}</td>' if i >= numeric_from or i == 0 < numeric_from - 1
                        else f"<td>{_e(c)}</td>"
                        for i, c in enumerate(r))
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# --- decomposition -------------------------------------------------------------------------------

def _kept_maps(report: dict) -> list[str]:
    """Kept units on a fixed 0–1 scale: per class x layer (rolled), per layer class x step (unrolled)."""
    mods = report["modules"]
    if not mods or not mods[0].get("units"):
        return []
    layers = list(mods[0]["units"])
    names = [m["name"] for m in mods]
    label = "share of units kept"
    if mods[0].get("kept_units_per_step"):
        out = []
        for layer in layers:
            total = mods[0]["units"][layer]
            frac = [[k / total for k in m["kept_units_per_step"][layer]] for m in mods]
            out.append(plots.heatmap(names, frac, f"{layer}: fraction of its {total} units kept, per class and step",
                                     label, column_label="step"))
        return out
    frac = [[m["kept_units"][layer] / m["units"][layer] for layer in layers] for m in mods]

    def text(i, j):
        return f"{mods[i]['kept_units'][layers[j]]:g}/{mods[i]['units'][layers[j]]}"
    return [plots.heatmap(names, frac, "kept units per class and layer", label, columns=layers, cell_text=text)]


def _dropped_maps(report: dict) -> list[str]:
    """Per layer, which units each class drops (units x classes; unrolled: the share of steps at which
    it drops them), and under it the share of classes that drop each unit: where concerns overlap."""
    mods = report["modules"]
    if not mods or "dropped_units" not in mods[0]:
        return []
    unrolled = "dropped_unit_steps" in mods[0]
    steps = len(next(iter(mods[0]["kept_units_per_step"].values()))) if unrolled else 1
    out = []
    for layer, total in mods[0]["units"].items():
        rows = []
        for m in mods:
            row = [0.0] * total
            counts = m["dropped_unit_steps"][layer] if unrolled else [steps] * len(m["dropped_units"][layer])
            for u, k in zip(m["dropped_units"][layer], counts):
                row[u] = k / steps
            rows.append(row)
        share = [sum(r[u] > 0 for r in rows) / len(rows) for u in range(total)]
        what = "share of steps dropped" if unrolled else "1 = dropped"
        out.append(plots.heatmap([m["name"] for m in mods] + ["share of classes"], rows + [share],
                                 f"{layer}: units dropped per class ({total} units)", what, column_label="unit",
                                 scale=plots.REDS))
    return out


def _bound(report: dict) -> float | None:
    """The loss bound the decomposition promised, in points (size search or guard), or None."""
    s = report.get("size_search") or {}
    if s.get("kind") == "size search":
        return s.get("max_loss_points")
    if s.get("kind") == "guard" and "heldout_model_bleu" not in s:
        return s.get("tolerance_points")
    return None


def _delta_plot(report: dict) -> list[str]:
    mods = report["modules"]
    translator = report.get("shape") == "enc-dec"
    key = "delta_bleu" if translator else "delta"
    vals = [m.get(key) for m in mods]
    if all(v is None for v in vals):
        return []
    scale = 1 if translator else 100
    names = [m["name"] for m in mods]
    bound = _bound(report)
    flagged = {f["name"] for f in report.get("flagged_classes") or []}
    out = [plots.bars(names, [None if v is None else scale * v for v in vals],
                      "composed minus model, per " + ("language" if translator else "class"),
                      "δ BLEU" if translator else "δ (points)", signed=True,
                      reference=None if bound is None else (-bound, f"bound -{bound:g}"), marked=flagged)]
    if translator:
        mono, comp = report.get("monolithic_bleu") or {}, report.get("composed_bleu") or {}
        langs = [n for n in names if n in mono]
        if langs:
            out.append(plots.grouped_bars(langs, [("model", plots.BLUE, [mono[k] for k in langs]),
                                                  ("composed", "#e67e22", [comp[k] for k in langs])],
                                          "BLEU per target language", "BLEU"))
    return out


def _search_plot(report: dict) -> list[str]:
    s = report.get("size_search") or {}
    if s.get("kind") == "guard":
        translator = "heldout_model_bleu" in s
        pts = [(t["cap"], t["heldout_bleu"] if translator else 100 * t["heldout_accuracy"],
                "ok" if t["accepted"] else "no") for t in s["trail"]]
        base = s["heldout_model_bleu"] if translator else 100 * s["heldout_model_accuracy"]
        caps = sorted({t["cap"] for t in s["trail"]})
        return [plots.trail(pts, "guard: removal caps tried", "removal cap",
                            "validation " + ("mean BLEU" if translator else "accuracy %"),
                            hlines=[(base, plots.BLUE, "5 3", "model"),
                                    (base - s["tolerance_points"], plots.RED, "2 3", "tolerance")],
                            connect=True, x_ticks=caps or None,
                            legend=[("dot", plots.GREEN, "accepted"), ("cross", plots.RED, "rejected")])]
    if s.get("kind") != "size search" or not s.get("trail"):
        return []
    trail, cert = s["trail"], s.get("certification") or []
    kept = cert[-1]["accepted_steps_kept"] if cert else 0
    # replay the accepted steps: the mean fraction of units removed over classes after each
    state, removed, bounds, accepted_idx = {}, [], [], []
    classes = [c["class"] for c in s["chosen"]]
    for i, t in enumerate(trail):
        if t["accepted"]:
            state[t["class"]] = t["units_removed"]
            removed.append(100 * sum(state.get(c, 0.0) for c in classes) / len(classes))
            bounds.append(100 * t["loss_bound"])
            accepted_idx.append(i)
    pts = [(i, 100 * t["loss_bound"], "ok" if t["accepted"] else "no") for i, t in enumerate(trail)
           if t["loss_bound"] is not None]
    certified = (accepted_idx[kept - 1], "certified choice") if 0 < kept <= len(accepted_idx) else None
    out = [plots.trail(pts, "size search: loss bound of every step tried", "step tried", "loss bound (points)",
                       hlines=[(s.get("max_loss_points", 0), "#222222", "5 3", "max loss")], vline=certified,
                       legend=[("dot", plots.GREEN, "accepted"), ("cross", plots.RED, "rejected")])]
    if removed:
        pts = [(r, b, "plain") for r, b in zip(removed, bounds)]
        if 0 < kept <= len(removed):
            pts.append((removed[kept - 1], bounds[kept - 1], "mark"))
        out.append(plots.trail(pts, "size vs loss (accepted steps)", "mean units removed per module (%)",
                               "loss bound (points)", legend=[("dot", plots.GREY, "accepted step")]
                               + ([("dot", plots.BLUE, "certified choice")] if 0 < kept <= len(removed) else [])))
    return out


def s_kind(report: dict) -> str | None:
    return (report.get("size_search") or {}).get("kind")


def decomposition(report: dict) -> str:
    """The page for one decomposition (what ``decompose`` writes as ``report.html``)."""
    translator = report.get("shape") == "enc-dec"
    body = [f"<h1>onnxmod decomposition: <code>{_e(report['model'])}</code></h1>",
            f"<p>data <code>{_e(report.get('data', ''))}</code>; shape <b>{_e(report['shape'])}</b>, mode "
            f"<b>{_e(report['mode'])}</b>, seed {_e(report['seed'])}; parameters: model "
            f"{report['model_params']:,}, composed {report['composed_params']:,}</p>"]
    words = rep.guard_sentences(report)
    if words:
        cls = "warn" if any(k in w for w in words for k in ("whole model", "bigger", "Beyond the bound")) else "note"
        title = "What the size search decided" if s_kind(report) == "size search" else "What the guard decided"
        body += [f"<h2>{title}</h2>"] + [f'<p class="{cls}">{_e(w)}</p>' for w in words]
    head, rows, last = rep.per_class_rows(report)
    if not translator:
        head = head + ["module binary acc %", "module AUC"]
        for r, m in zip(rows, report["modules"]):
            r += [rep._pct(m.get("binary_accuracy")), "—" if m.get("auc") is None else f"{m['auc']:.4f}"]
        last = last + ["", ""]
    body += ["<h2>Per class</h2>", _table(head, rows, last, caption=rep.caption(report))]
    if rep.ctc_line(report):
        body.append(f"<p>{_e(rep.ctc_line(report))}</p>")
    charts = _delta_plot(report)
    if charts:
        body += ["<h2>" + ("BLEU and δ per language" if translator else "δ per class") + "</h2>", *charts]
    charts = _kept_maps(report)
    if charts:
        body += ["<h2>Kept units</h2>", *charts]
    charts = _dropped_maps(report)
    if charts:
        body += ["<h2>Units each class drops</h2>", *charts]
    s = report.get("size_search") or {}
    if s.get("kind") == "size search":
        body += ["<h2>Size search</h2>", _table(
            ["class", "units removed", "vocabulary rows removed", "embedding features removed"],
            [[c["class"], f"{c['units_removed']:.0%}", f"{c['vocabulary_removed']:.0%}",
              f"{c['embedding_features_removed']:.1%}"] for c in s["chosen"]], numeric_from=1)]
    elif s.get("kind") == "guard":
        tb = "heldout_model_bleu" in s
        body += ["<h2>Guard trail</h2>", _table(
            ["removal cap", "validation " + ("mean BLEU" if tb else f"{s.get('metric', 'accuracy')} %"), "accepted"],
            [[f"{t['cap']:g}", f"{t['heldout_bleu']:.2f}" if tb else rep._pct(t["heldout_accuracy"]),
              "yes" if t["accepted"] else "no"] for t in s["trail"]], numeric_from=1)]
    body += _search_plot(report)
    if report.get("skipped"):
        body.append(f"<p>Skipped classes (no training samples): {_e(', '.join(report['skipped']))}</p>")
    return _page(f"onnxmod: {report['model']}", body)


# --- evaluation ----------------------------------------------------------------------------------

def evaluation(result: dict) -> str:
    """The page for ``evaluate --report FILE.html``: the per-class table and a bar chart."""
    pcs = result["per_class"]
    bleu = "bleu" in result
    body = [f"<h1>onnxmod evaluation: <code>{_e(result['model'])}</code> ({_e(result['kind'])})</h1>",
            f"<p>{_e(evaluation_summary(result))}</p>"]
    if result.get("classes_note"):
        body.append(f'<p class="note">{_e(result["classes_note"])}</p>')
    if bleu:
        head = ["class", "language", "BLEU", "sentences"]
        rows = [[c["class"], c["name"], rep._bleu(c.get("bleu")), f"{c['support']:,}"] for c in pcs]
    else:
        head = ["class", "name", f"{result.get('metric', 'accuracy')} %", "samples"]
        rows = [[c["class"], c["name"], rep._pct(c["accuracy"]), f"{c['support']:,}"] for c in pcs]
    body += ["<h2>Per class</h2>", _table(head, rows)]
    vals = [(c["name"], c.get("bleu") if bleu else (None if c["accuracy"] is None else 100 * c["accuracy"]))
            for c in pcs]
    vals = [(n, v) for n, v in vals if v is not None]
    if vals:
        body.append(plots.bars([n for n, _ in vals], [v for _, v in vals], "per class",
                               "BLEU" if bleu else f"{result.get('metric', 'accuracy')} %"))
    return _page(f"onnxmod: {result['model']}", body)


def evaluation_summary(r: dict) -> str:
    """One line: what was scored, in which metric, on how many samples."""
    if "bleu" in r:
        b = [v for v in r["bleu"].values() if v is not None]
        mean = f"{sum(b) / len(b):.2f}" if b else "—"
        return (f"{r['model']} ({r['kind']}): mean BLEU {mean} over {len(r['bleu'])} languages on "
                f"{r['samples']:,} test sentences; teacher-forced next-token accuracy "
                f"{rep._pct(r['accuracy'])} %")
    s = (f"{r['model']} ({r['kind']}): {r.get('metric', 'accuracy')} {rep._pct(r['accuracy'])} % "
         f"on {r['samples']:,} test samples")
    if r.get("auc") is not None:
        s += f", ROC AUC {r['auc']:.4f}"
    if r.get("string_accuracy") is not None:
        s += f"; string accuracy {rep._pct(r['string_accuracy'])} % on {r['strings']:,} strings"
    if r.get("cer") is not None:
        s += (f" (greedy CTC decoding against {r.get('reference', 'the reference')}), character error rate "
              f"{rep._pct(r['cer'])} %")
    return s
