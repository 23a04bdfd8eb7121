"""Benchmarks: every ratio measured side by side in one run (medians over --repeats).

    python tools/bench.py [--target math_topics/lstm1 brown_pos/lstm4 ...] [--repeats 3] [--json PATH]

For each target model (fixtures/<task>/<model>.onnx with fixtures/<task>/data.npz) it prints:

1. decomposition vs inference: `decompose` wall time (all classes; rolled, unrolled, and both)
   ÷ one plain onnxruntime pass over the same traced samples (also without the evaluation step);
2. trace overhead: the tracing pass ÷ the plain pass;
3. composition: latency of the composed single graph vs the same modules as separate sessions
   (2 threads, no spinning) and vs the monolithic model, on a batch of test inputs;
4. module size: parameters and file size of each module ÷ the monolithic model;
5. peak memory (max RSS of a child process running `decompose`) for each mode, and its growth
   with the number of traced samples (--positives 125/250/500).
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
from onnxmod.graph import Model  # noqa: E402
from onnxmod.sampling import SamplingConfig, trace_rows_many_output, trace_rows_one_output  # noqa: E402
from onnxmod.trace import run_trace  # noqa: E402

DEFAULT_TARGETS = ["math_topics/lstm1", "brown_pos/lstm4"]


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


def peak_rss_mb(model: Path, data: Path, mode: str, positives: int, threads: int) -> float:
    code = ("import resource, sys, tempfile; from onnxmod import api; from onnxmod.concern import ConcernConfig;"
            "from onnxmod.sampling import SamplingConfig;"
            f"d = tempfile.mkdtemp(); api.decompose({str(model)!r}, {str(data)!r}, d + '/o', mode={mode!r}, "
            f"config=ConcernConfig(sampling=SamplingConfig(positives={positives}, negatives={positives})), "
            f"progress=False, threads={threads});"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                         env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def bench(target: str, repeats: int, threads: int) -> dict:
    task, stem = target.split("/")
    model_path, data_path = ROOT / "fixtures" / task / f"{stem}.onnx", ROOT / "fixtures" / task / "data.npz"
    model = Model.load(model_path)
    data = api.load_dataset_for(model, data_path)
    cfg = SamplingConfig()
    rows = traced_rows(model, data.y_train, cfg)
    x = data.x_train[rows]
    sess = runtime.session(model_path, threads=threads)
    name = sess.get_inputs()[0].name
    out = {"target": target, "shape": model.shape, "traced_samples": int(len(rows)), "threads": threads}

    def plain():
        for s in range(0, len(x), 256):
            sess.run(None, {name: x[s:s + 256]})

    plain()  # warm-up
    t_plain = median_time(plain, repeats)
    t_trace = median_time(lambda: run_trace(model, x, progress=False, threads=threads), repeats)
    out["plain_pass_s"], out["trace_pass_s"] = t_plain, t_trace
    out["trace_overhead"] = t_trace / t_plain

    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("rolled", "unrolled"):
            runs = []
            for i in range(repeats):
                t = time.perf_counter()
                r = api.decompose(model_path, data_path, Path(tmp) / f"{mode}{i}", mode=mode, progress=False,
                                  threads=threads)
                runs.append((time.perf_counter() - t, r))
            wall = statistics.median(w for w, _ in runs)
            r = runs[0][1]
            reports[mode] = r
            core = statistics.median(w - rr["timings"]["evaluate"] for w, rr in runs)
            out[f"decompose_{mode}_s"] = wall
            out[f"decompose_{mode}_ratio"] = wall / t_plain
            out[f"decompose_{mode}_without_evaluation_ratio"] = core / t_plain
            out[f"decompose_{mode}_delta"] = r["delta"]
        out["decompose_both_ratio"] = (out["decompose_rolled_s"] + out["decompose_unrolled_s"]) / t_plain

        # composition latency on a batch of test inputs
        r = reports["rolled"]
        folder = Path(tmp) / "rolled0"
        xb = data.x_test[:256]
        composed = runtime.session(folder / "composed.onnx", threads=threads)
        mods = [runtime.session(folder / m["file"], threads=threads) for m in r["modules"]]
        mono = runtime.session(model_path, threads=threads)
        reps = max(5, repeats * 5)
        t_comp = median_time(lambda: composed.run(["label"], {name: xb}), reps)
        t_sep = median_time(lambda: [s.run(["score"], {name: xb}) for s in mods], reps)
        t_mono = median_time(lambda: mono.run(None, {name: xb}), reps)
        out.update({"composed_batch_s": t_comp, "separate_sessions_batch_s": t_sep, "monolithic_batch_s": t_mono,
                    "composed_speedup_vs_separate": t_sep / t_comp, "composed_vs_monolithic": t_comp / t_mono})
        size_model = model_path.stat().st_size
        out["module_params_ratio"] = [m["params_ratio"] for m in r["modules"]]
        out["module_file_ratio"] = [(folder / m["file"]).stat().st_size / size_model for m in r["modules"]]
        out["composed_file_ratio"] = (folder / "composed.onnx").stat().st_size / size_model
        ufolder = Path(tmp) / "unrolled0"
        out["unrolled_module_file_ratio"] = [(ufolder / m["file"]).stat().st_size / size_model
                                             for m in reports["unrolled"]["modules"]]
    out["peak_rss_mb"] = {mode: peak_rss_mb(model_path, data_path, mode, 500, threads) for mode in ("rolled", "unrolled")}
    out["peak_rss_mb_by_positives"] = {p: peak_rss_mb(model_path, data_path, "rolled", p, threads) for p in (125, 250, 500)}
    return out


def show(o: dict) -> None:
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    print(f"== {o['target']} ({o['shape']}, {o['traced_samples']} traced samples, {o['threads']} threads)")
    print(f"  plain onnxruntime pass           {o['plain_pass_s']:.3f} s")
    print(f"  trace pass                       {o['trace_pass_s']:.3f} s   trace overhead {o['trace_overhead']:.2f}x")
    for mode in ("rolled", "unrolled"):
        print(f"  decompose {mode:8}               {o[f'decompose_{mode}_s']:.3f} s   = {o[f'decompose_{mode}_ratio']:.2f}x "
              f"inference ({o[f'decompose_{mode}_without_evaluation_ratio']:.2f}x without evaluation), "
              f"delta {100 * o[f'decompose_{mode}_delta']:+.2f}")
    print(f"  decompose both modes             {o['decompose_both_ratio']:.2f}x inference")
    print(f"  composed graph (batch 256)       {1e3 * o['composed_batch_s']:.1f} ms; separate sessions "
          f"{1e3 * o['separate_sessions_batch_s']:.1f} ms -> {o['composed_speedup_vs_separate']:.2f}x faster; "
          f"monolithic {1e3 * o['monolithic_batch_s']:.1f} ms ({o['composed_vs_monolithic']:.2f}x)")
    print(f"  module params / model            mean {mean(o['module_params_ratio']):.3f} "
          f"(min {min(o['module_params_ratio']):.3f}, max {max(o['module_params_ratio']):.3f})")
    print(f"  module file size / model         rolled mean {mean(o['module_file_ratio']):.3f}, unrolled mean "
          f"{mean(o['unrolled_module_file_ratio']):.3f}; composition {o['composed_file_ratio']:.2f}")
    print("  peak RSS of decompose            " + ", ".join(f"{k} {v:.0f} MB" for k, v in o["peak_rss_mb"].items()))
    print("  peak RSS vs positives/class      " + ", ".join(f"{k}: {v:.0f} MB"
                                                            for k, v in o["peak_rss_mb_by_positives"].items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", nargs="*", default=DEFAULT_TARGETS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=str(ROOT / "out" / "bench.json"))
    args = p.parse_args(argv)
    results = []
    for t in args.target:
        if not (ROOT / "fixtures" / t.split("/")[0] / f"{t.split('/')[1]}.onnx").exists():
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
