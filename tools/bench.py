"""Benchmarks: every ratio measured side by side in one run (medians over --repeats).

    python tools/bench.py [--target math_topics/lstm1 brown_pos/lstm4 translation/en_frdeit/lstm ...]
                          [--target cells/digits/durnn1_loop ...]   # a custom cell (a general cell)
                          [--repeats 3] [--json PATH]

For each target model (fixtures/<task>/<model>.onnx with its data.npz) it prints:

1. decomposition vs inference: `decompose` wall time (all classes; rolled, unrolled, and both)
   ÷ one plain onnxruntime pass over the same traced samples; also with `--no-evaluate` (no
   test-split evaluation: the reference times decomposition and evaluation apart) and with
   `--no-evaluate --no-guard` (no validation guard either: the reference's behaviour);
2. trace overhead: the tracing pass ÷ the plain pass;
3. composition: latency of the composed single graph (composed.onnx, and fused.onnx where
   decompose writes one) vs the same modules as separate sessions (2 threads, no spinning) and
   vs the monolithic model, at batch 1, 16 and 256 — on the reference decomposition (no guard),
   whose modules really differ (a guard that backs off to keeping every unit makes every module
   the model, and the composition collapses to one trunk by sharing identical nodes);
4. module size: parameters and file size of each module ÷ the monolithic model (same decomposition);
5. peak memory (max RSS of a child process running `decompose`) for each mode, and its growth
   with the number of traced samples (--positives 125/250/500);
6. first, side by side (issue 22): `decompose` rolled ÷ one plain pass for the onnxmod of older
   commits (``--compare``, default: the last commit before report.html's plots and the merge that
   brought them, extracted with ``git archive`` into a temporary folder) and for this tree, as
   shipped, ``--no-evaluate`` and ``--no-evaluate --no-guard``, each tree in a fresh process, the
   trees taking turns (``--compare`` with no commit skips it, ``--compare-only`` runs only it).

Translators (encoder-decoder, e.g. translation/en_frdeit/lstm) get the same ratios for their one
mode (rolled): the plain pass is teacher-forced over the traced sentence pairs, and the separate
sessions each run one language's module on that language's sentences only (as a caller routing
by hand would), which is what the composed graph's router does in one run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxmod import api, runtime  # noqa: E402
from onnxmod.concern import ConcernConfig  # noqa: E402
from onnxmod.graph import Model  # noqa: E402
from onnxmod.sampling import SamplingConfig, trace_rows_many_output, trace_rows_one_output  # noqa: E402
from onnxmod.trace import Tracer  # noqa: E402

DEFAULT_TARGETS = ["math_topics/lstm1", "brown_pos/lstm4", "translation/en_frdeit/lstm"]
BATCHES = (1, 16, 256)
# issue 22: decompose's ratios grew between these commits (report.html's matplotlib plots, merged with
# the 'ux' branch); they are compared, side by side with this tree, for the targets below
BASELINE = "add691d"  # the last commit before report.html's plots
SLOWED = "7d97dd0"  # the merge that brought them
COMPARE_TARGETS = ("math_topics/lstm1", "brown_pos/lstm4")
CONFIGS = {"as shipped": {}, "--no-evaluate": {"evaluate": False},
           "--no-evaluate --no-guard": {"evaluate": False, "guard": None}}


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def traced_rows(model: Model, y, cfg: SamplingConfig):
    if model.one_output:
        return np.unique(np.concatenate(list(trace_rows_one_output(y, model.num_classes, cfg).values())))
    return trace_rows_many_output(y, cfg)


def paths(target: str) -> tuple[Path, Path]:
    """``task/model`` -> fixtures/task/model.onnx and its data; ``cells/task/model`` (the custom
    cells, fixtures/cells/README.md) reads fixtures/task/data.npz."""
    folder, stem = target.rsplit("/", 1)
    data = folder.split("/", 1)[1] if folder.startswith("cells/") else folder
    return ROOT / "fixtures" / folder / f"{stem}.onnx", ROOT / "fixtures" / data / "data.npz"


def latency(folder: Path, report: dict, model_path: Path, feeds_for, threads: int, repeats: int, out: dict,
            rows_for=None) -> None:
    """Composed graph vs separate module sessions vs the model, per batch size. ``rows_for(b, k)``:
    the rows of a batch that module k serves (translators: its language's sentences), else all."""
    composed = runtime.session(folder / "composed.onnx", threads=threads)
    fused = runtime.session(folder / "fused.onnx", threads=threads) if (folder / "fused.onnx").exists() else None
    mods = [runtime.session(folder / m["file"], threads=threads) for m in report["modules"]]
    mono = runtime.session(model_path, threads=threads)
    out["latency"] = {}
    for b in BATCHES:
        f = feeds_for(b)
        reps = max(5, repeats * 5) if b > 16 else max(30, repeats * 10)
        mono.run(None, f)
        t_comp = median_time(lambda f=f: composed.run(None, f), reps)
        if rows_for is None:
            t_sep = median_time(lambda f=f: [s.run(None, f) for s in mods], reps)
        else:  # each module on its own rows, as a caller routing by hand would run it
            parts = [{n: v[rows_for(b, k)] for n, v in f.items()} for k in range(len(mods))]
            t_sep = median_time(
                lambda parts=parts: [s.run(None, p) for s, p in zip(mods, parts) if len(next(iter(p.values())))], reps)
        t_mono = median_time(lambda f=f: mono.run(None, f), reps)
        out["latency"][b] = {"composed_s": t_comp, "separate_sessions_s": t_sep, "monolithic_s": t_mono,
                             "composed_speedup_vs_separate": t_sep / t_comp, "composed_vs_monolithic": t_comp / t_mono}
        if fused is not None:
            t_fused = median_time(lambda f=f: fused.run(None, f), reps)
            out["latency"][b].update({"fused_s": t_fused, "fused_speedup_vs_separate": t_sep / t_fused,
                                      "fused_vs_monolithic": t_fused / t_mono})
    if fused is not None:
        out["fused_file_ratio"] = (folder / "fused.onnx").stat().st_size / model_path.stat().st_size
    size_model = model_path.stat().st_size
    out["module_params_ratio"] = [m["params_ratio"] for m in report["modules"]]
    out["module_file_ratio"] = [(folder / m["file"]).stat().st_size / size_model for m in report["modules"]]
    out["composed_file_ratio"] = (folder / "composed.onnx").stat().st_size / size_model


def peak_rss_mb(model: Path, data: Path, mode: str, positives: int, threads: int) -> float:
    code = ("import sys, tempfile; from onnxmod import api; from onnxmod.concern import ConcernConfig;"
            "from onnxmod.sampling import SamplingConfig;"
            f"d = tempfile.mkdtemp(); api.decompose({str(model)!r}, {str(data)!r}, d + '/o', mode={mode!r}, "
            f"config=ConcernConfig(sampling=SamplingConfig(positives={positives}, negatives={positives})), "
            f"progress=False, threads={threads});"
            # VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork and exec)
            "print(next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                         env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def timed_decompose(model_path, data_path, out: Path, repeats: int, threads: int, **kw):
    runs = []
    for i in range(repeats):
        t = time.perf_counter()
        r = api.decompose(model_path, data_path, out / str(i), progress=False, threads=threads, **kw)
        runs.append((time.perf_counter() - t, r))
    return statistics.median(w for w, _ in runs), runs[0][1], out / "0"


def time_passes(model: Model, model_path: Path, feeds: dict, threads: int, repeats: int, out: dict) -> float:
    """The plain onnxruntime pass and the tracing pass over the same rows; returns the plain time."""
    sess = runtime.session(model_path, threads=threads)
    n = len(next(iter(feeds.values())))

    def plain():
        for a in range(0, n, 256):
            sess.run(None, {k: v[a:a + 256] for k, v in feeds.items()})

    plain()  # warm-up
    t_plain = median_time(plain, repeats)
    t0 = time.perf_counter()
    tracer = Tracer(model, threads=threads)
    out["trace_setup_s"] = time.perf_counter() - t0
    t_trace = median_time(lambda: tracer.run(feeds, progress=False), repeats)
    out["plain_pass_s"], out["trace_pass_s"] = t_plain, t_trace
    out["trace_overhead"] = t_trace / t_plain
    return t_plain


def time_decompose(model_path, data_path, tmp: Path, mode: str, t_plain: float, repeats: int, threads: int,
                   out: dict):
    """Decompose as shipped and without the guard; returns the guard-free (reference-cap) report
    and folder, whose modules really differ."""
    wall, r, _ = timed_decompose(model_path, data_path, tmp / mode, repeats, threads, mode=mode)
    core, _, _ = timed_decompose(model_path, data_path, tmp / f"{mode}-core", repeats, threads, mode=mode,
                                 evaluate=False)
    bare, rb, bfolder = timed_decompose(model_path, data_path, tmp / f"{mode}-bare", repeats, threads, mode=mode,
                                        evaluate=False, config=ConcernConfig(guard=None))
    out[f"decompose_{mode}_s"] = wall
    out[f"decompose_{mode}_ratio"] = wall / t_plain
    out[f"decompose_{mode}_without_evaluation_ratio"] = core / t_plain
    out[f"decompose_{mode}_without_evaluation_or_guard_ratio"] = bare / t_plain
    out[f"decompose_{mode}_delta"] = r["delta"]
    if "delta_bleu" in r:
        out[f"decompose_{mode}_delta_bleu"] = r["delta_bleu"]
    out[f"decompose_{mode}_timings"] = r["timings"]
    return rb, bfolder


def bench(target: str, repeats: int, threads: int) -> dict:
    model_path, data_path = paths(target)
    model = Model.load(model_path)
    if model.shape == "enc-dec":
        return bench_translator(target, model, repeats, threads)
    data = api.load_dataset_for(model, data_path)
    rows = traced_rows(model, data.y_train, SamplingConfig())
    name = model.input.name
    out = {"target": target, "shape": model.shape, "traced_samples": int(len(rows)), "threads": threads}
    t_plain = time_passes(model, model_path, {name: data.x_train[rows]}, threads, repeats, out)
    with tempfile.TemporaryDirectory() as tmp:
        reports = {mode: time_decompose(model_path, data_path, Path(tmp), mode, t_plain, repeats, threads, out)
                   for mode in ("rolled", "unrolled")}
        out["decompose_both_ratio"] = (out["decompose_rolled_s"] + out["decompose_unrolled_s"]) / t_plain
        r, folder = reports["rolled"]
        latency(folder, r, model_path, lambda b: {name: data.x_test[:b]}, threads, repeats, out)
        ur, ufolder = reports["unrolled"]
        out["unrolled_module_file_ratio"] = [(ufolder / m["file"]).stat().st_size / model_path.stat().st_size
                                             for m in ur["modules"]]
    out["peak_rss_mb"] = {mode: peak_rss_mb(model_path, data_path, mode, 500, threads)
                          for mode in ("rolled", "unrolled")}
    out["peak_rss_mb_by_positives"] = {p: peak_rss_mb(model_path, data_path, "rolled", p, threads)
                                       for p in (125, 250, 500)}
    return out


def bench_translator(target: str, model: Model, repeats: int, threads: int) -> dict:
    from onnxmod import encdec
    from onnxmod.encdec import _draw, _rng

    model_path, data_path = paths(target)
    data = encdec.load_translation_data(data_path, model)
    s = SamplingConfig()
    rows = np.unique(np.concatenate([_draw(np.flatnonzero(data.lang_train == c), s.positives, _rng(s.seed, c))
                                     for c in range(len(data.languages))]))
    out = {"target": target, "shape": model.shape, "traced_samples": int(len(rows)), "threads": threads}
    t_plain = time_passes(model, model_path, encdec.feeds(model, data.x_train[rows], data.y_train[rows]), threads,
                          repeats, out)
    with tempfile.TemporaryDirectory() as tmp:
        rb, bfolder = time_decompose(model_path, data_path, Path(tmp), "rolled", t_plain, repeats, threads, out)
        out["decompose_both_ratio"] = None
        order = [data.languages.index(m["name"]) for m in rb["modules"]]
        latency(bfolder, rb, model_path, lambda b: {k: v[:b] for k, v in encdec.feeds(
            model, data.x_test, data.y_test).items()}, threads, repeats, out,
            rows_for=lambda b, k: np.flatnonzero(data.lang_test[:b] == order[k]))
    out["peak_rss_mb"] = {"rolled": peak_rss_mb(model_path, data_path, "rolled", 500, threads)}
    out["peak_rss_mb_by_positives"] = {p: peak_rss_mb(model_path, data_path, "rolled", p, threads)
                                       for p in (125, 250, 500)}
    return out


_TIMED = """
import json, statistics, sys, tempfile, time, warnings
warnings.simplefilter("ignore")
import numpy as np
import onnxruntime as ort
from onnxmod import api
from onnxmod.concern import ConcernConfig
model, data, rows, mode, kw, repeats, threads = json.loads(sys.argv[1])
if "guard" in kw:
    kw["config"] = ConcernConfig(guard=kw.pop("guard"))
so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
so.add_session_config_entry("session.intra_op.allow_spinning", "0")
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
x = np.load(rows)
def plain():  # one plain pass over the traced rows, timed in this process, next to the runs it divides
    t = time.perf_counter()
    for a in range(0, len(x), 256):
        sess.run(None, {sess.get_inputs()[0].name: x[a:a + 256]})
    return time.perf_counter() - t
plain()
walls, cpus, passes = [], [], []
with tempfile.TemporaryDirectory() as d:
    for i in range(repeats + 1):  # the first run pays for imports and first sessions: not counted
        passes.append(plain())
        t, c = time.perf_counter(), time.process_time()
        r = api.decompose(model, data, f"{d}/{i}", mode=mode, progress=False, threads=threads, **kw)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
print(json.dumps({"wall": statistics.median(walls[1:]), "cpu": statistics.median(cpus[1:]),
                  "plain": statistics.median(passes), "timings": r["timings"]}))
"""


def _tree(commit: str, into: Path) -> Path:
    """``commit``'s onnxmod package, extracted (git archive) under ``into``; returns the folder to
    put on PYTHONPATH."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "onnxmod"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _timed(tree: Path, model: Path, data: Path, rows: Path, kw: dict, repeats: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _TIMED, json.dumps([str(model), str(data), str(rows), "rolled", kw,
                                                                    repeats, threads])],
                         capture_output=True, text=True, cwd=str(tree), env=dict(os.environ, PYTHONPATH=str(tree)))
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _head() -> str:
    res = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return res.stdout.strip() or "?"


def compare(targets, commits, repeats: int, threads: int) -> list[dict]:
    """``decompose`` (rolled) ÷ one plain pass, for each commit's onnxmod and this tree's, side by side.
    Each run is divided by plain passes timed in its own process right before it (a shared
    machine's load changes within minutes), and the trees take turns per configuration."""
    results = []
    with tempfile.TemporaryDirectory(prefix="onnxmod-bench-") as tmp:
        try:
            trees = {c: _tree(c, Path(tmp) / c) for c in commits}
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"== comparison with {', '.join(commits)} skipped: cannot read the commits ({exc})")
            return []
        trees[f"this tree ({_head()})"] = ROOT
        for target in targets:
            model_path, data_path = paths(target)
            model = Model.load(model_path)
            data = api.load_dataset_for(model, data_path)
            x = Path(tmp) / f"{target.replace('/', '-')}.npy"
            np.save(x, data.x_train[traced_rows(model, data.y_train, SamplingConfig())])
            o = {"target": target, "plain_pass_s": [], "ratios": {}, "timings": {}}
            for name, kw in CONFIGS.items():
                for tree, folder in trees.items():
                    got = _timed(folder, model_path, data_path, x, kw, repeats, threads)
                    o["ratios"].setdefault(name, {})[tree] = got["wall"] / got["plain"]
                    o.setdefault("cpu_s", {}).setdefault(name, {})[tree] = got["cpu"]
                    o["timings"].setdefault(name, {})[tree] = got["timings"]
                    o["plain_pass_s"].append(got["plain"])
            show_comparison(o, commits)
            results.append(o)
    return results


def show_comparison(o: dict, commits) -> None:
    trees = list(next(iter(o["ratios"].values())))
    labels = [f"{t} (before)" if t == BASELINE else f"{t} (slowed)" if t == SLOWED else t for t in trees]
    w = max(len(x) for x in labels) + 2
    p = o["plain_pass_s"]
    print(f"== {o['target']}: decompose rolled ÷ one plain pass (timed next to each run: {1e3 * min(p):.0f}–"
          f"{1e3 * max(p):.0f} ms), medians, the trees taking turns")
    print("  " + " " * 26 + "".join(x.rjust(w) for x in labels))
    for name, by_tree in o["ratios"].items():
        print(f"  {name:<26}" + "".join(f"{by_tree[t]:.1f}x".rjust(w) for t in trees))
    print("  CPU seconds per decompose (all threads; steadier than wall time on a shared machine)")
    for name, by_tree in o["cpu_s"].items():
        print(f"  {name:<26}" + "".join(f"{by_tree[t]:.2f} s".rjust(w) for t in trees))


def show(o: dict) -> None:
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    print(f"== {o['target']} ({o['shape']}, {o['traced_samples']} traced samples, {o['threads']} threads)")
    print(f"  plain onnxruntime pass           {o['plain_pass_s']:.3f} s")
    print(f"  trace pass                       {o['trace_pass_s']:.3f} s   trace overhead {o['trace_overhead']:.2f}x "
          f"(trace graph and session, built once: {o['trace_setup_s']:.3f} s)")
    for mode in ("rolled", "unrolled"):
        if f"decompose_{mode}_s" not in o:
            continue
        t = o[f"decompose_{mode}_timings"]
        print(f"  decompose {mode:8}               {o[f'decompose_{mode}_s']:.3f} s   = "
              f"{o[f'decompose_{mode}_ratio']:.2f}x inference; "
              f"{o[f'decompose_{mode}_without_evaluation_ratio']:.2f}x without the test evaluation; "
              f"{o[f'decompose_{mode}_without_evaluation_or_guard_ratio']:.2f}x without it and the guard "
              f"(delta {100 * o[f'decompose_{mode}_delta']:+.2f})")
        print("      where the time goes           " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()))
    if o.get("decompose_both_ratio"):
        print(f"  decompose both modes             {o['decompose_both_ratio']:.2f}x inference")
    for b, L in o["latency"].items():
        print(f"  batch {b:<4} separate sessions {1e3 * L['separate_sessions_s']:8.2f} ms | composed.onnx "
              f"{1e3 * L['composed_s']:8.2f} ms ({L['composed_speedup_vs_separate']:.2f}x faster)"
              + (f" | fused.onnx {1e3 * L['fused_s']:8.2f} ms ({L['fused_speedup_vs_separate']:.2f}x faster)"
                 if "fused_s" in L else " | no fused.onnx")
              + f" | monolithic {1e3 * L['monolithic_s']:.2f} ms (composed {L['composed_vs_monolithic']:.1f}x"
              + (f", fused {L['fused_vs_monolithic']:.1f}x)" if "fused_s" in L else ")"))
    print(f"  module params / model            mean {mean(o['module_params_ratio']):.3f} "
          f"(min {min(o['module_params_ratio']):.3f}, max {max(o['module_params_ratio']):.3f})")
    print(f"  module file size / model         rolled mean {mean(o['module_file_ratio']):.3f}"
          + (f", unrolled mean {mean(o['unrolled_module_file_ratio']):.3f}"
             if "unrolled_module_file_ratio" in o else "")
          + f"; composition {o['composed_file_ratio']:.2f}"
          + (f"; fused {o['fused_file_ratio']:.2f}" if "fused_file_ratio" in o else ""))
    print("  peak RSS of decompose            " + ", ".join(f"{k} {v:.0f} MB" for k, v in o["peak_rss_mb"].items()))
    print("  peak RSS vs positives/class      " + ", ".join(f"{k}: {v:.0f} MB"
                                                            for k, v in o["peak_rss_mb_by_positives"].items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", nargs="*", default=DEFAULT_TARGETS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=str(ROOT / "out" / "bench.json"))
    p.add_argument("--compare", nargs="*", default=[BASELINE, SLOWED], metavar="COMMIT",
                   help=f"also time decompose of these commits' onnxmod against this tree's, side by side, on "
                        f"{', '.join(COMPARE_TARGETS)} (default: {BASELINE} before issue 22's slowdown, {SLOWED} "
                        f"that slowed it; --compare with no commit skips it)")
    p.add_argument("--compare-only", action="store_true", help="only the comparison")
    args = p.parse_args(argv)
    results = []
    if args.compare:
        targets = [t for t in args.target if t in COMPARE_TARGETS] or list(COMPARE_TARGETS)
        results += compare(targets, args.compare, args.repeats, args.threads)
    for t in ([] if args.compare_only else args.target):
        if not paths(t)[0].exists():
            print(f"== {t}: fixture missing (skipped)")
            continue
        o = bench(t, args.repeats, args.threads)
        show(o)
        results.append(o)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
