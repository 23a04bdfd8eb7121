"""``report.html``: one self-contained page (no network, images inline as base64 PNG) drawn from the
report dict ``onnxmod.api`` builds — for ``decompose`` (``decomposition``) and ``evaluate --report``
(``evaluation``).

Plots need matplotlib, the optional extra ``pip install 'onnxmod[report]'``. Without it the page is
still written, with every table and the guard's decision in words, and one line saying that the
plots need the extra. Figures are rendered with the Agg canvas (no display, no pyplot state) and
without PNG timestamps, so the same report gives the same bytes.
"""
from __future__ import annotations

import base64
import html
import io

from . import report as rep

NO_PLOTS = ("Plots need matplotlib: <code>pip install 'onnxmod[report]'</code> "
            "(the tables below are complete without it).")

_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;padding:0 1.2em;max-width:72em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}th,td{padding:.25em .7em;border-bottom:1px solid #e4e4e4}
th{background:#f4f4f4;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.all td{font-weight:600;border-top:2px solid #bbb}img{max-width:100%;display:block;margin:.6em 0}
.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.4em .8em}
.warn{background:#fde8e8;border-left:4px solid #d33;padding:.4em .8em}caption{text-align:left;color:#555}"""


def _matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}">'


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

def _heatmaps(Figure, report: dict) -> list[str]:
    """Kept units per class x layer; unrolled modules: per layer, class x step."""
    mods = report["modules"]
    if not mods or not mods[0].get("units"):
        return []
    layers = list(mods[0]["units"])
    names = [m["name"] for m in mods]
    out = []
    if mods[0].get("kept_units_per_step"):
        for layer in layers:
            steps = [m["kept_units_per_step"][layer] for m in mods]
            total = mods[0]["units"][layer]
            frac = [[k / total for k in s] for s in steps]
            fig = Figure(figsize=(min(14, 3 + 0.12 * len(frac[0])), 1 + 0.35 * len(mods)))
            ax = fig.add_subplot()
            im = ax.imshow(frac, aspect="auto", cmap="viridis", vmin=min(min(r) for r in frac + [[1.0]]), vmax=1.0,
                           interpolation="nearest")
            ax.set_yticks(range(len(names)), names)
            ax.set_xlabel("step")
            ax.set_title(f"{layer}: fraction of {total} units kept, per class and step")
            fig.colorbar(im, ax=ax, fraction=0.03)
            out.append(_img(fig, f"kept units of {layer} per class and step"))
        return out
    frac = [[m["kept_units"][layer] / m["units"][layer] for layer in layers] for m in mods]
    fig = Figure(figsize=(2.5 + 1.6 * len(layers), 1 + 0.42 * len(mods)))
    ax = fig.add_subplot()
    lo = min(min(r) for r in frac)
    im = ax.imshow(frac, aspect="auto", cmap="viridis", vmin=min(lo, 0.9), vmax=1.0)
    ax.set_yticks(range(len(names)), names)
    ax.set_xticks(range(len(layers)), layers, rotation=20, ha="right")
    for i, m in enumerate(mods):
        for j, layer in enumerate(layers):
            k, u = m["kept_units"][layer], m["units"][layer]
            ax.text(j, i, f"{k:g}/{u}", ha="center", va="center", fontsize=8,
                    color="white" if frac[i][j] < (lo + 1) / 2 else "black")
    ax.set_title("kept units per class and layer")
    fig.colorbar(im, ax=ax, fraction=0.04)
    return [_img(fig, "kept units per class and layer")]


def _delta_plot(Figure, report: dict) -> list[str]:
    mods = report["modules"]
    translator = report.get("shape") == "enc-dec"
    key = "delta_bleu" if translator else "delta"
    vals = [m.get(key) for m in mods]
    if all(v is None for v in vals):
        return []
    scale = 1 if translator else 100
    y = [0.0 if v is None else scale * v for v in vals]
    fig = Figure(figsize=(max(4, 0.6 * len(mods) + 2), 2.8))
    ax = fig.add_subplot()
    ax.bar(range(len(mods)), y, color=["#c0392b" if v < 0 else "#2e86c1" for v in y])
    ax.axhline(0, color="#444", lw=0.8)
    if not any(y):
        ax.text(0.5, 0.6, "δ = 0 for every " + ("language" if translator else "class"), transform=ax.transAxes,
                ha="center", color="#444")
    ax.set_xticks(range(len(mods)), [m["name"] for m in mods], rotation=30, ha="right")
    ax.set_ylabel("δ BLEU" if translator else "δ (points)")
    ax.set_title("composed minus model, per " + ("language" if translator else "class"))
    out = [_img(fig, "delta per class")]
    if translator:
        mono, comp = report.get("monolithic_bleu") or {}, report.get("composed_bleu") or {}
        langs = [m["name"] for m in mods if m["name"] in mono]
        if langs:
            fig = Figure(figsize=(max(4, 0.9 * len(langs) + 2), 2.8))
            ax = fig.add_subplot()
            xs = range(len(langs))
            ax.bar([x - 0.2 for x in xs], [mono[k] for k in langs], 0.4, label="model")
            ax.bar([x + 0.2 for x in xs], [comp[k] for k in langs], 0.4, label="composed")
            ax.set_xticks(list(xs), langs)
            ax.set_ylabel("BLEU")
            ax.set_title("BLEU per target language")
            ax.set_ylim(0, 1.25 * max([mono[k] for k in langs] + [comp[k] for k in langs] + [1.0]))
            ax.legend(loc="upper center", ncol=2, fontsize=8)
            out.append(_img(fig, "BLEU per language"))
    return out


def _search_plot(Figure, report: dict) -> list[str]:
    s = report.get("size_search") or {}
    if s.get("kind") == "guard":
        trail = s["trail"]
        translator = "heldout_model_bleu" in s
        fig = Figure(figsize=(4.5, 2.8))
        ax = fig.add_subplot()
        caps = [t["cap"] for t in trail]
        vals = [t["heldout_bleu"] if translator else 100 * t["heldout_accuracy"] for t in trail]
        ax.plot(caps, vals, "o-", color="#555")
        for c, v, t in zip(caps, vals, trail):
            ax.plot([c], [v], "o", color="#27ae60" if t["accepted"] else "#c0392b", ms=9)
        base = s["heldout_model_bleu"] if translator else 100 * s["heldout_model_accuracy"]
        ax.axhline(base, ls="--", color="#2e86c1", lw=1, label="model")
        ax.axhline(base - s["tolerance_points"], ls=":", color="#c0392b", lw=1, label="tolerance")
        top = max(caps) or 1.0
        ax.set_xlim(-0.1 * top, 1.15 * top)
        ax.set_xticks(sorted(set(caps)), [f"{c:g}" for c in sorted(set(caps))])
        ax.set_xlabel("removal cap")
        ax.set_ylabel("validation " + ("mean BLEU" if translator else "accuracy %"))
        ax.set_title("guard: caps tried (green accepted)")
        ax.legend(fontsize=8)
        return [_img(fig, "guard trail")]
    if s.get("kind") != "size search" or not s.get("trail"):
        return []
    trail = s["trail"]
    cert = s.get("certification") or []
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
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    rej = [(i, 100 * t["loss_bound"]) for i, t in enumerate(trail) if not t["accepted"] and t["loss_bound"] is not None]
    if rej:
        ax.plot(*zip(*rej), "x", color="#c0392b", label="rejected step")
    if accepted_idx:
        ax.plot(accepted_idx, bounds, "o", color="#27ae60", ms=4, label="accepted step")
    ax.axhline(s.get("max_loss_points", 0), ls="--", color="#444", lw=1, label="max loss")
    if 0 < kept <= len(accepted_idx):
        ax.axvline(accepted_idx[kept - 1], color="#2e86c1", lw=1.5, label="certified choice")
    ax.set_xlabel("step tried")
    ax.set_ylabel("loss bound (points)")
    ax.set_title("size search: loss bound of every step tried")
    ax.legend(fontsize=7, loc="upper left")
    out = [_img(fig, "size search trail")]
    if removed:
        fig = Figure(figsize=(5, 3))
        ax = fig.add_subplot()
        sc = ax.scatter(removed, bounds, c=range(len(removed)), cmap="viridis", s=14)
        fig.colorbar(sc, ax=ax, fraction=0.05, label="accepted step")
        if 0 < kept <= len(removed):
            ax.plot([removed[kept - 1]], [bounds[kept - 1]], "o", ms=10, mfc="none", mec="#2e86c1", mew=2,
                    label="certified choice")
            ax.legend(fontsize=8)
        ax.set_xlabel("mean units removed per module (%)")
        ax.set_ylabel("loss bound (points)")
        ax.set_title("size vs loss (accepted steps)")
        out.append(_img(fig, "size vs loss"))
    return out


def s_kind(report: dict) -> str | None:
    return (report.get("size_search") or {}).get("kind")


def decomposition(report: dict) -> str:
    """The page for one decomposition (what ``decompose`` writes as ``report.html``)."""
    Figure = _matplotlib()
    translator = report.get("shape") == "enc-dec"
    body = [f"<h1>onnxmod decomposition: <code>{_e(report['model'])}</code></h1>",
            f"<p>data <code>{_e(report.get('data', ''))}</code>; shape <b>{_e(report['shape'])}</b>, mode "
            f"<b>{_e(report['mode'])}</b>, seed {_e(report['seed'])}; parameters: model "
            f"{report['model_params']:,}, composed {report['composed_params']:,}</p>"]
    if Figure is None:
        body.append(f'<p class="note">{NO_PLOTS}</p>')
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
    if Figure is not None:
        plots = _delta_plot(Figure, report)
        if plots:
            body += ["<h2>" + ("BLEU and δ per language" if translator else "δ per class") + "</h2>", *plots]
        plots = _heatmaps(Figure, report)
        if plots:
            body += ["<h2>Kept units</h2>", *plots]
    s = report.get("size_search") or {}
    if s.get("kind") == "size search":
        body += ["<h2>Size search</h2>", _table(
            ["class", "units removed", "vocabulary rows removed", "embedding features removed"],
            [[c["class"], f"{c['units_removed']:.0%}", f"{c['vocabulary_removed']:.0%}",
              f"{c['embedding_features_removed']:.1%}"] for c in s["chosen"]], numeric_from=1)]
    elif s.get("kind") == "guard":
        tb = "heldout_model_bleu" in s
        body += ["<h2>Guard trail</h2>", _table(
            ["removal cap", "validation " + ("mean BLEU" if tb else "accuracy %"), "accepted"],
            [[f"{t['cap']:g}", f"{t['heldout_bleu']:.2f}" if tb else rep._pct(t["heldout_accuracy"]),
              "yes" if t["accepted"] else "no"] for t in s["trail"]], numeric_from=1)]
    if Figure is not None:
        body += _search_plot(Figure, report)
    if report.get("skipped"):
        body.append(f"<p>Skipped classes (no training samples): {_e(', '.join(report['skipped']))}</p>")
    return _page(f"onnxmod: {report['model']}", body)


# --- evaluation ----------------------------------------------------------------------------------

def evaluation(result: dict) -> str:
    """The page for ``evaluate --report FILE.html``: the per-class table and a bar chart."""
    Figure = _matplotlib()
    pcs = result["per_class"]
    bleu = "bleu" in result
    body = [f"<h1>onnxmod evaluation: <code>{_e(result['model'])}</code> ({_e(result['kind'])})</h1>",
            f"<p>{_e(evaluation_summary(result))}</p>"]
    if result.get("classes_note"):
        body.append(f'<p class="note">{_e(result["classes_note"])}</p>')
    if Figure is None:
        body.append(f'<p class="note">{NO_PLOTS}</p>')
    if bleu:
        head = ["class", "language", "BLEU", "sentences"]
        rows = [[c["class"], c["name"], rep._bleu(c.get("bleu")), f"{c['support']:,}"] for c in pcs]
    else:
        head = ["class", "name", f"{result.get('metric', 'accuracy')} %", "samples"]
        rows = [[c["class"], c["name"], rep._pct(c["accuracy"]), f"{c['support']:,}"] for c in pcs]
    body += ["<h2>Per class</h2>", _table(head, rows)]
    if Figure is not None:
        vals = [(c["name"], c.get("bleu") if bleu else (None if c["accuracy"] is None else 100 * c["accuracy"]))
                for c in pcs]
        vals = [(n, v) for n, v in vals if v is not None]
        if vals:
            fig = Figure(figsize=(max(4, 0.6 * len(vals) + 2), 2.8))
            ax = fig.add_subplot()
            ax.bar(range(len(vals)), [v for _, v in vals], color="#2e86c1")
            ax.set_xticks(range(len(vals)), [n for n, _ in vals], rotation=30, ha="right")
            ax.set_ylabel("BLEU" if bleu else f"{result.get('metric', 'accuracy')} %")
            ax.set_title("per class")
            body.append(_img(fig, "per-class scores"))
    return _page(f"onnxmod: {result['model']}", body)


def evaluation_summary(r: dict) -> str:
    """One line: what was scored, in which metric, on how many samples."""
    if "bleu" in r:
        b = [v for v in r["bleu"].values() if v is not None]
        mean = f"{sum(b) / len(b):.2f}" if b else "—"
        return (f"{r['model']} ({r['kind']}): mean BLEU {mean} over {len(r['bleu'])} languages on "
                f"{r['samples']:,} test sentences; teacher-forced next-token accuracy "
                f"{rep._pct(r['accuracy'])} %")
    s = f"{r['model']} ({r['kind']}): {r.get('metric', 'accuracy')} {rep._pct(r['accuracy'])} % on {r['samples']:,} test samples"
    if r.get("auc") is not None:
        s += f", ROC AUC {r['auc']:.4f}"
    return s
