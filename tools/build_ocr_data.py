"""Rendered text images for the shipped OCR models (issue 21's acceptance): ddddocr 1.6.1.

    pip download ddddocr==1.6.1 --no-deps -d /tmp/dddd && unzip -q /tmp/dddd/ddddocr-1.6.1-*.whl -d /tmp/dddd/x
    python tools/build_ocr_data.py --ddddocr /tmp/dddd/x/ddddocr [--charset beta|old] [--train 1000] [--test 300]

Renders strings of 4-6 digits and small ASCII letters with Pillow in the fonts the machine has (the
DejaVu family, found under ``/usr/share/fonts``), black on white with a little seeded jitter, and
preprocesses them as the package's OCR engine does for its default models: resize to height 64
keeping the aspect ratio (LANCZOS), grayscale, ``/ 255``. The images are padded on the right with
white to one width (``--width``, a multiple of 8: the model reads one step per 8 columns), so the
splits stack into ``[N, 1, 64, W]``.

Writes ``out/ocr/<charset>.npz``: ``x_train``, ``x_val``, ``x_test``, ``text_train``,
``text_val``, ``text_test`` (the strings drawn), ``charset`` (the package's character list for
that model: ``beta`` for ``common.onnx``, ``old`` for ``common_old.onnx``; the blank is its first,
empty, entry), and no ``y_*``: decompose with ``--labels model --ctc-blank 0``. The package
(MIT) is read for its charset only and never copied into the repository. ``--check MODEL.onnx``
also prints the model's greedy string accuracy on the test images (one image at a time, as the
model's fixed batch axis asks).
"""
from __future__ import annotations

import argparse
import ast
import glob
import string
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ALPHABET = string.digits + string.ascii_lowercase  # the models often read capitals as small letters
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansCondensed.ttf", "DejaVuSerif-Bold.ttf")


def charset(package: Path, which: str) -> list[str]:
    """``CHARSET_BETA`` or ``CHARSET_OLD`` from the package's ``charsets.py``, read as a literal."""
    tree = ast.parse((package / "charsets.py").read_text(encoding="utf-8"))
    name = {"beta": "CHARSET_BETA", "old": "CHARSET_OLD"}[which]
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return [str(c) for c in ast.literal_eval(node.value)]
    raise SystemExit(f"{package}/charsets.py: no {name}")


def fonts() -> list[str]:
    found = {Path(p).name: p for p in glob.glob("/usr/share/fonts/**/*.ttf", recursive=True)}
    got = [found[f] for f in FONTS if f in found]
    if not got:
        raise SystemExit("no DejaVu fonts under /usr/share/fonts (apt-get install fonts-dejavu-core)")
    return got


def render(text: str, font_path: str, rng) -> "Image.Image":  # noqa: F821
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(28, 40))
    font = ImageFont.truetype(font_path, size)
    left, top, right, bottom = font.getbbox(text)
    pad_x, pad_y = int(rng.integers(4, 12)), int(rng.integers(3, 9))
    img = Image.new("RGB", (right - left + 2 * pad_x, bottom - top + 2 * pad_y), "white")
    ImageDraw.Draw(img).text((pad_x - left, pad_y - top), text, font=font, fill="black")
    return img


def preprocess(img, width: int) -> np.ndarray:
    """As ddddocr's OCR engine for its default models, then padded with white to ``width``."""
    from PIL import Image

    w = int(img.size[0] * (64 / img.size[1]))
    a = np.asarray(img.resize((w, 64), Image.LANCZOS).convert("L"), dtype=np.float32) / 255.0
    out = np.ones((64, width), dtype=np.float32)
    out[:, :min(w, width)] = a[:, :width]
    return out


def split(n: int, rng, font_paths, width: int) -> tuple[np.ndarray, list[str]]:
    x = np.empty((n, 1, 64, width), dtype=np.float32)
    texts = []
    for i in range(n):
        t = "".join(rng.choice(list(ALPHABET), size=int(rng.integers(4, 7))))
        x[i, 0] = preprocess(render(t, font_paths[int(rng.integers(len(font_paths)))], rng), width)
        texts.append(t)
    return x, texts


def check(model: Path, x: np.ndarray, texts: list[str], chars: list[str]) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    right = 0
    for img, t in zip(x, texts):
        out = sess.run(None, {name: img[None]})[0]
        steps = out[:, 0] if out.shape[1] == 1 else out[0]  # [T, 1, C] or [1, T, C]
        ids = steps.argmax(-1)
        got = "".join(chars[k] for j, k in enumerate(ids) if k != 0 and (j == 0 or k != ids[j - 1]))
        right += got == t
    return right / len(texts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ddddocr", required=True, type=Path, help="the unpacked package folder (holds charsets.py)")
    p.add_argument("--charset", choices=("beta", "old"), default="beta",
                   help="beta: common.onnx's characters; old: common_old.onnx's")
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--val", type=int, default=200)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--width", type=int, default=256, help="padded image width (a multiple of 8)")
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--out", type=Path, default=None, help="default: out/ocr/<charset>.npz")
    p.add_argument("--check", type=Path, default=None, metavar="MODEL.onnx",
                   help="print this model's string accuracy on the test images")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    chars = charset(a.ddddocr, a.charset)
    missing = [c for c in ALPHABET if c not in chars]
    if missing:
        raise SystemExit(f"characters not in the {a.charset} charset: {''.join(missing)}")
    font_paths = fonts()
    rng = np.random.default_rng(a.seed)
    arrays = {}
    for name, n in (("train", a.train), ("val", a.val), ("test", a.test)):
        x, texts = split(n, rng, font_paths, a.width)
        arrays[f"x_{name}"], arrays[f"text_{name}"] = x, np.array(texts, dtype=np.str_)
    arrays["charset"] = np.array(chars, dtype=np.str_)
    out = a.out or ROOT / "out" / "ocr" / f"{a.charset}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {out}: {a.train:,} / {a.val:,} / {a.test:,} images [1, 64, {a.width}] in {len(font_paths)} fonts, "
          f"{len(chars):,} characters ({time.perf_counter() - t0:.0f} s)")
    if a.check:
        acc = check(a.check, arrays["x_test"], list(arrays["text_test"]), chars)
        print(f"{a.check}: string accuracy {100 * acc:.1f} % on the {a.test:,} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
