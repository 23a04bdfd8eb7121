"""``report.json``, ``report.md`` and the printed table for a decomposition (dependency-free).

Each shape is reported in its own metric, named in the header: BLEU per target language for
translators (model, composed, δ), token accuracy (labelled steps) for taggers (many-output models),
accuracy for classifiers (one-output models). ``report_html`` draws the same report dict.
"""
from __future__ import annotations

import json

MANY_OUTPUT = ("1:N", "M:N")


def _pct(x):
    return "—" if x is None else f"{100 * x:.2f}"


def _delta(x):
    return "—" if x is None else f"{100 * x:+.2f}"


def _bleu(x):
    return "—" if x is None else f"{x:.2f}"


def _dbleu(x):
    return "—" if x is None else f"{x:+.2f}"


def metric_name(report: dict) -> str:
    """The metric a report's per-class numbers are in."""
    if report.get("shape") == "enc-dec":
        return "BLEU"
    name = "token accuracy %" if report.get("shape") in MANY_OUTPUT else "accuracy %"
    return name.replace("accuracy", "agreement with the model") if report.get("labels") == "model" else name


def _short(report: dict) -> str:
    return {"BLEU": "BLEU", "token accuracy %": "tok-acc%", "accuracy %": "acc%",
            "token agreement with the model %": "tok-agree%", "agreement with the model %": "agree%"}[
        metric_name(report)]


FIDELITY = "the labels are the model's own answers (--labels model), so the model scores 100 %"


def per_class_rows(report: dict) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, one row per module and the 'all' row, each cell already formatted: the printed
    table, report.md and report.html show the same numbers."""
    s = _short(report)
    head = ["class", "name", f"model {s}", f"composed {s}", "δ", "params", "params ratio", "jaccard"]
    translator = report.get("shape") == "enc-dec"
    rows = []
    for m in report["modules"]:
        if translator:
            vals = [_bleu(m.get("monolithic_bleu")), _bleu(m.get("composed_bleu")), _dbleu(m.get("delta_bleu"))]
        else:
            vals = [_pct(m["monolithic_accuracy"]), _pct(m["composed_accuracy"]), _delta(m["delta"])]
        rows.append([str(m["class"]), m["name"], *vals, f"{m['params']:,}", f"{m['params_ratio']:.3f}",
                     f"{m['jaccard']:.3f}"])
    if translator:
        mono, comp = report.get("monolithic_bleu") or {}, report.get("composed_bleu") or {}
        mb = sum(mono.values()) / len(mono) if mono else None
        cb = sum(comp.values()) / len(comp) if comp else None
        total = [_bleu(mb), _bleu(cb), _dbleu(None if mb is None or cb is None else cb - mb)]
        name = "mean"
    else:
        total = [_pct(report["monolithic_accuracy"]), _pct(report["composed_accuracy"]), _delta(report["delta"])]
        name = ""
    # the composition's params ratio is left blank: it holds one module per class, so "5.8 models" says
    # nothing about how small the modules are (their own ratios do)
    last = ["all", name, *total, f"{report['composed_params']:,}", "", ""]
    return head, rows, last


def caption(report: dict) -> str:
    """One line saying what the table's numbers are."""
    if report.get("shape") == "enc-dec":
        s = "BLEU per target language (test split, greedy decoding)"
        if report.get("monolithic_accuracy") is not None:
            s += (f"; teacher-forced next-token accuracy: model {_pct(report['monolithic_accuracy'])} %, "
                  f"composed {_pct(report['composed_accuracy'])} %")
        return s
    subset = (f"; on the test samples of the {len(report['modules'])} classes decomposed (--classes)"
              if report.get("classes") else "")
    if report.get("labels") == "model":
        return f"{metric_name(report)} per class (test split; {FIDELITY}{subset})"
    if report.get("shape") in MANY_OUTPUT:
        return f"token accuracy % per class (labelled output steps of the test split; padding never counts{subset})"
    return f"accuracy % per class (test split{subset})"


def ctc_line(report: dict) -> str | None:
    """A CTC head's strings in one line (greedy decoding of the test split), or None."""
    c = report.get("ctc")
    if not c or c.get("monolithic_string_accuracy") is None:
        return None
    covered = " whose text uses only the decomposed characters" if c.get("covered_only") else ""
    return (f"string accuracy (greedy CTC decoding, blank {c['blank']}; {c['strings']:,} test strings{covered}, "
            f"against {c['reference']}): model {_pct(c['monolithic_string_accuracy'])} %, composed "
            f"{_pct(c['composed_string_accuracy'])} %, δ {_delta(c['delta_string_accuracy'])}; character error rate: "
            f"model {_pct(c['monolithic_cer'])} %, composed {_pct(c['composed_cer'])} %")


def guard_sentences(report: dict) -> list[str]:
    """What the guard or the size search decided, and why, in words; and, when the decomposition
    removed nothing, why (``nothing_removed``)."""
    out = _decision_sentences(report)
    why = report.get("nothing_removed")
    if why and not any("whole model" in w for w in out):
        out.append(f"Nothing was removed: {why[0].upper()}{why[1:]}.")
    flagged = report.get("flagged_classes")
    if flagged:
        bound = report.get("flag_bound", "the bound")
        shown = ", ".join(f"{f['name']} {_delta(f['delta'])} (± {100 * f['standard_error']:.2f})" for f in flagged)
        out.append(f"Beyond the bound: on the test split, {shown} lost far more than {bound} allows (δ more than "
                   f"two of its own standard errors below the bound). Check these classes before reusing their "
                   f"modules; a smaller --max-loss or --guard keeps more of them.")
    return out


def _decision_sentences(report: dict) -> list[str]:
    s = report.get("size_search")
    if not s:
        g = (report.get("config") or {}).get("guard")
        return [] if g is not None else ["No guard (--no-guard): the reference removal cap was applied as is."]
    if s.get("kind") == "guard":
        translator = "heldout_model_bleu" in s
        unit = "BLEU" if translator else (
            "points of agreement with the model" if report.get("labels") == "model" else "points of accuracy")
        if s.get("metric") == "string accuracy":
            unit = "points of string accuracy (greedy CTC decoding)"
        base = s.get("heldout_model_bleu") if translator else s.get("heldout_model_accuracy")
        fmt = (lambda v: f"{v:.2f}") if translator else (lambda v: f"{100 * v:.2f} %")
        tried = "; ".join(
            f"cap {t['cap']:g}: {fmt(t.get('heldout_bleu') if translator else t['heldout_accuracy'])}"
            f" ({'accepted' if t['accepted'] else 'rejected'})" for t in s["trail"])
        out = [f"Guard: on {s['heldout_rows']:,} validation rows ({s.get('heldout_split', 'held out')}) the model "
               f"scores {fmt(base)}; a composition may lose at most {s['tolerance_points']} {unit}. Tried {tried}. "
               f"Chosen removal cap: {s['cap']:g}."]
        if s.get("heldout_split", "x_val") != "x_val":
            what = "pairs" if translator else "rows"
            out.append(f"The data has no x_val/y_val ({what} the model never trained on), so the guard validated on "
                       f"{what} of the training split, which the model has fit: its judgement is optimistic. Add "
                       f"x_val/y_val to the data to validate on unseen {what}.")
        if s["cap"] == 0:
            out.append("The guard backed off to cap 0: every module keeps every unit, so the modules are the "
                       "whole model (Jaccard 1.000) — reuse works, but nothing was made smaller.")
        return out
    if s.get("kind") == "size search":
        cert = s.get("certification") or []
        kept = cert[-1]["accepted_steps_kept"] if cert else 0
        out = [f"Size search (max loss {s.get('max_loss_points')} points): searched {s['search_rows']:,} of "
               f"{s['heldout_rows']:,} validation rows, accepted {sum(t['accepted'] for t in s['trail'])} of "
               f"{len(s['trail'])} steps tried, {kept} kept after certification on the unseen half (loss bound "
               f"{100 * cert[-1]['loss_bound']:.2f} points)." if cert else "Size search: nothing certified."]
        ref = s.get("reference_cap_params")
        if ref is not None and report.get("composed_params", 0) > ref:
            out.append(f"The size search's composition ({report['composed_params']:,} parameters) is bigger than "
                       f"the default removal cap's ({ref:,}): the search starts from modules that keep every unit "
                       f"and removes only what the validation split certifies within the loss bound.")
        if s.get("heldout_split", "x_val") != "x_val":
            out.append("The data has no x_val/y_val (rows the model never trained on), so the search validated on "
                       "rows of the training split, which the model has fit: its certification is optimistic.")
        return out
    return []


def markdown(report: dict) -> str:
    translator = report["shape"] == "enc-dec"
    lines = [f"# onnxmod decomposition: `{report['model']}`", "",
             f"- shape **{report['shape']}**, mode **{report['mode']}**, seed {report['seed']}"]
    if translator:
        head, _, last = per_class_rows(report)
        lines.append(f"- mean BLEU: model **{last[2]}**, composed **{last[3]}**, δ **{last[4]}**")
        if report.get("monolithic_accuracy") is not None:
            lines.append(f"- teacher-forced next-token accuracy: model {_pct(report['monolithic_accuracy'])} %, "
                         f"composed {_pct(report['composed_accuracy'])} %")
    else:
        lines.append(f"- {metric_name(report).replace(' %', '')}: model **{_pct(report['monolithic_accuracy'])} %**, "
                     f"composed **{_pct(report['composed_accuracy'])} %**, δ **{_delta(report['delta'])}** points")
    lines += [f"- parameters: model {report['model_params']:,}, composed {report['composed_params']:,}", "",
              f"{caption(report).split(';')[0]}:", ""]
    head, rows, last = per_class_rows(report)
    extra = [] if translator else ["module binary acc %", "module AUC"]
    rule = ["---:", "---"] + ["---:"] * (len(head) + len(extra) - 2)
    lines += ["| " + " | ".join(head + extra) + " |", "|" + "|".join(rule) + "|"]
    for m, r in zip(report["modules"], rows):
        auc = "—" if m.get("auc") is None else f"{m['auc']:.4f}"
        more = [] if translator else [_pct(m.get("binary_accuracy")), auc]
        lines.append("| " + " | ".join(r + more) + " |")
    lines.append("| " + " | ".join(last + [""] * len(extra)) + " |")
    if ctc_line(report):
        lines += ["", ctc_line(report)]
    words = guard_sentences(report)
    if words:
        lines += [""] + words
    lines += _held_out(report.get("size_search"))
    if report.get("skipped"):
        lines += ["", "Skipped classes (no training samples): " + ", ".join(report["skipped"])]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report["timings"].items()), ""]
    return "\n".join(lines)


def _held_out(s: dict | None) -> list[str]:
    """The size search's choices per class (the guard's trail is in ``guard_sentences``)."""
    if not s or s.get("kind") != "size search":
        return []
    out = ["", "| class | units removed | vocabulary rows removed | embedding features removed |",
           "|---|---:|---:|---:|"]
    out += [f"| {c['class']} | {c['units_removed']:.0%} | {c['vocabulary_removed']:.0%} | "
            f"{c['embedding_features_removed']:.1%} |" for c in s["chosen"]]
    return out


def table(report: dict) -> str:
    """The per-class table printed by the CLI: a caption line naming the metric, then the table."""
    head, rows, last = per_class_rows(report)
    keep = [0, 1, 2, 3, 4, 5, 7]  # the printed table leaves the params ratio to the reports
    rows = [[r[i] for i in keep] for r in [head, *rows, last]]
    rows = [[c[:18] if i == 1 else c for i, c in enumerate(r)] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    body = "\n".join("  ".join(c.rjust(w) if i != 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in rows)
    strings = ctc_line(report)
    return f"{caption(report)}\n{body}" + (f"\n{strings}" if strings else "")


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def evaluation_markdown(r: dict) -> str:
    """``evaluate --report FILE.md``: the per-class scores as a Markdown table."""
    bleu = "bleu" in r
    metric = "BLEU" if bleu else f"{r.get('metric', 'accuracy')} %"
    lines = [f"# onnxmod evaluation: `{r['model']}` ({r['kind']})", ""]
    if bleu:
        b = [v for v in r["bleu"].values() if v is not None]
        lines.append(f"- mean BLEU {_bleu(sum(b) / len(b) if b else None)}; teacher-forced next-token accuracy "
                     f"{_pct(r['accuracy'])} %; {r['samples']:,} test sentences")
    else:
        lines.append(f"- {r.get('metric', 'accuracy')} {_pct(r['accuracy'])} % on {r['samples']:,} test samples"
                     + ("" if r.get("auc") is None else f"; ROC AUC {r['auc']:.4f}"))
    if r.get("classes_note"):
        lines.append(f"- {r['classes_note']}")
    lines += ["", f"| class | name | {metric} | samples |", "|---:|---|---:|---:|"]
    for c in r["per_class"]:
        v = _bleu(c.get("bleu")) if bleu else _pct(c["accuracy"])
        lines.append(f"| {c['class']} | {c['name']} | {v} | {c['support']:,} |")
    return "\n".join(lines) + "\n"
