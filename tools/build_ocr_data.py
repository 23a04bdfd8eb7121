#!/usr/bin/env python
"""Text images for the OCR models that ship in ``ddddocr`` 1.6.1 (issues 20 and 21).

    python tools/build_ocr_data.py                                   # out/ocr/common.npz
    python tools/build_ocr_data.py --with-model-labels               # + y_* from the model's argmax
    python tools/build_ocr_data.py --model common_old --out out/ocr/common_old.npz

``ddddocr`` (PyPI, MIT) ships two CTC text recognizers: ``common.onnx`` (a CRNN of 13.5 M
parameters, opset 12, input ``[1, 1, 64, W]``, per-step logits ``[T, 1, 8210]``, blank 0) and
``common_old.onnx`` (its quantized sibling: ``DynamicQuantizeLSTM``, ``ConvInteger``,
``MatMulInteger``).  Nothing of the package is committed (its wheel is 76 MB) and none of its
dependencies is installed (opencv): this script

1. fetches the wheel with ``pip download ddddocr==1.6.1 --no-deps`` into ``.cache/ddddocr/``
   (git-ignored; reused when present) and unzips only ``common.onnx``, ``common_old.onnx`` and
   ``charsets.py``;
2. reads the charsets as data (``ast.literal_eval`` of ``charsets.py``, never imported): the
   package's ``core/ocr_engine.py`` and ``models/model_loader.py`` pair ``common.onnx`` with
   ``CHARSET_BETA`` (``beta=True``) and ``common_old.onnx`` with ``CHARSET_OLD`` (its default);
3. renders seeded text images of 4-6 ASCII characters (digits and lowercase letters by default;
   a third of the strings digits only, a third letters only, a third both,
   ``--alphabet`` to change; all in the model's charset) with Pillow in the machine's DejaVu
   fonts (``fc-list``), dark text on a white 150 x 50 canvas, every image the same size so that
   they batch;
4. preprocesses them as ``ocr_engine._preprocess_image`` does for the default models: resize to
   height 64 keeping the aspect ratio (LANCZOS), grayscale (``convert('L')``), ``/ 255`` ->
   float32 ``[N, 1, 64, 192]``;
5. runs the model one image at a time (its input declares a batch of 1) and prints how often its
   greedy CTC decoding (argmax per step, collapse repeats, drop blank 0) equals the rendered text;
6. writes ``x_train``, ``x_val``, ``x_test`` (float32 ``[N, 1, 64, 192]``), ``text_*`` (the
   rendered strings), ``charset`` (the model's 8,210 strings, index = class id, ``charset[0] ==
   ""`` the blank) and ``class_names`` (the charset with the blank named ``<blank>``); with
   ``--with-model-labels`` also ``y_*`` int64 ``[N, T]``: the model's own argmax per step (the
   stopgap for today's contract, which wants per-step labels).

Deterministic: the same seed and fonts give a byte-identical ``.npz``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "ddddocr"
VERSION = "1.6.1"
MEMBERS = ("ddddocr/common.onnx", "ddddocr/common_old.onnx", "ddddocr/charsets.py")
CHARSET_OF = {"common": "CHARSET_BETA", "common_old": "CHARSET_OLD"}
CANVAS = (150, 50)  # width, height: resized to 192 x 64 (T = 24 steps)
HEIGHT = 64
# digits and lowercase letters: common.onnx reads them at ~85 % exact; with uppercase letters too
# it reads ~55 % exact (~90 % ignoring case: capitals mostly come out lowercase), measured here
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
FONT_STYLES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansCondensed.ttf", "DejaVuSansMono.ttf",
               "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf")
SEED = 20261221


def log(*a):
    print(*a, flush=True)


def fetch(cache: Path) -> Path:
    """The ddddocr wheel's three files under ``cache/extracted/``; downloads the wheel once."""
    out = cache / "extracted"
    if all((out / m).exists() for m in MEMBERS):
        return out / "ddddocr"
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob(f"ddddocr-{VERSION}-*.whl"))
    if not wheels:
        log(f"downloading ddddocr=={VERSION} (76 MB, no dependencies) into {cache}")
        subprocess.run([sys.executable, "-m", "pip", "download", f"ddddocr=={VERSION}", "--no-deps",
                        "--only-binary", ":all:", "-d", str(cache), "-q"], check=True)
        wheels = sorted(cache.glob(f"ddddocr-{VERSION}-*.whl"))
        if not wheels:
            raise SystemExit(f"build_ocr_data: pip download left no ddddocr-{VERSION} wheel in {cache}")
    with zipfile.ZipFile(wheels[0]) as z:
        for m in MEMBERS:
            z.extract(m, out)
    return out / "ddddocr"


def read_charsets(path: Path) -> dict[str, list[str]]:
    """``CHARSET_OLD`` / ``CHARSET_BETA`` of ``charsets.py``, read as literals (not executed)."""
    sets = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            sets[node.targets[0].id] = ast.literal_eval(node.value)
    return sets


def dejavu_fonts() -> list[Path]:
    """The DejaVu font files ``fc-list`` knows, of the styles used here (sorted: deterministic)."""
    try:
        listed = subprocess.run(["fc-list", ":", "file"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"build_ocr_data: fc-list failed ({e}); install fontconfig and fonts-dejavu-core") from e
    files = {Path(line.split(":")[0].strip()) for line in listed.splitlines() if line.strip()}
    fonts = sorted(f for f in files if f.name in FONT_STYLES)
    if not fonts:
        raise SystemExit("build_ocr_data: no DejaVu fonts found by fc-list (fonts-dejavu-core)")
    return fonts


def render(text: str, font_path: Path, rng) -> Image.Image:
    """Dark text on a white canvas, seeded size, colour and position, fitted inside the canvas."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(24, 33))
    while True:
        font = ImageFont.truetype(str(font_path), size)
        left, top, right, bottom = font.getbbox(text)
        if right - left <= CANVAS[0] - 8 and bottom - top <= CANVAS[1] - 6:
            break
        size -= 1
    img = Image.new("RGB", CANVAS, (255, 255, 255))
    x = int(rng.integers(4, CANVAS[0] - (right - left) - 3)) - left
    y = int(rng.integers(3, CANVAS[1] - (bottom - top) - 2)) - top
    shade = int(rng.integers(0, 90))
    ImageDraw.Draw(img).text((x, y), text, fill=(shade, shade, shade), font=font)
    return img


def preprocess(img) -> np.ndarray:
    """ddddocr's preprocessing of its default models: height 64 (aspect kept, LANCZOS), grayscale,
    ``/ 255``; ``[1, 64, W]`` float32."""
    from PIL import Image

    width = int(img.size[0] * (HEIGHT / img.size[1]))
    gray = img.resize((width, HEIGHT), Image.LANCZOS).convert("L")
    return (np.asarray(gray, dtype=np.float32) / 255.0)[None]


def pools(alphabet: str) -> list[str]:
    """What each string draws from, in turn: only the alphabet's digits, only its letters, all of
    it (so compositions of the digits' or the letters' modules have strings they can spell)."""
    digits = "".join(c for c in alphabet if c.isdigit())
    letters = "".join(c for c in alphabet if not c.isdigit())
    return [p for p in (digits, letters, alphabet) if p]


def make_split(n: int, alphabet: str, fonts: list[Path], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images, texts = [], []
    drawn = pools(alphabet)
    for i in range(n):
        k = int(rng.integers(4, 7))
        pool = drawn[i % len(drawn)]
        text = "".join(pool[j] for j in rng.integers(0, len(pool), size=k))
        images.append(preprocess(render(text, fonts[int(rng.integers(0, len(fonts)))], rng)))
        texts.append(text)
    return np.stack(images), np.array(texts, dtype=np.str_)


def greedy(ids: np.ndarray, charset: list[str]) -> str:
    out, prev = [], 0
    for c in ids:
        c = int(c)
        if c != prev and c != 0:
            out.append(charset[c])
        prev = c
    return "".join(out)


def run_model(sess, x: np.ndarray) -> np.ndarray:
    """Per-step argmax ``[N, T]`` of the model, one image at a time (its declared batch is 1)."""
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: x[i:i + 1]})[0][:, 0].argmax(-1) for i in range(len(x))]).astype(np.int64)


def savez_deterministic(path: Path, arrays: dict) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from build_surround_fixtures import savez_deterministic as save

    save(path, arrays)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(CHARSET_OF), default="common",
                   help="which shipped model (default: common)")
    p.add_argument("--out", type=Path, help="output .npz (default: out/ocr/<model>.npz)")
    p.add_argument("--train", type=int, default=1000, help="training images (default: 1000)")
    p.add_argument("--val", type=int, default=200, help="validation images (default: 200; 0: none)")
    p.add_argument("--test", type=int, default=300, help="test images (default: 300)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--alphabet", default=ALPHABET, help=f"characters drawn (default: {ALPHABET})")
    p.add_argument("--with-model-labels", action="store_true",
                   help="also write y_* [N, T]: the model's own argmax per step")
    p.add_argument("--cache", type=Path, default=CACHE, help=f"download cache (default: {CACHE.relative_to(REPO)})")
    a = p.parse_args(argv)
    import onnxruntime as ort

    pkg = fetch(a.cache)
    charset = read_charsets(pkg / "charsets.py")[CHARSET_OF[a.model]]
    model_path = pkg / f"{a.model}.onnx"
    log(f"{model_path.relative_to(REPO) if model_path.is_relative_to(REPO) else model_path}: "
        f"{len(charset):,} classes ({CHARSET_OF[a.model]}), sha256 "
        f"{hashlib.sha256(model_path.read_bytes()).hexdigest()[:16]}…")
    missing = sorted(set(a.alphabet) - set(charset))
    if missing or not a.alphabet:
        raise SystemExit(f"build_ocr_data: --alphabet: {''.join(missing) or 'empty'} not in {a.model}'s charset")
    fonts = dejavu_fonts()
    log(f"fonts: {', '.join(f.name for f in fonts)}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3  # the file declares its output [1, seqlen]; it returns [T, 1, 8210]
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    arrays, t0 = {}, time.time()
    splits = [("train", a.train), ("val", a.val), ("test", a.test)]
    for k, (split, n) in enumerate(splits):
        if n <= 0:
            continue
        x, texts = make_split(n, a.alphabet, fonts, a.seed + k)
        ids = run_model(sess, x)
        decoded = [greedy(row, charset) for row in ids]
        exact = float(np.mean([d == t for d, t in zip(decoded, texts)]))
        folded = float(np.mean([d.lower() == t.lower() for d, t in zip(decoded, texts)]))
        log(f"{split:5s}: {n} images {tuple(x.shape[1:])}, T = {ids.shape[1]}; greedy CTC decoding equals the "
            f"text on {100 * exact:.1f} % ({100 * folded:.1f} % ignoring case)  [{time.time() - t0:.0f}s]")
        arrays[f"x_{split}"] = x
        arrays[f"text_{split}"] = texts
        if a.with_model_labels:
            arrays[f"y_{split}"] = ids
    arrays["charset"] = np.array(charset, dtype=np.str_)
    arrays["class_names"] = np.array(["<blank>"] + charset[1:], dtype=np.str_)
    out = a.out or REPO / "out" / "ocr" / f"{a.model}.npz"
    savez_deterministic(out, arrays)
    log(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
