#!/usr/bin/env python
"""What today's onnxmod makes of the surround fixtures (issue 20): one line per model.

    python tools/surround_status.py                       # print the table
    python tools/surround_status.py --readme before       # ... and store it as the column "before"
    python tools/surround_status.py --readme after --model torch_legacy/genre_lstm_maxpool

For every model of ``fixtures/surround/manifest.json`` (and, when present, ddddocr's
``common.onnx`` / ``common_old.onnx`` with the data ``tools/build_ocr_data.py
--with-model-labels`` writes to ``out/ocr/``), runs the CURRENT onnxmod of this checkout as a
subprocess (``PYTHONPATH`` honoured; this checkout first on it):

* ``python -m onnxmod inspect MODEL``
* ``python -m onnxmod decompose MODEL --data NPZ --mode rolled --out <tmp> --threads 1 -q``

and prints ``model | inspect | decomposes | δ or refusal``: δ is the report's ``delta``
(composition minus model on the test split) in points; a refusal is onnxmod's one
``onnxmod: error:`` line.  CTC models are decomposed with ``--labels model --ctc-blank 0`` and
their δ is greedy-decoded string accuracy (composition minus model).

``--readme COLUMN`` records the run under ``COLUMN`` in ``fixtures/surround/status.json`` and
regenerates the status table of ``fixtures/surround/README.md`` from every recorded column (so
"before" stays beside "after").
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "fixtures" / "surround"
STATUS = OUT / "status.json"
OCR = [("ddddocr/common", REPO / ".cache" / "ddddocr" / "extracted" / "ddddocr" / "common.onnx",
        REPO / "out" / "ocr" / "common.npz"),
       ("ddddocr/common_old", REPO / ".cache" / "ddddocr" / "extracted" / "ddddocr" / "common_old.onnx",
        REPO / "out" / "ocr" / "common_old.npz")]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def targets() -> list[dict]:
    """Every fixture of the manifest (file, data, task), then the ddddocr models that are present."""
    man = json.loads((OUT / "manifest.json").read_text())
    out = [{"model": f"{e['source']}/{e['name']}", "file": OUT / e["file"], "data": REPO / e["data"],
            "task": e["task"], "row": e["row"]} for e in man["models"]]
    for name, model, data in OCR:
        if model.exists():
            out.append({"model": name, "file": model, "data": data, "task": "ocr", "row": "ocr_crnn"})
    return out


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p])
    return e


def onnxmod(args: list[str], timeout: float) -> tuple[int | None, str, str]:
    try:
        p = subprocess.run([sys.executable, "-m", "onnxmod", *args], capture_output=True, text=True, env=env(),
                           cwd=REPO, timeout=timeout, check=False)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return None, "", ""


def error_line(stderr: str) -> str:
    """onnxmod's one error line (or, failing that, the last line of stderr)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("onnxmod") and "error:" in ln]
    return (errs or lines or ["(no message)"])[-1].replace(str(REPO) + os.sep, "")


def status(t: dict, timeout: float) -> dict:
    """inspect + rolled decompose of one model: ``{inspect, decomposes, delta, refusal, seconds}``."""
    rec = {"model": t["model"], "row": t["row"]}
    if not t["data"].exists():
        rec.update(inspect="—", decomposes=None, delta=None, refusal=f"no data: {t['data'].relative_to(REPO)}"
                   " (tools/build_ocr_data.py --with-model-labels)", seconds=0)
        return rec
    rc, _, err = onnxmod(["inspect", str(t["file"]), "-q"], timeout)
    rec["inspect"] = "ok" if rc == 0 else ("timeout" if rc is None else error_line(err))
    with tempfile.TemporaryDirectory(prefix="surround-") as tmp:
        tmp = Path(tmp)
        data = t["data"]
        # CTC models: the labels are the model's own answers, judged as greedy-decoded strings
        ctc = ["--labels", "model", "--ctc-blank", "0"] if t["task"] in ("digits_ctc", "ocr") else []
        t0 = time.time()
        rc, _, err = onnxmod(["decompose", str(t["file"]), "--data", str(data), "--mode", "rolled", "--out",
                              str(tmp / "out"), "--threads", "1", "-q", *ctc], timeout)
        rec["seconds"] = round(time.time() - t0, 1)
        if rc == 0:
            report = json.loads((tmp / "out" / "report.json").read_text())
            delta = (report.get("ctc") or {}).get("delta_string_accuracy", report.get("delta"))
            rec.update(decomposes=True, delta=delta, refusal=None)
        else:
            rec.update(decomposes=False, delta=None,
                       refusal=f"timeout after {timeout:.0f} s" if rc is None else error_line(err))
    return rec


def short(refusal: str | None) -> str:
    """The refusal without ``onnxmod: error: <model file>:`` (the table's first column names it)."""
    text = re.sub(r"^onnxmod: error: \S+\.onnx: ", "", refusal or "?")
    return text.replace("|", "\\|").replace("\n", " ")


def cell(r: dict) -> str:
    if r["decomposes"]:
        return "yes, δ " + ("—" if r["delta"] is None else f"{100 * r['delta']:+.2f}")
    return "no: " + short(r["refusal"])


def table(rows: list[dict]) -> str:
    out = ["| model | inspect | decomposes (rolled) | δ (points) or refusal |", "|---|---|---|---|"]
    for r in rows:
        d = ("yes" if r["decomposes"] else "no") if r["decomposes"] is not None else "—"
        what = ("—" if r["delta"] is None else f"{100 * r['delta']:+.2f}") if r["decomposes"] else short(r["refusal"])
        ins = r["inspect"] if r["inspect"] in ("ok", "—", "timeout") else "error: " + r["inspect"].replace("|", "\\|")
        out.append(f"| `{r['model']}` | {ins} | {d} | {what} |")
    return "\n".join(out)


def git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def record(column: str, rows: list[dict]) -> None:
    """Record ``rows`` as ``column`` in status.json (other columns and other models kept)."""
    st = json.loads(STATUS.read_text()) if STATUS.exists() else {"columns": {}}
    old = st["columns"].get(column, {}).get("models", {})
    old.update({r["model"]: r for r in rows})
    st["columns"][column] = {"commit": git_head(), "date": datetime.date.today().isoformat(), "models": old}
    STATUS.write_text(json.dumps(st, indent=1, ensure_ascii=False) + "\n")


def write_readme() -> None:
    """The README's status table, from every column recorded in status.json."""
    st = json.loads(STATUS.read_text())
    cols = list(st["columns"])
    models = []
    for c in cols:
        models += [m for m in st["columns"][c]["models"] if m not in models]
    head = "| model | row | " + " | ".join(f"{c} ({st['columns'][c]['commit']}, {st['columns'][c]['date']})"
                                           for c in cols) + " |"
    lines = [head, "|---|---|" + "---|" * len(cols)]
    for m in models:
        recs = [st["columns"][c]["models"].get(m) for c in cols]
        row = next(r["row"] for r in recs if r)
        lines.append(f"| `{m}` | {row} | " + " | ".join(cell(r) if r else "" for r in recs) + " |")
    counts = []
    for c in cols:
        ms = st["columns"][c]["models"].values()
        counts.append(f"{c}: {sum(1 for r in ms if r['decomposes'])} of {len(ms)} decompose")
    body = "\n".join(lines) + "\n\n" + "; ".join(counts) + ".\n"
    readme = OUT / "README.md"
    text = readme.read_text()
    a, b = text.index("<!-- status:begin -->"), text.index("<!-- status:end -->")
    readme.write_text(text[:a] + "<!-- status:begin -->\n\n" + body + "\n" + text[b:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="only this model (source/name; repeatable)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per onnxmod call (default: 1800)")
    p.add_argument("--readme", metavar="COLUMN", help="record the run as COLUMN in status.json and the README")
    p.add_argument("--render", action="store_true", help="only regenerate the README table from status.json")
    a = p.parse_args(argv)
    if a.render:
        write_readme()
        return 0
    todo = [t for t in targets() if not a.model or t["model"] in a.model]
    if a.model and len(todo) != len(set(a.model)):
        raise SystemExit(f"surround_status: unknown model(s): {sorted(set(a.model) - {t['model'] for t in todo})}")
    rows = []
    for t in todo:
        log(f"{t['model']} ...")
        rows.append(status(t, a.timeout))
        r = rows[-1]
        log(f"  {cell(r)}  ({r.get('seconds', 0)} s)")
    print(table(rows))
    print(f"\n{sum(1 for r in rows if r['decomposes'])} of {len(rows)} decompose")
    if a.readme:
        record(a.readme, rows)
        write_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
