"""onnxmod.plots: inline SVG charts, well-formed, deterministic, on a fixed 0-1 colour scale."""
import xml.etree.ElementTree as ET

from onnxmod import plots

SVG = "{http://www.w3.org/2000/svg}"


def test_colour_scale_is_fixed_and_clipped():
    assert plots.colour(0.0) == plots.VIRIDIS[0] and plots.colour(1.0) == plots.VIRIDIS[-1]
    assert plots.colour(-3) == plots.colour(0.0) and plots.colour(7) == plots.colour(1.0)
    assert plots.colour(0.5) == plots.VIRIDIS[4]
    assert plots.colour(0.95) != plots.colour(0.0)  # "almost everything kept" is never the darkest colour
    assert plots.colour(float("nan")) == plots.colour(0.0)


def test_nice_ticks_cover_the_range_in_round_steps():
    assert plots.nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    t = plots.nice_ticks(-1.57, 0.73)
    assert t[0] <= -1.57 and t[-1] >= 0.73 and 0.0 in t
    assert plots.nice_ticks(3, 3)[0] <= 3 <= plots.nice_ticks(3, 3)[-1]


def test_heatmap_merges_runs_and_escapes_names():
    rows = ["a<b", 'c"d']
    values = [[0.0] * 50 + [1.0] * 50, [0.5] * 100]
    svg = plots.heatmap(rows, values, "t & u", "share", column_label="unit", scale=plots.REDS)
    root = ET.fromstring(svg)
    assert root.find(f"{SVG}title").text == "t & u"
    fills = [r.get("fill") for r in root.iter(f"{SVG}rect")]
    assert fills.count(plots.colour(1.0, plots.REDS)) >= 1
    cells = [r for r in root.iter(f"{SVG}rect") if r.get("height") == "18"]
    assert len(cells) == 3  # 100 + 100 cells drawn as three runs
    assert "a&lt;b" in svg and "c&quot;d" in svg
    assert svg == plots.heatmap(rows, values, "t & u", "share", column_label="unit", scale=plots.REDS)


def test_bars_and_trails_are_well_formed():
    for svg in (plots.bars(["x", "y", "z"], [-1.2, None, 0.4], "δ", "points", signed=True,
                           reference=(-1.0, "bound -1"), marked={"x"}),
                plots.grouped_bars(["fr", "de"], [("model", "#000000", [30.0, 28.0]),
                                                  ("composed", "#ffffff", [29.0, 28.5])], "BLEU", "BLEU"),
                plots.trail([(0.05, 97.0, "no"), (0.025, 97.4, "ok"), (0.0, 97.5, "ok")], "guard", "cap", "acc",
                            hlines=[(97.5, plots.BLUE, "5 3", "model")], connect=True),
                plots.trail([], "empty", "x", "y")):
        root = ET.fromstring(svg)
        assert root.get("role") == "img" and float(root.get("width")) >= 320
