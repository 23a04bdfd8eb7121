"""Many modules of a big model: disk, time and peak memory of ``decompose --modules standalone|none``.

    python tools/bench_modules.py [--classes 67] [--width 8210] [--images 1000] [--keep DIR]

The shipped OCR model (ddddocr 1.6.1 ``common.onnx``: 13.5 M parameters, a CNN, one bidirectional
LSTM of 512 units, a head of 8,210 characters per step) does not decompose before the graph side
reads its time-major head. This measures a model of its size and shape instead (mechanics: the
weights are random and seeded, not trained): ``Conv 1->64->128->256->512`` with pooling to height
1 and width / 8, ``LSTM(512, 512, bidirectional)``, ``Linear(1024, --width)`` per step, output
batch-first ``[N, T, C]``, exported by torch's legacy exporter. The data are ``--images`` random
images with per-step labels spread over the blank and ``--classes`` characters (a random model's
own answers would use a handful).

It runs ``decompose MODEL --data X.npz --ctc-blank 0 --no-guard --no-evaluate --mode rolled`` with
``--modules standalone`` and with ``--modules none`` (and the default, ``auto``), each in a child
process, and prints wall time, the child's peak RSS (``VmHWM``), the output's size on disk and its
ratio to the model's file, then the time ``onnxmod split`` takes to write one module back. Needs torch
(``[torch]`` extra). Writes ``out/bench_modules.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def build_model(path: Path, classes: int, width: int, seed: int = 0) -> int:
    """The synthetic CRNN (see the module docstring); returns its parameter count."""
    import contextlib
    import io
    import warnings

    import torch
    from torch import nn

    torch.manual_seed(seed)

    class CRNN(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [1, 64, 128, 256, 512]
            layers = []
            for i, (a, b) in enumerate(zip(chans, chans[1:])):
                layers += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU()]
                layers.append(nn.MaxPool2d(2) if i < 3 else nn.MaxPool2d((8, 1)))
            self.cnn = nn.Sequential(*layers)
            self.rnn = nn.LSTM(512, 512, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(1024, width)

        def forward(self, x):
            y, _ = self.rnn(self.cnn(x).squeeze(2).transpose(1, 2))
            return self.fc(y)

    m = CRNN().eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(2, 1, 64, 128),), str(path), dynamo=False, opset_version=20,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch", 3: "width"}, "logits": {0: "batch", 1: "steps"}})
    return sum(p.numel() for p in m.parameters())


def write_data(path: Path, images: int, classes: int, seed: int = 0) -> None:
    """Random images and per-step labels: every step the blank or one of ``classes`` characters."""
    rng = np.random.default_rng(seed)
    test = max(images // 10, 8)
    labels = lambda n: np.where(rng.random((n, 16)) < 0.5, 0, rng.integers(1, classes + 1, size=(n, 16)))  # noqa: E731
    np.savez(path, x_train=rng.random((images, 1, 64, 128), dtype=np.float32), y_train=labels(images),
             x_test=rng.random((test, 1, 64, 128), dtype=np.float32), y_test=labels(test))


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(args, env) -> dict:
    """One child process; its wall time and peak RSS (read from /proc just before it exits)."""
    t = time.perf_counter()
    code = ("import os, sys, resource\nfrom onnxmod.cli import main\nrc = main(sys.argv[1:])\n"
            "print('VmHWM', [l for l in open(f'/proc/{os.getpid()}/status') if l.startswith('VmHWM')][0].split()[1],"
            " file=sys.stderr)\nsys.exit(rc)\n")
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"onnxmod {' '.join(map(str, args))} failed:\n{p.stderr}")
    peak = next(int(line.split()[1]) for line in p.stderr.splitlines() if line.startswith("VmHWM"))
    warnings = [line for line in p.stderr.splitlines() if line.startswith("onnxmod: warning")]
    return {"s": wall, "peak_rss_mb": peak / 1024, "warnings": warnings}


def disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=67)
    p.add_argument("--width", type=int, default=8210)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--keep", default=None, help="keep the model, data and outputs in this folder")
    p.add_argument("--json", default=str(ROOT / "out" / "bench_modules.json"))
    a = p.parse_args(argv)
    tmp = Path(a.keep or tempfile.mkdtemp(prefix="bench_modules."))
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONWARNINGS="ignore")
    try:
        model, data = tmp / "crnn.onnx", tmp / "x.npz"
        params = build_model(model, a.classes, a.width)
        write_data(data, a.images, a.classes)
        mb = model.stat().st_size
        print(f"synthetic CRNN of the OCR model's shape: {params:,} parameters, {mb / 2**20:.1f} MB; "
              f"{a.images:,} random images 64 x 128 (16 steps), {a.classes} characters + blank present of {a.width:,}")
        res = {"parameters": params, "model_bytes": mb, "runs": {}}
        base = ["decompose", model, "--data", data, "--ctc-blank", "0", "--no-guard",
                "--no-evaluate", "--mode", "rolled", "--force", "-q"]
        print(f"{'--modules':>11} {'wall s':>8} {'peak RSS MB':>12} {'output MB':>10} {'÷ model':>8}  files")
        for choice in ("standalone", "none", "auto"):
            out = tmp / f"out_{choice}"
            r = run(base + ["--out", out, "--modules", choice], env)
            r.update({"bytes": disk(out), "files": sorted(str(f.relative_to(out)) for f in out.rglob("*.onnx"))})
            res["runs"][choice] = r
            print(f"{choice:>11} {r['s']:>8.1f} {r['peak_rss_mb']:>12,.0f} {r['bytes'] / 2**20:>10,.0f} "
                  f"{r['bytes'] / mb:>7.1f}x  {len(r['files'])} .onnx")
        split = run(["split", tmp / "out_none" / "composed.onnx", "--class", "1", "--out", tmp / "one.onnx", "--force"],
                    env)
        res["split"] = {**split, "bytes": (tmp / "one.onnx").stat().st_size}
        print(f"split one module out of composed.onnx: {split['s']:.1f} s, peak RSS {split['peak_rss_mb']:,.0f} MB, "
              f"{res['split']['bytes'] / 2**20:.1f} MB")
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2, default=str))
        print(f"wrote {a.json}")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
