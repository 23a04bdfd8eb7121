"""Small inline SVG charts for ``report.html``: bars, heat maps with a labelled fixed colour scale,
and point trails. No dependency, no network, no timestamps: the same numbers give the same bytes.

Why not matplotlib: a figure costs 0.1–0.3 s to lay out and rasterise, and ``decompose`` of a
small model draws four to eight of them, which made ``report.html`` most of the run (math_topics
``lstm1``: 0.25 s without plots, 0.57 s with; issue 22). These charts cost about a millisecond,
scale in the browser, and need nothing installed beyond onnxmod.

Every chart is an ``<svg>`` element with ``role="img"`` and a ``<title>`` (its alt text).
"""
from __future__ import annotations

import functools
import html
import itertools
import math

FONT = 11  # px
CHAR = 6.2  # px per character of FONT, for margins (the browser does the real layout)
VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")
REDS = ("#ffffff", "#fde0dd", "#fcbba1", "#fc9272", "#fb6a4a", "#ef3b2c", "#cb181d", "#99000d")
BLUE, RED, GREEN, GREY = "#2e86c1", "#c0392b", "#27ae60", "#555555"


def _hex(c: str) -> tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


@functools.lru_cache(maxsize=4096)
def colour(v: float, scale=VIRIDIS) -> str:
    """``v`` in [0, 1] (clipped) on ``scale``, linearly between its evenly spaced anchors."""
    v = 0.0 if v != v else min(max(float(v), 0.0), 1.0)
    x = v * (len(scale) - 1)
    i = min(int(x), len(scale) - 2)
    a, b = _hex(scale[i]), _hex(scale[i + 1])
    f = x - i
    return "#" + "".join(f"{round(p + (q - p) * f):02x}" for p, q in zip(a, b))


def _ink(v: float, scale=VIRIDIS) -> str:
    """Text colour readable on ``colour(v, scale)``."""
    r, g, b = _hex(colour(v, scale))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def _n(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if x == x else "0"


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi - 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-9 else "0"


class Chart:
    """An SVG canvas with a plot area: ``x``/``y`` map data to pixels once ``scale`` is set."""

    def __init__(self, width: float, height: float, title: str, left: float = 52, right: float = 16,
                 top: float = 26, bottom: float = 40):
        self.w, self.h, self.title = width, height, title
        self.l, self.r, self.t, self.b = left, right, top, bottom
        self.parts: list[str] = []
        self.xr = self.yr = (0.0, 1.0)

    @property
    def pw(self) -> float:
        return self.w - self.l - self.r

    @property
    def ph(self) -> float:
        return self.h - self.t - self.b

    def scale(self, x: tuple[float, float], y: tuple[float, float]) -> Chart:
        self.xr, self.yr = x, y
        return self

    def x(self, v: float) -> float:
        a, b = self.xr
        return self.l + (v - a) / ((b - a) or 1.0) * self.pw

    def y(self, v: float) -> float:
        a, b = self.yr
        return self.t + self.ph - (v - a) / ((b - a) or 1.0) * self.ph

    def add(self, s: str) -> None:
        self.parts.append(s)

    def rect(self, x, y, w, h, fill, extra="") -> None:
        self.add(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0))}" height="{_n(max(h, 0))}" '
                 f'fill="{fill}"{extra}/>')

    def line(self, x1, y1, x2, y2, stroke=GREY, width=1.0, dash=None) -> None:
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" '
                 f'stroke-width="{width:g}"{d}/>')

    def text(self, x, y, s, anchor="middle", size=FONT, fill="#222222", rotate=None, weight=None) -> None:
        r = f' transform="rotate({rotate:g} {_n(x)} {_n(y)})"' if rotate is not None else ""
        w = f' font-weight="{weight}"' if weight else ""
        self.add(f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="{size:g}" fill="{fill}"{w}{r}>'
                 f'{_e(s)}</text>')

    def dot(self, x, y, fill, r=3.5, hollow=False) -> None:
        style = f'fill="none" stroke="{fill}" stroke-width="2"' if hollow else f'fill="{fill}"'
        self.add(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{r:g}" {style}/>')

    def cross(self, x, y, stroke=RED, r=3.5) -> None:
        self.add(f'<path d="M{_n(x - r)} {_n(y - r)}L{_n(x + r)} {_n(y + r)}M{_n(x - r)} {_n(y + r)}'
                 f'L{_n(x + r)} {_n(y - r)}" stroke="{stroke}" stroke-width="1.6"/>')

    def polyline(self, pts, stroke=GREY, width=1.2) -> None:
        if len(pts) > 1:
            self.add(f'<polyline points="{" ".join(f"{_n(a)},{_n(b)}" for a, b in pts)}" fill="none" '
                     f'stroke="{stroke}" stroke-width="{width:g}"/>')

    def y_axis(self, label: str, ticks: list[float], fmt=_label) -> None:
        for t in ticks:
            yy = self.y(t)
            self.line(self.l, yy, self.l + self.pw, yy, "#e6e6e6")
            self.text(self.l - 5, yy + 4, fmt(t), anchor="end", size=FONT - 1)
        self.line(self.l, self.t, self.l, self.t + self.ph, GREY)
        self.text(13, self.t + self.ph / 2, label, rotate=-90)

    def x_axis(self, label: str, ticks: list[float], fmt=_label) -> None:
        base = self.t + self.ph
        self.line(self.l, base, self.l + self.pw, base, GREY)
        for t in ticks:
            xx = self.x(t)
            self.line(xx, base, xx, base + 4, GREY)
            self.text(xx, base + 15, fmt(t), size=FONT - 1)
        self.text(self.l + self.pw / 2, self.h - 6, label)

    def categories(self, names: list[str], rotate: bool = True) -> None:
        """Category labels under a band axis (bars or columns), rotated when long."""
        base = self.t + self.ph
        band = self.pw / max(len(names), 1)
        for i, n in enumerate(names):
            xx = self.l + band * (i + 0.5)
            if rotate:
                self.text(xx + 3, base + 8, _short(n), anchor="end", size=FONT - 1, rotate=-35)
            else:
                self.text(xx, base + 15, _short(n), size=FONT - 1)

    def legend(self, items: list[tuple[str, str, str]]) -> None:
        """(kind: bar|dot|cross|dash, colour, label) items in a row at the top right."""
        x = self.w - self.r
        for kind, c, label in reversed(items):
            x -= CHAR * len(label) + 8
            self.text(x, 13, label, anchor="start", size=FONT - 1)
            x -= 14
            if kind == "bar":
                self.rect(x, 4, 10, 10, c)
            elif kind == "dot":
                self.dot(x + 5, 9, c)
            elif kind == "cross":
                self.cross(x + 5, 9, c)
            else:
                self.line(x, 9, x + 12, 9, c, 1.4, "4 3" if kind == "dash" else None)
            x -= 8

    def svg(self) -> str:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{_n(self.w)}" height="{_n(self.h)}" '
                f'viewBox="0 0 {_n(self.w)} {_n(self.h)}" font-family="system-ui,sans-serif">')
        caption = (f'<text x="{_n(self.l)}" y="14" font-size="{FONT + 1}" font-weight="600" fill="#222222">'
                   f'{_e(self.title)}</text>')
        return "\n".join([head, f"<title>{_e(self.title)}</title>", caption, *self.parts, "</svg>"])


def _title_width(title: str, legend=()) -> float:
    """Room for the title at the top left and the legend's labels at the top right."""
    return 60 + 7.0 * len(title) + sum(CHAR * len(label) + 30 for label in legend)


def _short(name: str, limit: int = 18) -> str:
    name = str(name)
    return name if len(name) <= limit else name[:limit - 1] + "…"


def _bottom(names: list[str]) -> float:
    return 24 + CHAR * 0.82 * min(max((len(_short(n)) for n in names), default=1), 18)


def bars(names: list[str], values: list[float | None], title: str, ylabel: str, signed: bool = False,
         reference: tuple[float, str] | None = None, marked: set | None = None) -> str:
    """One bar per name (None: no bar). ``signed``: negative bars red, positive blue, a zero line.
    ``reference``: a dashed horizontal line (value, label), e.g. a loss bound. ``marked``: names
    whose bar is drawn darker and outlined (e.g. classes beyond the bound)."""
    vals = [0.0 if v is None else float(v) for v in values]
    lo = min(vals + [0.0] + ([reference[0]] if reference else []))
    hi = max(vals + [0.0] + ([reference[0]] if reference else []))
    if signed and lo == hi == 0.0:
        lo, hi = -1.0, 1.0
    ticks = nice_ticks(lo, hi)
    c = Chart(max(320, 46 * len(names) + 90, _title_width(title, [reference[1]] if reference else [])), 250, title,
              bottom=_bottom(names)).scale((0, len(names)), (ticks[0], ticks[-1]))
    c.y_axis(ylabel, ticks)
    band = c.pw / max(len(names), 1)
    marked = marked or set()
    for i, (n, v) in enumerate(zip(names, values)):
        if v is None:
            continue
        y0, y1 = c.y(0.0), c.y(float(v))
        fill = (RED if v < 0 else BLUE) if signed else BLUE
        extra = ' stroke="#000000" stroke-width="1.5"' if n in marked else ""
        c.rect(c.l + band * i + band * 0.15, min(y0, y1), band * 0.7, abs(y1 - y0), fill, extra)
    if signed:
        c.line(c.l, c.y(0.0), c.l + c.pw, c.y(0.0), "#222222")
    if reference:
        c.line(c.l, c.y(reference[0]), c.l + c.pw, c.y(reference[0]), "#222222", 1.2, "5 3")
        c.legend([("dash", "#222222", reference[1])])
    c.categories(names)
    return c.svg()


def grouped_bars(names: list[str], series: list[tuple[str, str, list[float]]], title: str, ylabel: str) -> str:
    """Bars side by side per name, one series each: (label, colour, values)."""
    hi = max([v for _, _, vs in series for v in vs] + [1.0])
    ticks = nice_ticks(0.0, hi * 1.1)
    c = Chart(max(320, 70 * len(names) + 90, _title_width(title, [label for label, _, _ in series])), 250, title,
              bottom=_bottom(names)).scale((0, len(names)), (0, ticks[-1]))
    c.y_axis(ylabel, ticks)
    band = c.pw / max(len(names), 1)
    width = band * 0.8 / max(len(series), 1)
    for k, (_, col, vs) in enumerate(series):
        for i, v in enumerate(vs):
            c.rect(c.l + band * i + band * 0.1 + width * k, c.y(v), width * 0.95, c.y(0) - c.y(v), col)
    c.categories(names, rotate=False)
    c.legend([("bar", col, label) for label, col, _ in series])
    return c.svg()


def heatmap(rows: list[str], values: list[list[float]], title: str, scale_label: str,
            columns: list[str] | None = None, column_label: str = "", cell_text=None, scale=VIRIDIS,
            max_width: float = 900) -> str:
    """``values[i][j]`` in [0, 1] on a fixed 0–1 colour scale (``scale``), with a labelled colour
    bar: a cell's colour means the same in every chart. ``columns``: labels of the columns (None:
    their index, thinned). ``cell_text(i, j)``: text drawn in a cell (None: none). Runs of equal
    cells in a row are one rectangle, so a wide map (every unit of a layer) stays small."""
    n_cols = max((len(r) for r in values), default=0)
    left = 14 + CHAR * min(max((len(_short(r)) for r in rows), default=1), 18)
    cell_w = max(2.0, min(60.0 if columns is not None else 14.0, (max_width - left - 90) / max(n_cols, 1)))
    cell_h = 18.0
    bottom = 40 if columns is None else _bottom(columns) + (14 if column_label else 0)
    bar_h = max(cell_h * len(rows), CHAR * 0.9 * len(scale_label) + 8)  # the colour bar's label fits beside it
    width = max(left + cell_w * n_cols + 90, _title_width(title))
    c = Chart(width, 30 + bar_h + bottom, title, left=left, right=width - left - cell_w * n_cols, top=26,
              bottom=bottom)
    for i, row in enumerate(values):
        y = c.t + cell_h * i
        j = 0
        runs = ([(v, 1) for v in row] if cell_text is not None
                else [(v, len(list(g))) for v, g in itertools.groupby(row)])
        for v, n in runs:
            c.rect(c.l + cell_w * j, y, cell_w * n, cell_h, colour(float(v), scale))
            if cell_text is not None and cell_text(i, j) is not None:
                c.text(c.l + cell_w * (j + 0.5), y + cell_h / 2 + 4, cell_text(i, j), size=FONT - 2,
                       fill=_ink(v, scale))
            j += n
        c.text(c.l - 5, y + cell_h / 2 + 4, _short(rows[i]), anchor="end", size=FONT - 1)
    base = c.t + cell_h * len(rows)
    c.add(f'<rect x="{_n(c.l)}" y="{_n(c.t)}" width="{_n(cell_w * n_cols)}" height="{_n(cell_h * len(rows))}" '
          f'fill="none" stroke="#999999" stroke-width="0.6"/>')
    if columns is not None:
        for j, name in enumerate(columns):
            c.text(c.l + cell_w * (j + 0.5) + 3, base + 8, _short(name), anchor="end", size=FONT - 1, rotate=-35)
    else:
        step = max(1, math.ceil(40 / cell_w))
        step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, step) if s >= step)
        for j in range(0, n_cols, step):
            c.line(c.l + cell_w * (j + 0.5), base, c.l + cell_w * (j + 0.5), base + 4, GREY)
            c.text(c.l + cell_w * (j + 0.5), base + 15, str(j), size=FONT - 1)
    if column_label:
        c.text(c.l + cell_w * n_cols / 2, c.h - 6, column_label)
    _colour_bar(c, c.l + cell_w * n_cols + 16, c.t, bar_h, scale_label, scale)
    return c.svg()


def _colour_bar(c: Chart, x: float, y: float, h: float, label: str, scale) -> None:
    """A vertical 0–1 colour bar with ticks 0, 0.5, 1 and its label beside it."""
    steps = 24
    for s in range(steps):
        v = 1 - (s + 0.5) / steps
        c.rect(x, y + h * s / steps, 12, h / steps + 0.3, colour(v, scale))
    c.add(f'<rect x="{_n(x)}" y="{_n(y)}" width="12" height="{_n(h)}" fill="none" stroke="#999999" '
          f'stroke-width="0.6"/>')
    for v in (0.0, 0.5, 1.0):
        yy = y + h * (1 - v)
        c.line(x + 12, yy, x + 15, yy, GREY)
        c.text(x + 17, yy + 4, f"{v:g}", anchor="start", size=FONT - 2)
    c.text(x + 44, y + h / 2, label, rotate=90, size=FONT - 1)


def trail(points: list[tuple[float, float, str]], title: str, xlabel: str, ylabel: str,
          hlines: list[tuple[float, str, str, str]] = (), vline: tuple[float, str] | None = None,
          connect: bool = False, x_ticks: list[float] | None = None, legend=()) -> str:
    """Points (x, y, kind): kind ``ok`` (green dot), ``no`` (red cross), ``mark`` (blue ring) or
    ``plain`` (grey dot). ``hlines``: (y, colour, dash, label); ``vline``: (x, label)."""
    xs = [p[0] for p in points] or [0.0]
    ys = [p[1] for p in points] + [h[0] for h in hlines]
    ys = ys or [0.0]
    xt = x_ticks or nice_ticks(min(xs), max(xs))
    pad = 0.08 * ((max(ys) - min(ys)) or abs(max(ys)) or 1.0)  # no point or line on the frame
    yt = nice_ticks(min(ys) - pad, max(ys) + pad)
    labels = [i[2] for i in legend] + [h[3] for h in hlines if h[3]] + ([vline[1]] if vline else [])
    c = Chart(max(560, _title_width(title, labels)), 270, title).scale(
        (min(xt[0], min(xs)), max(xt[-1], max(xs))), (yt[0], yt[-1]))
    pad = 0.04 * (c.xr[1] - c.xr[0] or 1.0)
    c.scale((c.xr[0] - pad, c.xr[1] + pad), c.yr)
    c.y_axis(ylabel, yt)
    c.x_axis(xlabel, xt)
    for y, col, dash, _ in hlines:
        c.line(c.l, c.y(y), c.l + c.pw, c.y(y), col, 1.2, dash)
    if vline is not None:
        c.line(c.x(vline[0]), c.t, c.x(vline[0]), c.t + c.ph, BLUE, 1.5)
    if connect:
        c.polyline([(c.x(a), c.y(b)) for a, b, _ in points])
    for a, b, kind in points:
        if kind == "no":
            c.cross(c.x(a), c.y(b))
        elif kind == "mark":
            c.dot(c.x(a), c.y(b), BLUE, 6, hollow=True)
        else:
            c.dot(c.x(a), c.y(b), GREEN if kind == "ok" else GREY, 3.0)
    items = list(legend) + [("dash" if dash else "line", col, label) for _, col, dash, label in hlines if label]
    if vline is not None:
        items.append(("line", BLUE, vline[1]))
    if items:
        c.legend(items)
    return c.svg()
